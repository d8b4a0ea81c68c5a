"""Port lock-out at Internet round trips: a spoofed flood of complete handshakes
(control and data IN, from many addresses) against a player 25 ms away. On loopback
any eviction rule lets the player in; over a real path, evicting by age or by
progress always picked the player (its next step is a round trip away, the flood's
is free). Sans-IO hosts and a simulated clock, so the timing is exact and repeatable."""

from __future__ import annotations

import itertools

import pytest

from midihub.rtp import PortKind, SessionTable
from midihub.rtp import packets as p
from tests.memnet import MemNet, TableNode, Wire
from tests.seeds import seeded

HUB = ("10.0.0.1", 5004)
PLAYER = ("192.0.2.7", 6000)


def time_to_join(flood_per_second: float, one_way: float, seed: int) -> float | None:
    """Seconds from the player's first IN to the hub counting it in (None: never, in 8 s)."""
    net = MemNet(latency=one_way)  # the flood's senders are not on it: replies are lost
    hub = SessionTable("hub", rng=seeded(seed, "lockout hub"))
    player = SessionTable("player", rng=seeded(seed + 1, "lockout player"), accept=False)
    net.attach(TableNode(hub, HUB))
    net.attach(TableNode(player, PLAYER))
    spoofed = itertools.count()
    at = 0.0
    while at < 8.0:  # both halves of a handshake, each from another address
        i = next(spoofed)
        ip = f"198.51.{i // 250 % 250}.{i % 250 + 1}"
        invite = p.encode_invitation(p.Invitation(p.INVITATION, i, 0x10000 + i, None))
        net.inject(Wire((ip, 7000), HUB, PortKind.CONTROL, invite), at)
        net.inject(Wire((ip, 7001), (HUB[0], HUB[1] + 1), PortKind.DATA, invite), at + 1e-4)
        at += 1 / flood_per_second
    start = 1.0
    net.run_until(start)
    player.connect(HUB, start)

    def joined() -> float | None:
        player_in = [s.joined_at for s in hub.established if s.control_addr == PLAYER]
        return player_in[0] if player_in else None

    # Until it is in, or has given up (then it never will: it does not try again).
    net.run_until(start + 8.0, stop=lambda: joined() is not None or not player.sessions)
    when = joined()
    return None if when is None else when - start


@pytest.mark.parametrize(("flood", "share"), [(30, 1.0), (100, 1.0), (300, 0.5)])
def test_a_player_25_ms_away_joins_through_a_spoofed_handshake_flood(
    flood: int, share: float
) -> None:
    """At 30 and 100 spoofed handshakes a second (the issue measured 64 every few
    seconds), the player joins on its first try in every seeded run; at 300 a second,
    in at least half (it is then one table slot among many, at random)."""
    times = {seed: time_to_join(flood, 0.025, seed) for seed in range(20)}
    joined = [seed for seed, t in times.items() if t is not None and t < 1.0]
    assert len(joined) >= share * len(times), f"joined in 1 s, by seed: {times}"
