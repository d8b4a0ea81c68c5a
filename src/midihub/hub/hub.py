"""The hub's domain core: endpoints, routing and what happens on every event.

Still sans-IO: ``receive``/``tick``/``reconfigure`` take bytes and time, and the
datagrams to send come out of ``drain()``. ``midihub.net`` moves them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from midihub.config import HubConfig
from midihub.hub.endpoint import Endpoint
from midihub.hub.links import Link, is_link_name, link_name
from midihub.hub.notes import ALL_CHANNELS, NoteState, panic_commands
from midihub.hub.router import Router
from midihub.hub.stats import ParticipantStats
from midihub.midi.notes import NoteRange
from midihub.rtp import (
    Address,
    Command,
    Event,
    LatencyMeasured,
    MidiReceived,
    PeerJoined,
    PeerLeft,
    PortKind,
    Session,
    Timing,
    encode_lists,
    encode_section,
)
from midihub.rtp.recovery import repair

MAX_LIST_LENGTH = 1200  # keeps every RTP packet under the IPv6 minimum MTU of 1280
"""Bytes of MIDI list per packet; longer batches and SysEx are split across packets."""

Listener = Callable[[Endpoint, Event], None]


class Outgoing(NamedTuple):
    """A datagram for the socket layer (a tuple: one is made per datagram sent)."""

    endpoint: Endpoint
    kind: PortKind
    data: bytes
    addr: Address


@dataclass(slots=True)
class Reconfigured:
    added: list[Endpoint]
    removed: list[Endpoint]
    kept: list[Endpoint]


class Hub:
    """All endpoints of one configuration and the routes between them."""

    def __init__(self, config: HubConfig, *, rng: random.Random | None = None) -> None:
        self._rng = rng or random.SystemRandom()
        self.config = config
        self.endpoints: dict[int, Endpoint] = {}
        self.listeners: list[Listener] = []  # session events: joins, leaves, latency, loss
        self.midi_listeners: list[Listener] = []  # MidiReceived: the hot path, kept apart
        self.messages_forwarded = 0
        self.notes_released = 0
        self.panics = 0
        self.journal_repairs = 0  # messages recreated from recovery journals
        self.stats: dict[Session, ParticipantStats] = {}
        self._held: dict[Session, NoteState] = {}  # per source participant
        self._router = Router([])
        self._dirty: set[Endpoint] = set()  # endpoints whose outbox may hold datagrams
        self.links: dict[tuple[str, int], Link] = {}
        # Sessions with another hub: ours (their Link) and theirs (None).
        self._hub_links: dict[Session, Link | None] = {}
        self.reconfigure(config, 0.0)

    @property
    def timing(self) -> Timing:
        return Timing(
            timeout=self.config.timeout,
            ck_interval=self.config.ck_interval,
            journal=self.config.journal,
        )

    # -- configuration ---------------------------------------------------------

    def reconfigure(self, config: HubConfig, now: float) -> Reconfigured:
        """Apply a new configuration: unchanged ports keep their sessions; removed
        ports say BY to everyone on them."""
        wanted = {spec.port: spec for spec in config.endpoints()}
        removed: list[Endpoint] = []
        kept: list[Endpoint] = []
        for port, endpoint in list(self.endpoints.items()):
            spec = wanted.get(port)
            if spec is None or spec.role != endpoint.spec.role:
                self._handle(endpoint, endpoint.host.close("removed"), now)
                self._dirty.add(endpoint)  # its BYs still go out on the next drain
                removed.append(endpoint)
            else:
                endpoint.spec = spec
                kept.append(endpoint)
        self.config = config
        timing = self.timing
        for endpoint in kept:
            endpoint.host.timing.timeout = timing.timeout
            endpoint.host.timing.ck_interval = timing.ck_interval
            endpoint.host.timing.journal = timing.journal
            endpoint.host.max_sessions = config.max_participants
            endpoint.host.limits = config.limits.spec()
        added: list[Endpoint] = []
        removed_ports = {e.port for e in removed}
        for port, spec in wanted.items():
            if port not in self.endpoints or port in removed_ports:
                added.append(
                    Endpoint(
                        spec,
                        config.name,
                        timing,
                        self._rng,
                        config.max_participants,
                        config.limits.spec(),
                    )
                )
        for endpoint in removed:
            del self.endpoints[endpoint.port]
        for endpoint in added:
            self.endpoints[endpoint.port] = endpoint
        self._router = Router(config.endpoints())
        self._reconfigure_links(config, now)
        return Reconfigured(added, removed, kept)

    def _reconfigure_links(self, config: HubConfig, now: float) -> None:
        wanted = {(link.remote, link.port): link for link in config.links}
        for key, link in list(self.links.items()):
            if key in wanted and wanted[key] == link.config:
                continue
            del self.links[key]
            session = link.session
            if session is not None:
                self._hub_links.pop(session, None)
                endpoint = self.endpoints.get(link.config.port)
                if endpoint is not None:
                    self._handle(endpoint, endpoint.host.disconnect(session, "removed"), now)
                    self._dirty.add(endpoint)
        for key, spec in wanted.items():
            if key not in self.links:
                self.links[key] = Link(spec)

    # -- input -----------------------------------------------------------------

    def receive(self, port: int, kind: PortKind, data: bytes, addr: Address, now: float) -> None:
        endpoint = self.endpoints.get(port)
        if endpoint is None:  # a datagram read just before its port was removed
            return
        self._dirty.add(endpoint)
        events = endpoint.host.receive(data, kind, addr, now)
        if events:
            self._handle(endpoint, events, now)

    def _handle(self, endpoint: Endpoint, events: list[Event], now: float) -> None:
        for event in events:
            if isinstance(event, MidiReceived):
                state = self._held.get(event.session)
                if state is None:
                    state = self._held[event.session] = NoteState()
                commands = event.commands
                if event.journal is not None:  # packets were lost: repair first
                    repairs = repair(event.journal, state)
                    if repairs:
                        self.journal_repairs += len(repairs)
                        endpoint.journal_repairs += len(repairs)
                        commands = repairs + commands
                        event.commands = commands
                if not commands:
                    continue
                state.update(commands)
                self._stats(event.session).messages_in += len(commands)
                endpoint.messages_in += len(commands)
                self._forward(endpoint, event.session, commands, now)
                for listener in self.midi_listeners:
                    listener(endpoint, event)
                continue
            if isinstance(event, LatencyMeasured):
                self._stats(event.session).add_rtt(event.rtt, now)
            elif isinstance(event, PeerJoined):
                self._stats(event.session)
                session = event.session
                if session in self._hub_links:
                    link = self._hub_links[session]
                    if link is not None:
                        link.joined(now)
                elif is_link_name(session.peer_name):
                    self._hub_links[session] = None
            elif isinstance(event, PeerLeft):
                if event.session in self._hub_links:
                    link = self._hub_links.pop(event.session)
                    if link is not None and link.session is event.session:
                        link.failed(now, event.reason)
                state = self._held.pop(event.session, None)
                if state is not None:
                    self.release(endpoint, event.session, state, now)
                self._emit(endpoint, event)
                self.stats.pop(event.session, None)
                continue
            self._emit(endpoint, event)

    def _stats(self, session: Session) -> ParticipantStats:
        stats = self.stats.get(session)
        if stats is None:
            stats = self.stats[session] = ParticipantStats()
        return stats

    def release(self, source: Endpoint, session: Session, state: NoteState, now: float) -> None:
        """Send everyone ``session`` was feeding the NoteOffs, pedal-ups and bend
        centre for what it still held (it left, timed out or was removed)."""
        commands = state.release()
        if commands:
            self.notes_released += sum(1 for _, msg in commands if msg[0] & 0xF0 == 0x80)
            self._forward(source, session, commands, now)

    def held(self, session: Session) -> NoteState | None:
        return self._held.get(session)

    def _forward(
        self, source: Endpoint, sender: Session, commands: list[Command], now: float
    ) -> None:
        targets = self._router.targets(source.port)
        if not targets:
            return
        sections: list[bytes] | None = None
        hub_links = self._hub_links
        from_hub = sender in hub_links  # split horizon: never on to another hub
        for port in targets:
            endpoint = self.endpoints.get(port)
            if endpoint is None:
                continue
            if from_hub:
                receivers = [
                    s for s in endpoint.host.established if s is not sender and s not in hub_links
                ]
            else:
                receivers = [s for s in endpoint.host.established if s is not sender]
            if not receivers:
                continue
            if sections is None:  # encoded once, whatever the number of receivers
                sections = [
                    encode_section(body) for body in encode_lists(commands, MAX_LIST_LENGTH)
                ]
            endpoint.host.send(receivers, sections, now, commands)
            self._dirty.add(endpoint)
            count = len(commands)
            self.messages_forwarded += count * len(receivers)
            endpoint.messages_out += count * len(receivers)
            stats = self.stats
            for receiver in receivers:
                known = stats.get(receiver)
                if known is not None:
                    known.messages_out += count

    def connect(self, port: int, addr: Address, now: float) -> Session:
        """Open an outbound session from hub port ``port`` to a remote responder."""
        endpoint = self.endpoints[port]
        self._dirty.add(endpoint)
        return endpoint.host.connect(addr, now)

    def send(
        self, port: int, sessions: list[Session], commands: list[tuple[int, bytes]], now: float
    ) -> None:
        """Send MIDI from the hub itself (panic, release) to sessions on ``port``."""
        sections = [encode_section(body) for body in encode_lists(commands, MAX_LIST_LENGTH)]
        endpoint = self.endpoints[port]
        endpoint.host.send(sessions, sections, now, commands)
        self._dirty.add(endpoint)
        endpoint.messages_out += len(commands) * len(sessions)
        for session in sessions:
            known = self.stats.get(session)
            if known is not None:
                known.messages_out += len(commands)

    def panic(
        self,
        port: int,
        note_range: NoteRange,
        now: float,
        *,
        channels: Iterable[int] = ALL_CHANNELS,
        session: Session | None = None,
    ) -> list[Session]:
        """Manual stuck-note repair: NoteOffs for ``note_range`` to everyone on
        ``port`` (or to one participant there). Returns who was sent them."""
        endpoint = self.endpoints[port]
        targets = [session] if session is not None else list(endpoint.host.established)
        if targets:
            self.send(port, targets, panic_commands(note_range, channels), now)
        self.panics += 1
        endpoint.panics += 1
        return targets

    def participant(self, participant_id: str) -> tuple[Endpoint, Session] | None:
        """Find a connected participant by the id the API shows (``port-id``)."""
        port_text, _, public_id = participant_id.partition("-")
        if not port_text.isdigit() or len(port_text) > 5:
            return None
        endpoint = self.endpoints.get(int(port_text))
        if endpoint is None:
            return None
        for session in endpoint.host.established:
            if session.public_id == public_id:
                return endpoint, session
        return None

    # -- links -----------------------------------------------------------------

    def due_links(self, now: float) -> list[Link]:
        """Links to (re)connect now; each is marked as resolving until the socket layer
        calls ``connect_link`` or ``link_failed``."""
        due = [
            link
            for link in self.links.values()
            if link.due(now) and link.config.port in self.endpoints
        ]
        for link in due:
            link.resolving = True
        return due

    def connect_link(self, link: Link, addr: Address, now: float) -> Session | None:
        endpoint = self.endpoints.get(link.config.port)
        if endpoint is None or self.links.get(link.key) is not link:
            link.resolving = False  # removed by a reload meanwhile
            return None
        session = endpoint.host.connect(addr, now, name=link_name(self.config.name, endpoint.label))
        link.session, link.resolving = session, False
        link.attempts += 1
        self._hub_links[session] = link
        self._dirty.add(endpoint)
        return session

    def link_failed(self, link: Link, now: float, reason: str) -> None:
        link.failed(now, reason)

    # -- time ------------------------------------------------------------------

    def tick(self, now: float) -> None:
        for endpoint in self.endpoints.values():
            events = endpoint.host.tick(now)
            if events:
                self._handle(endpoint, events, now)
            self._dirty.add(endpoint)  # retries and clock syncs may be due

    def close(self, now: float) -> None:
        """Release every held note while all receivers are still there, then say BY
        to everyone (shutdown)."""
        for endpoint in self.endpoints.values():
            for session in endpoint.host.established:
                state = self._held.pop(session, None)
                if state is not None:
                    self.release(endpoint, session, state, now)
        for endpoint in self.endpoints.values():
            self._handle(endpoint, endpoint.host.close("shutdown"), now)
            self._dirty.add(endpoint)

    # -- output ----------------------------------------------------------------

    def drain(self) -> Iterator[Outgoing]:
        """Everything due to be sent, removed endpoints' farewells included."""
        dirty, self._dirty = self._dirty, set()
        for endpoint in dirty:
            for kind, data, addr in endpoint.host.datagrams_to_send():
                yield Outgoing(endpoint, kind, data, addr)

    def _emit(self, endpoint: Endpoint, event: Event) -> None:
        for listener in self.listeners:
            listener(endpoint, event)


def participant_id(endpoint: Endpoint, session: Session) -> str:
    """Stable for the life of a session: the hub port and an id the hub drew at random
    (never the SSRC: knowing it would let anyone speak for the participant)."""
    return f"{endpoint.port}-{session.public_id}"


def display_address(addr: Address) -> str:
    """``host:port`` as admins write it (``[v6]:port``; IPv4-mapped shown as IPv4)."""
    host = str(addr[0]).removeprefix("::ffff:")
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
