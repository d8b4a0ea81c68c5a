"""Packet loss on real sockets: a proxy drops a pseudo-random 10% of data packets
(fixed seed) on one leg while 1,000 notes with pedal changes are played; the
receiver must end with nothing held. Without journals the same run leaves notes
stuck, which shows the journal is what repairs."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from midihub.hub.notes import NoteState
from midihub.rtp import Timing
from tests.proxy import PathRules, is_rtp
from tests.support import RunningHub, free_ports, make_config, wait_for

pytestmark = pytest.mark.timeout(90)


def drop_ten_percent(seed: int) -> Callable[[bytes, int], bool]:
    rng = random.Random(seed)
    return lambda data, index: is_rtp(data) and rng.random() < 0.1


def performance(seed: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    held: list[tuple[int, int]] = []
    out: list[list[bytes]] = []
    for i in range(1000):
        channel, note = rng.randrange(2), rng.randrange(36, 96)
        packet = [bytes((0x90 | channel, note, rng.randrange(1, 128)))]
        held.append((channel, note))
        if len(held) > 5 or rng.random() < 0.5:
            ch, n = held.pop(rng.randrange(len(held)))
            packet.append(bytes((0x80 | ch, n, 0)))
        if i % 15 == 0:
            packet.append(bytes((0xB0 | channel, 64, 0 if i % 30 else 127)))
        out.append(packet)
    out.append(
        [bytes((0x80 | ch, n, 0)) for ch, n in held] + [bytes((0xB0, 64, 0)), bytes((0xB1, 64, 0))]
    )
    return out


async def play(leg: str, journal: bool, seed: int = 11) -> tuple[NoteState, int, int]:
    """Returns the receiver's final state, packets dropped, and messages it received."""
    port_in, port_out = free_ports(2)
    config = make_config(f"[groups]\nG = [{port_in}, {port_out}]", journal=journal)
    with RunningHub(config):
        drop = drop_ten_percent(seed)
        sender = make_peer("sender", timing=Timing(journal=journal))
        receiver = make_peer("receiver")
        if leg == "sender":
            proxy = await start_proxy(port_in, PathRules(drop=drop), PathRules())
            sender_port, receiver_port = proxy.port, port_out
        else:
            proxy = await start_proxy(port_out, PathRules(), PathRules(drop=drop))
            sender_port, receiver_port = port_in, proxy.port
        try:
            await sender.connect(sender_port)
            await receiver.connect(receiver_port)
            rules = proxy.to_target if leg == "sender" else proxy.to_peer
            packets = performance(seed)
            for i, packet in enumerate(packets, 1):
                sender.send(*packet)
                if i % 20 == 0 or i == len(packets):  # paced by what got through, not by time
                    await wait_for(lambda n=i: rules.rtp_seen >= n, 10, f"{i} packets through")
            if journal:  # guard packets repair a lost last packet: wait for them to land
                await wait_for(lambda: receiver.state.held() == {}, 10, "the receiver to settle")
            return receiver.state, rules.dropped, len(receiver.received)
        finally:
            sender.close()
            receiver.close()
            proxy.close()


@pytest.mark.parametrize("leg", ["sender", "receiver"])
async def test_ten_percent_loss_leaves_nothing_stuck(leg: str) -> None:
    state, dropped, received = await play(leg, journal=True)
    assert 60 <= dropped <= 140  # about 10% of 1,001 packets really went missing
    assert state.held() == {}, state.held()
    assert received > 1500


@pytest.mark.parametrize("leg", ["sender", "receiver"])
async def test_without_journals_the_same_loss_leaves_stuck_notes(leg: str) -> None:
    state, dropped, _ = await play(leg, journal=False)
    assert dropped > 60
    assert state.held() != {}
