"""Packet loss on real sockets: a proxy drops a pseudo-random 10% of data packets
(fixed seed) on one leg while 1,000 notes with pedal changes are played; the
receiver must end with nothing held. Without journals the same run leaves notes
stuck, which shows the journal is what repairs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from midihub.midi.held import NoteState
from midihub.rtp import SessionSettings
from tests.fixtures import MakePeer, StartHub, StartProxy
from tests.performances import random_packets
from tests.proxy import PathRules, is_rtp
from tests.seeds import seeded
from tests.support import free_ports, wait_for

pytestmark = pytest.mark.timeout(90)

Play = Callable[..., Awaitable[tuple[NoteState, int, int]]]


def drop_ten_percent(seed: int) -> Callable[[bytes, int], bool]:
    rng = seeded(seed, "drop")
    return lambda data, index: is_rtp(data) and rng.random() < 0.1


@pytest.fixture
def play(start_hub: StartHub, make_peer: MakePeer, start_proxy: StartProxy) -> Play:
    """``await play(leg, journal)``: the receiver's final state, packets dropped, and
    messages it received."""

    async def run(leg: str, journal: bool, seed: int = 11) -> tuple[NoteState, int, int]:
        port_in, port_out = free_ports(2)
        start_hub(f"[groups]\nG = [{port_in}, {port_out}]", journal=journal)
        drop = drop_ten_percent(seed)
        sender = make_peer("sender", settings=SessionSettings(journal=journal))
        receiver = make_peer("receiver")
        if leg == "sender":
            proxy = await start_proxy(port_in, PathRules(drop=drop), PathRules())
            sender_port, receiver_port = proxy.port, port_out
        else:
            proxy = await start_proxy(port_out, PathRules(), PathRules(drop=drop))
            sender_port, receiver_port = port_in, proxy.port
        await sender.connect(sender_port)
        await receiver.connect(receiver_port)
        rules = proxy.to_target if leg == "sender" else proxy.to_peer
        packets = random_packets(seed)
        for i, packet in enumerate(packets, 1):
            sender.send(*packet)
            if i % 20 == 0 or i == len(packets):  # paced by what got through, not by time
                await wait_for(lambda n=i: rules.rtp_seen >= n, 10, f"{i} packets through")
        if journal:  # guard packets repair a lost last packet: wait for them to land
            await wait_for(
                lambda: receiver.state.channels_held() == {}, 10, "the receiver to settle"
            )
        return receiver.state, rules.dropped, len(receiver.received)

    return run


@pytest.mark.parametrize("leg", ["sender", "receiver"])
async def test_ten_percent_loss_leaves_nothing_stuck(leg: str, play: Play) -> None:
    state, dropped, received = await play(leg, journal=True)
    assert 60 <= dropped <= 140  # about 10% of 1,001 packets really went missing
    assert state.channels_held() == {}, state.channels_held()
    assert received > 1500


@pytest.mark.parametrize("leg", ["sender", "receiver"])
async def test_without_journals_the_same_loss_leaves_stuck_notes(leg: str, play: Play) -> None:
    state, dropped, _ = await play(leg, journal=False)
    assert dropped > 60
    assert state.channels_held() != {}
