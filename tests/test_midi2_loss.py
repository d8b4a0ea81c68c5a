"""Network MIDI 2.0 under loss, in memory: the host and the independent test client
lose 10 % of their datagrams each way (seeded), and every UMP message still arrives
exactly once, in order (FEC first, Retransmit Request for what FEC missed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from midihub.midi2 import (
    Count,
    Departed,
    Invited,
    Midi2Host,
    Midi2Settings,
    SessionReset,
    UmpReceived,
)
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


def lose_once(direction: str, code: int) -> Callable[[str, bytes], bool]:
    """A drop rule: the next datagram ``direction`` led by command ``code`` is lost."""
    lost = {"done": False}

    def drop(way: str, data: bytes) -> bool:
        if lost["done"] or way != direction or data[4] != code:
            return False
        lost["done"] = True
        return True

    return drop


def test_a_burst_past_the_send_history_ends_in_retransmit_error_and_a_reset() -> None:
    """More than ``history`` (256) messages at once, the first of their datagrams lost:
    the gap is gone from the host's history by the time the client asks, so the host
    answers Retransmit Error (no data); the client gives the gap up (Session Reset, as
    amidi2net does), keeps what came after it, and both number from 0 again. No request
    is repeated, and what follows arrives exactly once."""
    link, _ = joined_link(0.0, "midi2-burst")
    first = (0x20903C64,)
    link.host.send(ADDR, [first], link.now)
    link.run_until(link.now + 0.05)
    link.drop = lose_once("down", 0xFF)
    burst = [(0x20900000 | n,) for n in range(400)]  # sequence numbers 1..400
    link.host.send(ADDR, burst, link.now)
    link.run_until(link.now + 1.0)
    client, host = link.client, link.host
    assert ("retransmit-error", 1, 0x01) in client.log  # seq 1: no data
    assert host.counters[Count.RETRANSMIT_FAILED] == 1 and host.counters[Count.RESETS] == 1
    assert link.of(SessionReset) == [SessionReset(ADDR, 0)]
    assert client.requests_sent == 1 and client.gaps_given_up == 1
    # The lost datagram held 1..174 (1400 octets); the next one's FEC repeats 172..174
    assert client.received == [first, *burst[171:]] and client.lost == 171  # 1..171 lost
    after = [(0x20803C00 | n,) for n in range(3)]
    host.send(ADDR, after, link.now)
    link.run_until(link.now + 5.0)
    assert client.received[-3:] == after and client.received.count(after[0]) == 1
    assert client.requests_sent == 1 and host.counters[Count.RETRANSMIT_FAILED] == 1
    assert link.of(Departed) == []


def test_more_than_the_history_in_one_send_all_goes_out() -> None:
    """One ``send`` of more messages than the history holds (a long SysEx from the room
    is hundreds of UMPs): each goes out once, numbered in order (the host used to look
    for the first of them in a history that no longer had it, and sent nothing)."""
    link, _ = joined_link(0.0, "midi2-big-send")
    burst = [(0x20900000 | n,) for n in range(700)]
    link.host.send(ADDR, burst, link.now)
    link.run_until(link.now + 1.0)
    assert link.client.received == burst and link.client.requests_sent == 0


def test_a_client_whose_requests_go_unanswered_gives_up_then_says_bye() -> None:
    """The host hears nothing more from the client after a gap opened: the client asks
    ``retransmit_tries`` times, resets as many times, then says Bye 0x03 and stops."""
    link, _ = joined_link(0.0, "midi2-deaf-host", fec=0)
    link.host.send(ADDR, [(0x20903C00,)], link.now)
    link.run_until(link.now + 0.05)
    gap = lose_once("down", 0xFF)
    link.drop = lambda way, data: way == "up" or gap(way, data)
    link.host.send(ADDR, [(0x20903C01,)], link.now)
    link.run_until(link.now + 0.01)
    link.host.send(ADDR, [(0x20903C02,)], link.now)  # no FEC: 1 is missing
    link.run_until(link.now + 2.0)
    client = link.client
    tries = client.retransmit_tries
    assert client.requests_sent == tries and client.gaps_given_up == 1
    resets = [d for d in link.up if d[4] == 0x82]
    assert len(resets) == tries and link.up[-1] == bytes.fromhex("4d494449 f0000300")
    assert client.state == "closed" and client.deadline() is None
