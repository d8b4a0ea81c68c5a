"""An in-memory network for sans-IO tests: a ``Hub`` and RTP MIDI peers (``SessionTable``s in
the initiator role) exchange datagrams through a simulated clock, and a rule per
datagram decides whether it is dropped, duplicated or delayed (reordered).

Nothing here sleeps: ``run_until`` jumps from event to event (deliveries, the hub's
next deadline, each peer's next timer), so seconds of protocol time cost
milliseconds. Every datagram the hub sends is kept in ``hub_sent`` (for size checks
and pcap files).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from midihub.hub import Hub
from midihub.midi.held import NoteState
from midihub.rtp import (
    Address,
    MidiReceived,
    PortKind,
    Session,
    SessionSettings,
    SessionTable,
    encode_sections,
)
from midihub.rtp.recovery import MAX_LIST_LENGTH
from tests.seeds import seeded

HUB_HOST = "10.0.0.1"
GROUP_AND_ROOM = """
[groups]
G = [5040, 5042]
[rooms]
Jam = 5060
"""
"""A hub with one group and one room, for tests and bench/core.py."""
LATENCY = 0.005  # one way, every datagram


@dataclass(frozen=True, slots=True)
class Wire:
    """One datagram on the wire."""

    src: Address
    dst: Address
    data: bytes
    from_hub: bool

    @property
    def is_rtp(self) -> bool:
        return not self.data.startswith(b"\xff\xff")


Rule = Callable[[Wire, int, int], list[float]]
"""``rule(wire, position, count)``: extra delays, one per copy delivered ([] drops,
[0.0] passes, [0, 0] duplicates). ``position`` of ``count``: where the datagram sits
among the RTP datagrams one flush sent to the same place (a multi-packet forward)."""


def lossless(wire: Wire, position: int, count: int) -> list[float]:
    return [0.0]


@dataclass
class MemPeer:
    """A participant: a sans-IO ``SessionTable`` and the synth state it plays (journal
    repairs applied, as a receiver that reads journals would)."""

    name: str
    addr: tuple[str, int]  # control port; data is +1
    table: SessionTable
    session: Session | None = None
    synth: NoteState = field(default_factory=NoteState)
    alive: bool = True
    received: int = 0
    heard: list[bytes] = field(default_factory=list)  # every message, repairs included
    quiet: set[tuple[int, int]] = field(default_factory=set)  # Y = 0 logs seen

    def deliver(self, data: bytes, kind: PortKind, src: Address, now: float) -> None:
        for event in self.table.receive(data, kind, src, now):
            if isinstance(event, MidiReceived):  # repaired by the session after a loss
                if event.journal is not None:
                    journal = event.journal
                    self.quiet.update((c.channel, n) for c in journal.channels for n, _ in c.quiet)
                self.synth.update(event.commands)
                self.received += len(event.commands)
                self.heard += [message for _, message in event.commands]


class MemNet:
    def __init__(
        self, hub: Hub, rule: Rule = lossless, *, seed: int = 0, latency: float = LATENCY
    ) -> None:
        self.hub = hub
        self.rule = rule
        self.latency = latency
        self.now = 0.0
        self.peers: dict[str, MemPeer] = {}
        self.hub_sent: list[Wire] = []
        self._queue: list[tuple[float, int, Wire]] = []
        self._order = itertools.count()
        self._seed = seed

    # -- peers -----------------------------------------------------------------

    def add_peer(self, name: str, hub_port: int, *, journal: bool = True) -> MemPeer:
        number = len(self.peers) + 2
        rng = seeded(f"{self._seed}-{name}", "MemNet peer")
        peer = MemPeer(
            name,
            (f"10.0.1.{number}", 5004),
            SessionTable(name, rng=rng, settings=SessionSettings(journal=journal)),
        )
        self.peers[name] = peer
        peer.session = peer.table.connect((HUB_HOST, hub_port), self.now)
        self._flush_peer(peer)
        return peer

    def send(self, peer: MemPeer, messages: list[bytes]) -> None:
        """The peer plays ``messages`` now (one or more packets)."""
        assert peer.session is not None and peer.alive
        commands = [(0, m) for m in messages]
        peer.table.send([peer.session], encode_sections(commands, MAX_LIST_LENGTH), self.now)
        self._flush_peer(peer)

    def leave(self, peer: MemPeer) -> None:
        peer.table.close()
        self._flush_peer(peer)
        peer.alive = False

    def die(self, peer: MemPeer) -> None:
        """Gone without a word: nothing more in or out."""
        peer.alive = False

    # -- time ------------------------------------------------------------------

    def run_until(self, until: float) -> None:
        spins = 0
        while True:
            candidates = []
            if self._queue:
                candidates.append(self._queue[0][0])
            deadline = self.hub.next_deadline()
            if deadline is not None:
                candidates.append(deadline)
            for peer in self.peers.values():
                timer = peer.table.next_deadline() if peer.alive else None
                if timer is not None:
                    candidates.append(timer)
            step = min(candidates, default=until)
            if step > until:
                self.now = max(self.now, until)
                return
            spins = spins + 1 if step <= self.now else 0
            assert spins < 1000, "a timer that never moves on"
            self.now = max(self.now, step)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, wire = heapq.heappop(self._queue)
                self._deliver(wire)
            self._timers()
            if step == until and not candidates:
                return

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def _timers(self) -> None:
        deadline = self.hub.next_deadline()
        if deadline is not None and deadline <= self.now:
            self.hub.tick(self.now)
        self.flush_hub()
        for peer in self.peers.values():
            if peer.alive:
                timer = peer.table.next_deadline()
                if timer is not None and timer <= self.now:
                    peer.table.tick(self.now)
                self._flush_peer(peer)

    # -- wires -----------------------------------------------------------------

    def _deliver(self, wire: Wire) -> None:
        host, port = wire.dst[0], wire.dst[1]
        if host == HUB_HOST:
            kind = PortKind.CONTROL if port % 2 == 0 else PortKind.DATA
            self.hub.receive(port & ~1, kind, wire.data, wire.src, self.now)
            self.flush_hub()
            return
        for peer in self.peers.values():
            if peer.addr[0] == host and peer.alive:
                kind = PortKind.CONTROL if port == peer.addr[1] else PortKind.DATA
                peer.deliver(wire.data, kind, wire.src, self.now)
                self._flush_peer(peer)

    def _put(self, wires: list[Wire]) -> None:
        counts: dict[Address, int] = {}
        for wire in wires:
            if wire.is_rtp:
                counts[wire.dst] = counts.get(wire.dst, 0) + 1
        positions: dict[Address, int] = {}
        for wire in wires:
            position = positions.get(wire.dst, 0)
            if wire.is_rtp:
                positions[wire.dst] = position + 1
            for extra in self.rule(wire, position, counts.get(wire.dst, 1)):
                heapq.heappush(
                    self._queue, (self.now + self.latency + extra, next(self._order), wire)
                )

    def flush_hub(self) -> None:
        """Put everything the hub has to send on the wire (after calling into it)."""
        wires = [
            Wire((HUB_HOST, out.endpoint.port + out.kind), out.addr, out.data, True)
            for out in self.hub.drain()
        ]
        self.hub_sent += wires
        self._put(wires)

    def _flush_peer(self, peer: MemPeer) -> None:
        wires = [
            Wire((peer.addr[0], peer.addr[1] + kind), addr, data, False)
            for kind, data, addr in peer.table.datagrams_to_send()
        ]
        if peer.alive:
            self._put(wires)
