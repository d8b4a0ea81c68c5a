"""The one in-memory network for sans-IO tests (session, hub, attack and bench): nodes
exchange datagrams through a simulated clock, and a rule per datagram decides whether
it is dropped, duplicated or delayed (reordered).

A node is one host on the wire (``Node``): a bare ``SessionTable`` on one port pair
(``TableNode``), a ``Hub`` on all of its endpoints' port pairs (``HubNode``), or an
RTP MIDI participant that plays what it hears (``MemPeer``, a table in the initiator
role joined to the hub by ``add_peer``). Each keeps what it sent (``sent``, before the
rule: for size checks and pcap files) and the events its calls returned (``events``).
A datagram to a host with no node, or a dead one, is lost; ``inject`` puts one on the
wire from nowhere (a spoofer).

Nothing here sleeps: ``run_until`` jumps from event to event (deliveries and each
node's next deadline), so seconds of protocol time cost milliseconds.
"""

from __future__ import annotations

import abc
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from midihub.hub import Hub
from midihub.midi.held import NoteState
from midihub.rtp import (
    Address,
    Event,
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
    """One datagram on the wire, from the ``kind`` port of ``src``."""

    src: Address
    dst: Address
    kind: PortKind
    data: bytes
    from_hub: bool = False

    @property
    def is_rtp(self) -> bool:
        return not self.data.startswith(b"\xff\xff")


Rule = Callable[[Wire, int, int], list[float]]
"""``rule(wire, position, count)``: extra delays, one per copy delivered ([] drops,
[0.0] passes, [0, 0] duplicates). ``position`` of ``count``: where the datagram sits
among the RTP datagrams one flush sent to the same place (a multi-packet forward)."""


def lossless(wire: Wire, position: int, count: int) -> list[float]:
    return [0.0]


class Node(abc.ABC):
    """One host on the wire: the sans-IO calls ``MemNet`` makes, with datagrams as
    ``Wire``s (a host may listen on several port pairs: a hub has one per endpoint)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.alive = True  # False: nothing more in or out, no timers
        self.sent: list[Wire] = []  # every datagram it sent, before the rule
        self.events: list[Event] = []  # what its ``receive`` and ``tick`` returned

    @abc.abstractmethod
    def receive(self, wire: Wire, now: float) -> list[Event]:
        """One datagram arrives (``wire.dst`` is one of this host's ports)."""

    @abc.abstractmethod
    def datagrams_to_send(self) -> list[Wire]:
        """What it wants sent, each datagram once."""

    @abc.abstractmethod
    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do (None: nothing)."""

    @abc.abstractmethod
    def tick(self, now: float) -> list[Event]:
        """Timers due at ``now``."""


def arriving_kind(wire: Wire, control_port: int) -> PortKind:
    """The kind of the port ``wire`` arrives on; it must be the kind it left from."""
    kind = PortKind(wire.dst[1] - control_port)
    assert kind is wire.kind, f"a {wire.kind.name} datagram sent to a {kind.name} port"
    return kind


class TableNode(Node):
    """A ``SessionTable`` on one port pair: control ``addr``, data ``addr`` + 1."""

    def __init__(self, table: SessionTable, addr: Address) -> None:
        super().__init__(addr[0])
        self.table = table
        self.addr = addr

    @property
    def name(self) -> str:
        return self.table.name

    def receive(self, wire: Wire, now: float) -> list[Event]:
        return self.table.receive(wire.data, arriving_kind(wire, self.addr[1]), wire.src, now)

    def datagrams_to_send(self) -> list[Wire]:
        host, port = self.addr[0], self.addr[1]
        return [
            Wire((host, port + kind), addr, kind, data)
            for kind, data, addr in self.table.datagrams_to_send()
        ]

    def next_deadline(self) -> float | None:
        return self.table.next_deadline()

    def tick(self, now: float) -> list[Event]:
        return self.table.tick(now)


class HubNode(Node):
    """A ``Hub`` on every port pair of its endpoints (control ports are even). Its events
    go to its listeners, not to ``events``."""

    def __init__(self, hub: Hub, host: str = HUB_HOST) -> None:
        super().__init__(host)
        self.hub = hub

    def receive(self, wire: Wire, now: float) -> list[Event]:
        control = wire.dst[1] & ~1
        self.hub.receive(control, arriving_kind(wire, control), wire.data, wire.src, now)
        return []

    def datagrams_to_send(self) -> list[Wire]:
        return [
            Wire((self.host, out.endpoint.port + out.kind), out.addr, out.kind, out.data, True)
            for out in self.hub.drain()
        ]

    def next_deadline(self) -> float | None:
        return self.hub.next_deadline()

    def tick(self, now: float) -> list[Event]:
        self.hub.tick(now)
        return []


class MemPeer(TableNode):
    """A participant: a ``SessionTable`` and the synth state it plays (journal repairs
    applied, as a receiver that reads journals would)."""

    def __init__(self, table: SessionTable, addr: Address) -> None:
        super().__init__(table, addr)
        self.session: Session | None = None
        self.synth = NoteState()
        self.received = 0
        self.heard: list[bytes] = []  # every message, repairs included
        self.quiet: set[tuple[int, int]] = set()  # Y = 0 logs seen

    def receive(self, wire: Wire, now: float) -> list[Event]:
        events = super().receive(wire, now)
        for event in events:
            if isinstance(event, MidiReceived):  # repaired by the session after a loss
                if event.journal is not None:
                    journal = event.journal
                    self.quiet.update((c.channel, n) for c in journal.channels for n, _ in c.quiet)
                self.synth.update(event.commands)
                self.received += len(event.commands)
                self.heard += [message for _, message in event.commands]
        return events


N = TypeVar("N", bound=Node)


class MemNet:
    """Nodes, the datagrams in flight between them and the clock (from ``start``).
    ``hub``: a ``HubNode`` at ``HUB_HOST`` that ``add_peer`` joins participants to."""

    def __init__(
        self,
        hub: Hub | None = None,
        rule: Rule = lossless,
        *,
        seed: int = 0,
        latency: float = LATENCY,
        start: float = 0.0,
    ) -> None:
        self.rule = rule
        self.latency = latency
        self.now = start
        self.nodes: dict[str, Node] = {}  # by host
        self.peers: dict[str, MemPeer] = {}  # by name: those ``add_peer`` made
        self._hub = None if hub is None else self.attach(HubNode(hub))
        self._queue: list[tuple[float, int, Wire]] = []
        self._order = itertools.count()
        self._seed = seed

    @property
    def hub(self) -> Hub:
        return self._hub_node.hub

    @property
    def hub_sent(self) -> list[Wire]:
        """Every datagram the hub sent."""
        return self._hub_node.sent

    @property
    def _hub_node(self) -> HubNode:
        assert self._hub is not None, "a network without a hub"
        return self._hub

    # -- nodes -----------------------------------------------------------------

    def attach(self, node: N) -> N:
        assert node.host not in self.nodes, f"{node.host} is taken"
        self.nodes[node.host] = node
        return node

    def add_peer(self, name: str, hub_port: int, *, journal: bool = True) -> MemPeer:
        """A participant that invites itself to the hub's ``hub_port``."""
        number = len(self.peers) + 2
        rng = seeded(f"{self._seed}-{name}", "MemNet peer")
        table = SessionTable(name, rng=rng, settings=SessionSettings(journal=journal))
        peer = self.attach(MemPeer(table, (f"10.0.1.{number}", 5004)))
        self.peers[name] = peer
        peer.session = table.connect((HUB_HOST, hub_port), self.now)
        self.flush(peer)
        return peer

    def send(self, peer: MemPeer, messages: list[bytes]) -> None:
        """The peer plays ``messages`` now (one or more packets)."""
        assert peer.session is not None and peer.alive
        commands = [(0, m) for m in messages]
        peer.table.send([peer.session], encode_sections(commands, MAX_LIST_LENGTH), self.now)
        self.flush(peer)

    def leave(self, node: TableNode) -> None:
        """BY to every session, then gone."""
        node.table.close()
        self.flush(node)
        node.alive = False

    def die(self, node: Node) -> None:
        """Gone without a word: nothing more in or out."""
        node.alive = False

    # -- time ------------------------------------------------------------------

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Deliver, and tick each node when due, event to event up to ``until`` (or
        until ``stop()`` holds, checked after each step: the clock stays there). What
        the nodes have to send goes on the wire first. A node's next deadline is asked
        again only after a call into it (only that can move it)."""
        self.flush()
        live = [node for node in self.nodes.values() if node.alive]
        deadlines: dict[Node, float | None] = {}
        spins = 0
        while stop is None or not stop():
            for node in live:
                if node not in deadlines:
                    deadlines[node] = node.next_deadline()
            candidates = [t for t in deadlines.values() if t is not None]
            if self._queue:
                candidates.append(self._queue[0][0])
            if not candidates or min(candidates) > until:
                self.now = max(self.now, until)
                return
            step = min(candidates)
            spins = spins + 1 if step <= self.now else 0
            assert spins < 1000, "a timer that never moves on"
            self.now = max(self.now, step)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, wire = heapq.heappop(self._queue)
                node = self.nodes[wire.dst[0]]
                if node.alive:
                    node.events += node.receive(wire, self.now)
                    self.flush(node)
                    deadlines.pop(node, None)
            self._timers(live, deadlines)

    def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> None:
        self.run_until(self.now + seconds, stop)

    def _timers(self, live: list[Node], deadlines: dict[Node, float | None]) -> None:
        """Tick each node that is due now (by ``deadlines``, or asked if missing)."""
        for node in live:
            deadline = deadlines[node] if node in deadlines else node.next_deadline()
            if deadline is not None and deadline <= self.now:
                node.events += node.tick(self.now)
                deadlines.pop(node, None)
            else:
                deadlines[node] = deadline
            self.flush(node)

    # -- wires -----------------------------------------------------------------

    def inject(self, wire: Wire, at: float) -> None:
        """``wire`` arrives at ``at``, sent by no node (a spoofer): no rule, no latency."""
        assert at >= self.now and wire.dst[0] in self.nodes
        heapq.heappush(self._queue, (at, next(self._order), wire))

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
            delays = self.rule(wire, position, counts.get(wire.dst, 1))
            if wire.dst[0] not in self.nodes:
                continue  # lost: nobody there
            for extra in delays:
                heapq.heappush(
                    self._queue, (self.now + self.latency + extra, next(self._order), wire)
                )

    def flush(self, node: Node | None = None) -> None:
        """Put what ``node`` (every node) has to send on the wire, after calling into it;
        a dead node's datagrams are kept in its ``sent`` but never leave."""
        for each in [node] if node is not None else list(self.nodes.values()):
            wires = each.datagrams_to_send()
            each.sent += wires
            if each.alive:
                self._put(wires)

    def flush_hub(self) -> None:
        """Put everything the hub has to send on the wire (after calling into it)."""
        self.flush(self._hub_node)
