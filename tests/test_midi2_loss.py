"""Network MIDI 2.0 under loss, in memory: the host and the independent test client
lose 10 % of their datagrams each way (seeded), and every UMP message still arrives
exactly once, in order (FEC first, Retransmit Request for what FEC missed)."""

from __future__ import annotations

import pytest

from midihub.midi2 import Count, Departed, Invited, Midi2Host, Midi2Settings, UmpReceived
from tests.midi2_client import MemLink, Midi2Client
from tests.seeds import seeded

ADDR = ("192.0.2.10", 40000)


def joined_link(loss: float, seed: str, fec: int = 3) -> tuple[MemLink, dict[str, int]]:
    """A client joined without loss, then ``loss`` each way: (link, datagrams dropped
    each way)."""
    rng = seeded(seed, "loss")
    lossy = {"on": False}
    dropped = {"up": 0, "down": 0}

    def drop(direction: str, data: bytes) -> bool:
        lost = lossy["on"] and rng.random() < loss
        dropped[direction] += lost
        return lost

    host = Midi2Host(
        Midi2Settings(name="hub Jam", product_id="mh-1", fec=fec),
        seeded(seed, "host"),
        0.0,
    )
    client = Midi2Client(rng=seeded(seed, "client"), fec=fec)
    link = MemLink(host, client, ADDR, drop=drop)
    client.invite()
    link.run_until(0.05)
    host.accept(ADDR, link.now)
    link.run_until(0.1)
    assert client.state == "established"
    session = host.session(ADDR)
    assert session is not None and session.proven
    lossy["on"] = True
    return link, dropped


def play(
    link: MemLink, count: int, step: float = 0.01
) -> tuple[list[tuple[int]], list[tuple[int]]]:
    """``count`` messages each way, interleaved; then a quiet second for the tails
    (the host's keep-alives; the client pings, as real clients do)."""
    up = [(0x20900000 | (n % 0x8000),) for n in range(count)]
    down = [(0x20800000 | (n % 0x8000),) for n in range(count)]
    for n in range(count):
        link.client.send([up[n]])
        link.host.send(ADDR, [down[n]], link.now)
        link.run_until(link.now + step)
    for _ in range(10):  # the client's own tail: empty UMP Data carrying its FEC copies
        link.client.keepalive()
        link.run_until(link.now + 0.1)
    return up, down


def received_by_host(link: MemLink) -> list[tuple[int, ...]]:
    return [m for e in link.of(UmpReceived) for m in e.messages]


@pytest.mark.parametrize("seed", ["midi2-loss-1", "midi2-loss-2", "midi2-loss-3"])
def test_ten_percent_loss_both_ways_every_message_once_in_order(seed: str) -> None:
    link, dropped = joined_link(0.10, seed)
    up, down = play(link, 1500)
    assert received_by_host(link) == up
    assert link.client.received == down
    assert link.of(Departed) == []
    assert 0.07 * len(link.up) < dropped["up"] < 0.13 * len(link.up)  # the loss was real
    assert 0.07 * len(link.down) < dropped["down"] < 0.13 * len(link.down)
    assert link.host.counters[Count.GAPS_UNRECOVERED] == 0


def test_without_fec_retransmission_alone_repairs_the_loss() -> None:
    link, _ = joined_link(0.10, "midi2-loss-nofec", fec=0)
    up, down = play(link, 400)
    assert received_by_host(link) == up
    assert link.client.received == down
    assert link.host.counters[Count.RETRANSMIT_ASKED] > 0
    assert link.host.counters[Count.RETRANSMIT_ANSWERED] > 0
    assert link.client.requests_sent > 0


def test_sequence_numbers_wrap_under_loss() -> None:
    link, _ = joined_link(0.10, "midi2-loss-wrap")
    link.client._next = 0xFFF0  # the client starts near the end of the range
    up, _down = play(link, 100)
    assert received_by_host(link) == up


def test_a_client_that_vanishes_departs_by_timeout() -> None:
    link, _ = joined_link(0.0, "midi2-loss-vanish")
    link.drop = lambda direction, data: direction == "up"  # nothing more reaches the host
    link.client.send([(0x20903C64,)])
    link.run_until(link.now + 40.0)
    assert link.of(Departed) == [Departed(ADDR, 0x04, by_client=False)]
    assert link.host.session(ADDR) is None


@pytest.mark.parametrize(
    ("settings", "client"),
    [
        ({}, {}),
        ({"secret": "k"}, {"secret": "k"}),
        ({"users": {"u": "p"}}, {"user": "u", "password": "p"}),
    ],
)
def test_the_handshake_survives_loss_by_repeating_the_invitation(
    settings: dict[str, object], client: dict[str, object]
) -> None:
    """30 % loss both ways from the first datagram: the client repeats its Invitation
    until it is let in, whatever was lost (invitation, challenge, digest, reply)."""
    for run in range(20):
        rng = seeded(f"midi2-handshake-{run}", "loss")
        host = Midi2Host(
            Midi2Settings(name="hub Jam", product_id="mh-1", **settings),  # type: ignore[arg-type]
            seeded(f"midi2-handshake-{run}", "host"),
            0.0,
        )
        peer = Midi2Client(rng=seeded(f"midi2-handshake-{run}", "client"), **client)  # type: ignore[arg-type]
        link = MemLink(host, peer, ADDR, drop=lambda d, data, rng=rng: rng.random() < 0.3)
        peer.invite(0.0)
        accepted = False
        while peer.state != "established":
            assert link.now < 30.0, f"run {run}: not in after {peer.invitations} invitations"
            link.run_until(link.now + 0.1)
            for event in link.events:
                if isinstance(event, Invited) and not accepted:
                    host.accept(ADDR, link.now)
                    accepted = True
        assert len(link.of(Invited)) == 1
