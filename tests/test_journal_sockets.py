"""The journal on real sockets: guard packets leave on time (the server's timer is
re-armed for the hub's next deadline after every flush; how close to their due time:
``bench/guard_timing.py``), and an npm ``rtpmidi``
player's performance reaches a journal-reading receiver behind a lossy proxy with
nothing left on — the panic's first packet dropped too. Every datagram the hub
sent in that run is then read by tshark."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from midihub.hub import Hub
from midihub.midi.messages import PITCH_BEND_CENTRE, note_on
from midihub.midi.notes import NoteRange
from midihub.net.server import MIN_SLEEP
from midihub.rtp import Address, PortKind
from midihub.rtp.packets import FEEDBACK
from tests import tshark
from tests.fixtures import MakePeer, NpmPeers, StartHub, StartProxy
from tests.performances import random_packets
from tests.proxy import PathRules, is_rtp
from tests.seeds import seeded
from tests.support import LOCALHOST, PyPeer, free_ports, wait_for

pytestmark = pytest.mark.timeout(120)


@dataclass
class TimedPeer(PyPeer):
    """A PyPeer that notes when each RTP datagram arrived. With ``send_rs`` False it
    never acknowledges (guard packets stop once RS acknowledges everything, so then
    every note is followed by its whole series of guards)."""

    arrivals: list[tuple[float, bytes]] = field(default_factory=list)
    send_rs: bool = True

    def _receive(self, kind: PortKind, batch: list[tuple[bytes, Address]]) -> None:
        now = self._loop.time()
        self.arrivals += [(now, data) for data, _ in batch if is_rtp(data)]
        super()._receive(kind, batch)

    def flush(self) -> None:
        if self.send_rs:
            super().flush()
            return
        for kind, data, addr in self.table.datagrams_to_send():
            if data[2:4] != FEEDBACK:
                self.pair.sendto(kind, data, addr)


def is_guard(data: bytes) -> bool:
    return data[12] == 0x40  # an empty command list with J = 1


async def test_the_server_sleeps_no_longer_than_the_hubs_next_deadline(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    """Guard packets leave on time because the server's one timer is re-armed for the
    hub's next deadline after every flush (left at the 1 s safety net, guards would
    leave late or bunched). Checked as that invariant whenever the receiver gets a
    packet, and by the guards arriving in their order; how close to their due time
    they leave is a timing figure, measured by ``bench/guard_timing.py``."""
    port_in, port_out = free_ports(2)
    running = start_hub(f"[groups]\nG = [{port_in}, {port_out}]")
    sender, receiver = make_peer("sender"), make_peer("receiver", cls=TimedPeer, send_rs=False)
    await sender.connect(port_in)
    await receiver.connect(port_out)
    loop = asyncio.get_running_loop()
    server, hub = running.server, running.hub

    def wakes_in_time() -> None:
        deadline = hub.next_deadline()
        assert deadline is not None, "guards are due"
        wakes = server._ticker_at  # the one timer's due time
        assert wakes <= max(deadline, loop.time()) + MIN_SLEEP, (wakes, deadline)

    for key in (60, 61, 62):
        receiver.arrivals.clear()
        sender.send(note_on(0, key, 100))
        for guards in (0, 1, 2, 3):
            await wait_for(
                lambda g=guards: len(receiver.arrivals) > g, 5, f"the note and {guards} guards"
            )
            wakes_in_time()
        kinds = [is_guard(data) for _, data in receiver.arrivals[:4]]
        assert kinds == [False, True, True, True]  # the note, then its guards


async def test_npm_player_to_a_journal_reader_behind_loss_ends_with_nothing_on(
    tmp_path: Path,
    start_hub: StartHub,
    make_peer: MakePeer,
    npm_peers: NpmPeers,
    start_proxy: StartProxy,
) -> None:
    port_in, port_out = free_ports(2)
    running = start_hub(f"[groups]\nG = [{port_in}, {port_out}]")
    sent = spy_on(running.hub)
    rng = seeded(5, "drop")
    drop_next = [False]

    def drop(data: bytes, index: int) -> bool:
        if not is_rtp(data):
            return False
        if drop_next[0] and not is_guard(data):
            drop_next[0] = False
            return True
        return rng.random() < 0.1

    def rtp_to_proxy() -> int:
        return sum(1 for _, to, data in sent if to == (LOCALHOST, proxy.port + 1) and is_rtp(data))

    (player,) = await npm_peers("npm player")
    receiver = make_peer("reader", cls=TimedPeer)
    proxy = await start_proxy(port_out, PathRules(), PathRules(drop=drop))
    await player.connect(port_in)
    await receiver.connect(proxy.port)
    await wait_for(lambda: len(running.participants(port_in)) == 1, 10, "the player")
    # Notes still held and pedals down at the end: the panic ends them.
    played = random_packets(3, max_held=6, pedal_every=13, bend_every=29, release_all=False)
    for i, packet in enumerate(played):
        player.send(*packet)
        if i % 10 == 0:
            await asyncio.sleep(0.005)
    total = sum(map(len, played))
    await wait_for(lambda: running.hub.messages_forwarded >= total, 20, "the performance")
    # Once the proxy has seen all the hub sent it, the next packet that is not a
    # guard is the panic's first: lost.
    await wait_for(lambda: proxy.to_peer.rtp_seen == rtp_to_proxy(), 10, "the proxy")
    drop_next[0] = True
    running.hub.panic(port_out, NoteRange.ALL, asyncio.get_running_loop().time())
    running.server.flush()
    await wait_for(lambda: receiver.state.channels_held() == {}, 10, "nothing held")
    # Then the hub's guard packets end (the reader's RS acknowledges everything) and
    # every one that got through is read: still nothing on.
    (session,) = running.participants(port_out)
    journal = session.journal
    assert journal is not None

    def settled() -> bool:
        through = proxy.to_peer.rtp_seen - proxy.to_peer.dropped
        return (
            journal.acknowledged
            and proxy.to_peer.rtp_seen == rtp_to_proxy()
            and len(receiver.arrivals) == through
        )

    await wait_for(settled, 20, "the guard packets to end")
    assert receiver.state.channels_held() == {}
    for channel in (0, 1):
        state = receiver.state.channels[channel]
        assert not state.notes and not state.sustain and not state.sostenuto
        assert state.bend == PITCH_BEND_CENTRE
    assert proxy.to_peer.dropped >= 10 and not drop_next[0]  # the panic's first too
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
