"""The journal on real sockets: guard packets leave on time (the server's timer is
re-armed for the hub's next deadline after every flush), and an npm ``rtpmidi``
player's performance reaches a journal-reading receiver behind a lossy proxy with
nothing left on — the panic's first packet dropped too. Every datagram the hub
sent in that run is then read by tshark."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from midihub.hub import Hub
from midihub.midi.messages import PITCH_BEND_CENTRE, control_change, note_off, note_on, pitch_bend
from midihub.midi.notes import NoteRange
from midihub.rtp import Address, PortKind
from midihub.rtp.session import GUARD_FIRST
from tests import tshark
from tests.fixtures import MakePeer, StartHub
from tests.interop.npm_peer import NpmPeer
from tests.proxy import PathRules, is_rtp
from tests.support import LOCALHOST, PyPeer, free_ports, wait_for

pytestmark = pytest.mark.timeout(120)


@dataclass
class TimedPeer(PyPeer):
    """A PyPeer that notes when each RTP datagram arrived."""

    arrivals: list[tuple[float, bytes]] = field(default_factory=list)

    def _receive(self, kind: PortKind, batch: list[tuple[bytes, Address]]) -> None:
        now = self._loop.time()
        self.arrivals += [(now, data) for data, _ in batch if is_rtp(data)]
        super()._receive(kind, batch)


def is_guard(data: bytes) -> bool:
    return data[12] == 0x40  # an empty command list with J = 1


async def test_guard_packets_leave_within_10_ms_of_their_due_time(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    port_in, port_out = free_ports(2)
    start_hub(f"[groups]\nG = [{port_in}, {port_out}]")
    sender, receiver = make_peer("sender"), TimedPeer("receiver")
    try:
        await sender.connect(port_in)
        await receiver.connect(port_out)
        await asyncio.sleep(0.3)
        sender.send(note_on(0, 60, 100))
        await wait_for(lambda: sum(map(is_guard, (d for _, d in receiver.arrivals))) >= 3, 5)
        forwarded = next(t for t, d in receiver.arrivals if not is_guard(d))
        guards = [t for t, d in receiver.arrivals if is_guard(d)][:3]
        # Due 50 ms after the burst, then 100 and 200 ms after each other.
        due = [forwarded + GUARD_FIRST * (2 ** (k + 1) - 1) for k in range(3)]
        errors = [round((g - d) * 1000, 1) for g, d in zip(guards, due, strict=True)]
        assert all(abs(e) <= 10 for e in errors), f"guard timing errors (ms): {errors}"
    finally:
        sender.close()
        receiver.close()


def performance(seed: int) -> list[list[bytes]]:
    """1,000 notes on two channels with sustain and sostenuto changes and bends."""
    rng = random.Random(seed)
    held: list[tuple[int, int]] = []
    out: list[list[bytes]] = []
    for i in range(1000):
        channel, key = rng.randrange(2), rng.randrange(36, 96)
        packet = [note_on(channel, key, rng.randrange(1, 128))]
        held.append((channel, key))
        if len(held) > 6 or rng.random() < 0.5:
            packet.append(note_off(*held.pop(rng.randrange(len(held)))))
        if i % 13 == 0:
            packet.append(control_change(channel, 64 if i % 2 else 66, 127 if i % 26 else 0))
        if i % 29 == 0:
            packet.append(pitch_bend(channel, rng.randrange(16384)))
        out.append(packet)
    out.append([pitch_bend(0, PITCH_BEND_CENTRE), pitch_bend(1, PITCH_BEND_CENTRE)])
    return out  # notes still held and pedals down: the panic ends them


async def test_npm_player_to_a_journal_reader_behind_loss_ends_with_nothing_on(
    tmp_path: Path,
) -> None:
    port_in, port_out = free_ports(2)
    running = start_hub(f"[groups]\nG = [{port_in}, {port_out}]")
    sent = spy_on(running.hub)
    rng = random.Random(5)
    drop_next = [False]

    def drop(data: bytes, index: int) -> bool:
        if not is_rtp(data):
            return False
        if drop_next[0]:
            drop_next[0] = False
            return True
        return rng.random() < 0.1

    player = await NpmPeer.start("npm player")
    receiver = make_peer("reader")
    proxy = await start_proxy(port_out, PathRules(), PathRules(drop=drop))
    try:
        await player.connect(port_in)
        await receiver.connect(proxy.port)
        await wait_for(lambda: len(running.participants(port_in)) == 1, 10, "the player")
        played = performance(3)
        for i, packet in enumerate(played):
            player.send(*packet)
            if i % 10 == 0:
                await asyncio.sleep(0.005)
        total = sum(map(len, played))
        await wait_for(lambda: running.hub.messages_forwarded >= total, 20, "the performance")
        await asyncio.sleep(0.2)
        drop_next[0] = True  # the panic's first packet is lost
        running.hub.panic(port_out, NoteRange.ALL, asyncio.get_running_loop().time())
        running.server.flush()
        await wait_for(lambda: receiver.state.held() == {}, 10, "nothing held")
        await asyncio.sleep(1.0)  # guards have passed: still nothing on
        assert receiver.state.held() == {}
        for channel in (0, 1):
            state = receiver.state.channels[channel]
            assert not state.notes and not state.sustain and not state.sostenuto
            assert state.bend == PITCH_BEND_CENTRE
        assert proxy.to_peer.dropped >= 10 and not drop_next[0]  # the panic's first too
    finally:
        await player.close()
        receiver.close()
        proxy.close()
    datagrams = [(h, d, data) for h, d, data in sent if d[0] == LOCALHOST]
    counts = tshark.check(datagrams, tmp_path) if tshark.available() else {}
    print(counts)
    assert not tshark.available() or counts["journals"] > 100


def spy_on(hub: Hub) -> list[tuple[tuple[str, int], tuple[str, int], bytes]]:
    """Every datagram ``hub`` hands to its sockets, with its addresses."""
    sent: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []
    drain = hub.drain

    def recording():  # type: ignore[no-untyped-def]
        for out in drain():
            sent.append(((LOCALHOST, out.endpoint.port + out.kind), tuple(out.addr[:2]), out.data))
            yield out

    hub.drain = recording  # type: ignore[method-assign]
    return sent
