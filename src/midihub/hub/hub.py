"""The hub's domain core: endpoints, routing and what happens on every event.

Still sans-IO: ``receive``/``tick``/``reconfigure`` take bytes and time, and the
datagrams to send come out of ``drain()``. ``midihub.net`` moves them.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from midihub.hub.endpoint import Endpoint, session_name
from midihub.hub.guest import Guest
from midihub.hub.links import Link, is_link_name, link_name
from midihub.hub.panic import ALL_CHANNELS, HUB, Panicked, Released, panic_commands
from midihub.hub.router import Router
from midihub.hub.spec import HubSpec
from midihub.midi.notes import NoteRange
from midihub.rtp import (
    Address,
    Command,
    Event,
    LatencyMeasured,
    LeaveReason,
    MidiReceived,
    NotesReleased,
    Peer,
    PeerJoined,
    PeerLeft,
    PortKind,
    Section,
    Session,
    SessionSettings,
    Who,
    encode_sections,
)
from midihub.rtp.intake import Intake
from midihub.rtp.limits import Drop
from midihub.rtp.recovery import MAX_LIST_LENGTH

__all__ = ["MAX_LIST_LENGTH", "Hub", "Outgoing", "Reconfigured"]

Listener = Callable[[Endpoint, Event], None]
# an event for a list of listeners, heard later, with when its datagram arrived (``stamp``)
Tap = tuple[list[Listener], Endpoint, Event, float | None]


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

    def __init__(self, spec: HubSpec, *, rng: random.Random | None = None) -> None:
        self._rng = rng or random.SystemRandom()
        self.spec = spec
        self.endpoints: dict[int, Endpoint] = {}
        self.listeners: list[Listener] = []  # session events: joins, leaves, latency, loss
        self.midi_listeners: list[Listener] = []  # MidiReceived: the hot path, kept apart
        self._taps: list[Tap] = []  # events of the datagrams received, until ``dispatch``
        self._receiving = False  # in ``receive``: listeners wait for the batch's end
        # The socket layer's monotonic clock when the batch being received arrived, and,
        # while a listener hears a queued event, when that event's datagram arrived: a
        # recording stamps what it hears with it, not with the (later) time it is heard.
        self.stamp: float | None = None
        self.heard_at: float | None = None
        self.messages_forwarded = 0  # copies delivered, every receiver counted
        self.notes_released = 0
        self._guest_ports: dict[Guest, int] = {}
        self._router = Router([])
        self._dirty: set[Endpoint] = set()  # endpoints whose outbox may hold datagrams
        self.links: dict[tuple[str, int], Link] = {}
        self.pending_deadline: float | None = None  # earliest timer of the last drain
        self.reconfigure(spec, 0.0)

    @property
    def session_settings(self) -> SessionSettings:
        return SessionSettings(
            timeout=self.spec.timeout,
            ck_interval=self.spec.ck_interval,
            journal=self.spec.journal,
        )

    # -- configuration ---------------------------------------------------------

    def reconfigure(self, config: HubSpec, now: float) -> Reconfigured:
        """Apply a new configuration: removed ports say BY to everyone on them; kept
        ports keep their sessions and apply every new setting to them (name, session
        settings, limits, journal policy: ``SessionTable.configure``)."""
        wanted = {e.port: e for e in config.endpoints}
        removed: list[Endpoint] = []
        kept: list[Endpoint] = []
        for port, endpoint in list(self.endpoints.items()):
            wish = wanted.get(port)
            if wish is None or wish.role != endpoint.spec.role:
                self._close_guests(endpoint, LeaveReason.REMOVED, now)
                self._handle(endpoint, endpoint.table.close(LeaveReason.REMOVED), now)
                self._dirty.add(endpoint)  # its BYs still go out on the next drain
                removed.append(endpoint)
            else:
                endpoint.spec = wish
                kept.append(endpoint)
        self.spec = config
        settings = self.session_settings
        for endpoint in kept:
            endpoint.table.configure(
                settings,
                name=session_name(config.name, endpoint.spec),
                max_sessions=config.max_participants,
                limits=config.limits,
                now=now,
            )
            self._dirty.add(endpoint)  # its timers may come sooner: the next drain says so
            for session in endpoint.table.established:
                self._apply_journal_policy(endpoint, session)
            for guest in endpoint.guests:  # the same SysEx caps as the sessions, live
                guest.intake.configure(config.limits, now)
        added: list[Endpoint] = []
        removed_ports = {e.port for e in removed}
        for port, wish in wanted.items():
            if port not in self.endpoints or port in removed_ports:
                added.append(
                    Endpoint(
                        wish,
                        config.name,
                        settings,
                        self._rng,
                        config.max_participants,
                        config.limits,
                    )
                )
        for endpoint in removed:
            del self.endpoints[endpoint.port]
        for endpoint in added:
            self.endpoints[endpoint.port] = endpoint
        self._router = Router(config.endpoints)
        self._reconfigure_links(config, now)
        return Reconfigured(added, removed, kept)

    def _reconfigure_links(self, config: HubSpec, now: float) -> None:
        """The one place links change, for a reload and a fleet directory change alike:
        the configured ``links`` and the fleet's planned ``fleet_links`` (a configured
        link wins a key both have); a link whose spec is unchanged keeps its session."""
        wanted = {(link.remote, link.port): link for link in config.fleet_links}
        wanted.update({(link.remote, link.port): link for link in config.links})
        for key, link in list(self.links.items()):
            if key in wanted and wanted[key] == link.spec:
                continue
            del self.links[key]
            session = link.session
            if session is not None:
                endpoint = self.endpoints.get(link.spec.port)
                if endpoint is not None:  # the PeerLeft lets it go (after its release)
                    self._handle(
                        endpoint, endpoint.table.disconnect(session, LeaveReason.REMOVED), now
                    )
                    self._dirty.add(endpoint)
        for key, spec in wanted.items():
            if key not in self.links:
                self.links[key] = Link(spec)

    # -- input -----------------------------------------------------------------

    def receive(self, port: int, kind: PortKind, data: bytes, addr: Address, now: float) -> None:
        """One datagram. Its events reach the listeners later, at the end of the next
        ``drain`` (after the batch's datagrams are sent) or ``dispatch``."""
        endpoint = self.endpoints.get(port)
        if endpoint is None:  # a datagram read just before its port was removed
            return
        self._dirty.add(endpoint)
        events = endpoint.table.receive(data, kind, addr, now)
        if events:
            self._receiving = True
            try:
                self._handle(endpoint, events, now)
            finally:
                self._receiving = False

    def _handle(self, endpoint: Endpoint, events: list[Event], now: float) -> None:
        """The switchboard: every event of ``endpoint``'s participants, in order."""
        for event in events:
            if isinstance(event, MidiReceived):
                self._midi(endpoint, event, now)
                continue
            who = event.who
            if isinstance(event, LatencyMeasured):
                endpoint.stats_of(who.public_id).add_rtt(event.rtt, now)
            elif isinstance(event, PeerJoined):
                endpoint.stats_of(who.public_id)
                session = endpoint.table.find(who.public_id)
                if session is not None:
                    self._joined_session(endpoint, session, now)
            elif isinstance(event, NotesReleased):  # release_after: a loss left them stuck
                self._release(endpoint, who, event.release, now)
            elif isinstance(event, PeerLeft):
                # Released while still known as a hub link: what it fed us came from
                # another hub, so its release goes to local players only (split horizon).
                self._release(endpoint, who, event.release, now)
                link = endpoint.hub_links.pop(who.public_id, None)
                current = None if link is None else link.session
                if link is not None and current is not None and current.public_id == who.public_id:
                    link.failed(now, event.reason)
                self._emit(endpoint, event)
                endpoint.stats.pop(who.public_id, None)
                continue
            self._emit(endpoint, event)

    def _joined_session(self, endpoint: Endpoint, session: Session, now: float) -> None:
        """A new RTP participant: ours or another hub's link, and its journal policy."""
        links = endpoint.hub_links
        if session.public_id in links:
            link = links[session.public_id]
            if link is not None:
                link.joined(now)
        elif is_link_name(session.peer_name):
            links[session.public_id] = None
        self._apply_journal_policy(endpoint, session)

    def _midi(self, endpoint: Endpoint, event: MidiReceived, now: float) -> None:
        """MIDI from a participant (its session already repaired it after a loss and
        keeps what it holds): count it, forward it, show it to the monitor."""
        commands = event.commands
        if event.repaired:
            endpoint.journal_repairs += event.repaired
        endpoint.stats_of(event.who.public_id).messages_in += len(commands)
        endpoint.messages_in += len(commands)
        self._forward(endpoint, event.who.public_id, commands, now)
        if self.midi_listeners:
            self._tap(self.midi_listeners, endpoint, event)

    # -- guests (participants that are not RTP sessions) -------------------------

    def admit(self, port: int, guest: Guest, now: float) -> str | None:
        """Join ``guest`` to ``port``; returns why not (no such port, full) or None."""
        endpoint = self.endpoints.get(port)
        if endpoint is None:
            return "no such port"
        table = endpoint.table
        if not table.has_room():  # the one admission, for sessions and guests alike
            table.counters.drop(Drop.PORT_FULL)
            return "the port is full"
        taken = {peer.public_id for peer in endpoint.participants}
        while not guest.public_id or guest.public_id in taken:
            guest.public_id = f"{self._rng.getrandbits(32):08x}"
        guest.joined_at = now
        guest.who = Who(guest.public_id, guest.name, guest.address, guest.transport)
        guest.intake = Intake(table.limits, table.counters, now)  # SysEx caps, as for RTP
        endpoint.guests.append(guest)
        self._guest_ports[guest] = port
        self._handle(endpoint, [PeerJoined(guest.who)], now)
        return None

    def play(self, guest: Guest, commands: list[Command], now: float) -> None:
        """MIDI from a guest (complete messages, in order): the same SysEx caps and
        rate as an RTP sender's (its ``Intake``), the same note tracking, then
        ``_midi`` like any participant's."""
        port = self._guest_ports.get(guest)
        if port is None or not commands:
            return
        commands = guest.intake.accept(commands, now)
        if not commands:
            return
        endpoint = self.endpoints[port]
        guest.held.update(commands)
        self._midi(endpoint, MidiReceived(guest.who, commands), now)

    def measured(self, guest: Guest, rtt: float, now: float) -> None:
        """A round-trip time the guest's transport measured (WebSocket ping)."""
        port = self._guest_ports.get(guest)
        if port is None:
            return
        guest.rtt = rtt
        self._handle(self.endpoints[port], [LatencyMeasured(guest.who, rtt)], now)

    def release_held(self, guest: Guest, now: float) -> None:
        """The guest lost MIDI for good (a Network MIDI 2.0 gap nothing filled): what
        it held is released to everyone it feeds, as on its departure, since the NoteOffs
        may have been in what was lost; it plays on."""
        port = self._guest_ports.get(guest)
        release = tuple(guest.held.release()) if port is not None else ()
        if port is not None and release:
            self._handle(self.endpoints[port], [NotesReleased(guest.who, release)], now)

    def depart(self, guest: Guest, reason: LeaveReason, now: float) -> None:
        """The guest is gone (its transport closed): release what it held."""
        port = self._guest_ports.pop(guest, None)
        if port is None:
            return
        endpoint = self.endpoints[port]
        endpoint.guests.remove(guest)
        release = tuple(guest.held.release())
        self._handle(endpoint, [PeerLeft(guest.who, reason, True, release)], now)

    def _close_guests(self, endpoint: Endpoint, reason: LeaveReason, now: float) -> None:
        for guest in list(endpoint.guests):
            self.depart(guest, reason, now)
            guest.close(reason)

    def journal_wanted(self, endpoint: Endpoint, session: Session) -> bool:
        """Journals are on unless turned off for the hub, this port, this link, or a
        session name matching a ``journal_off`` pattern (peers that misread them)."""
        config = self.spec
        if not config.journal or not endpoint.spec.journal:
            return False
        link = endpoint.hub_links.get(session.public_id)
        if link is not None and not link.spec.journal:
            return False
        name = session.peer_name.casefold()
        return not any(fnmatch.fnmatchcase(name, p.casefold()) for p in config.journal_off)

    def _apply_journal_policy(self, endpoint: Endpoint, session: Session) -> None:
        """Journals both ways: whether we send this session one, and, for when it
        sends none after a loss, the port's ``release_after``."""
        session.use_journal(self.journal_wanted(endpoint, session))
        session.release_after_loss(endpoint.spec.release_after)

    def _release(self, source: Endpoint, who: Who, commands: Sequence[Command], now: float) -> None:
        """Send everyone participant ``who`` was feeding the NoteOffs, pedal-ups and
        bend centre for what it still held (it left, timed out or was removed, or the
        hub is stopping); listeners hear a ``Released``."""
        if commands:
            self.notes_released += sum(1 for _, msg in commands if msg[0] & 0xF0 == 0x80)
            self._forward(source, who.public_id, commands, now)
            self._emit(source, Released(who, tuple(commands)))

    def _forward(
        self, source: Endpoint, sender_id: str, commands: Sequence[Command], now: float
    ) -> None:
        """``commands`` from participant ``sender_id`` of ``source`` to everyone its
        routes reach, never back to itself, and never from one hub on to another."""
        targets = self._router.targets(source.port)
        if not targets:
            return
        sections: list[Section] | None = None
        from_hub = sender_id in source.hub_links  # split horizon: never on to another hub
        sender: str | None = None  # as the API names it, for guests that show who played
        for port in targets:
            endpoint = self.endpoints.get(port)
            if endpoint is None:
                continue
            receivers = endpoint.table.established
            guests = endpoint.guests
            if endpoint is source:
                receivers = [s for s in receivers if s.public_id != sender_id]
                guests = [g for g in guests if g.public_id != sender_id]
            if from_hub and endpoint.hub_links:
                links = endpoint.hub_links
                receivers = [s for s in receivers if s.public_id not in links]
            if guests and sender is None:
                sender = participant_key(source.port, sender_id)
            own = sender_id if endpoint is source else None  # whose stream lacks these
            sections = self._deliver(
                endpoint, receivers, guests, commands, sections, now, sender, own
            )
            count = len(commands)
            self.messages_forwarded += count * (len(receivers) + len(guests))
            # Per-participant counts in O(1): the port's tally, less who was left out.
            endpoint.tally.count += count
            stats = endpoint.stats
            if own is not None and (left := stats.get(own)) is not None:
                left.out_adjust -= count
            if from_hub:
                for link_id in endpoint.hub_links:
                    if link_id != own and (left := stats.get(link_id)) is not None:
                        left.out_adjust -= count

    def _deliver(
        self,
        endpoint: Endpoint,
        sessions: list[Session],
        guests: list[Guest],
        commands: Sequence[Command],
        sections: list[Section] | None,
        now: float,
        sender: str | None = None,
        own: str | None = None,
    ) -> list[Section] | None:
        """``commands`` to these participants of ``endpoint``, counted. RTP sections are
        encoded once, whatever the number of receivers (and ports: they are returned),
        and so is each packet's journal per stream journal (``SessionTable.send``).
        ``sender``: the participant id of who played them (guests that show it are
        told); None: the hub itself. ``own``: the public id of the participant of this
        port that played them (a room member: no stream journal it joins may have them).
        The callers count what each participant was sent (``ParticipantStats``)."""
        if sessions:
            if sections is None:
                sections = encode_sections(commands, MAX_LIST_LENGTH)
            endpoint.table.send(sessions, sections, now, own)
            self._dirty.add(endpoint)
        for guest in guests:
            if sender is None:
                guest.deliver(commands, now)
            else:
                guest.deliver_from(sender, commands, now)
        endpoint.messages_out += len(commands) * (len(sessions) + len(guests))
        return sections

    def connect(self, port: int, addr: Address, now: float) -> Session:
        """Open an outbound session from hub port ``port`` to a remote responder."""
        endpoint = self.endpoints[port]
        self._dirty.add(endpoint)
        return endpoint.table.connect(addr, now)

    def send(self, port: int, targets: list[Peer], commands: list[Command], now: float) -> None:
        """Send MIDI from the hub itself (panic, release) to participants on ``port``."""
        endpoint = self.endpoints[port]
        sessions = [t for t in targets if isinstance(t, Session)]
        guests = [t for t in targets if isinstance(t, Guest)]
        self._deliver(endpoint, sessions, guests, commands, None, now)
        for peer in targets:  # chosen ones, not the whole port: counted one by one
            stats = endpoint.stats.get(peer.public_id)
            if stats is not None:
                stats.out_adjust += len(commands)

    def panic(
        self,
        port: int,
        note_range: NoteRange,
        now: float,
        *,
        channels: Iterable[int] = ALL_CHANNELS,
        participant: Peer | None = None,
    ) -> list[Peer]:
        """Manual stuck-note repair: NoteOffs for ``note_range`` to everyone on
        ``port`` (or to one participant there). Returns who was sent them; listeners
        hear a ``Panicked``."""
        endpoint = self.endpoints[port]
        targets = [participant] if participant is not None else endpoint.participants
        channels = tuple(channels)
        if targets:
            self.send(port, targets, panic_commands(note_range, channels), now)
        endpoint.panics += 1
        who = HUB if participant is None else participant.who
        self._emit(endpoint, Panicked(who, note_range, channels))
        return targets

    def sources_of(self, port: int) -> list[int]:
        """The ports whose MIDI is routed to ``port`` (itself included, for a room)."""
        return [source for source in sorted(self.endpoints) if port in self._router.targets(source)]

    def participant(self, participant_id: str) -> tuple[Endpoint, Peer] | None:
        """Find a connected participant by the id the API shows (``port-id``)."""
        port_text, _, public_id = participant_id.partition("-")
        if not port_text.isdigit() or len(port_text) > 5:
            return None
        endpoint = self.endpoints.get(int(port_text))
        if endpoint is None:
            return None
        for peer in endpoint.participants:
            if peer.public_id == public_id:
                return endpoint, peer
        return None

    # -- links -----------------------------------------------------------------

    def due_links(self, now: float) -> list[Link]:
        """Links to (re)connect now; each is marked as resolving until the socket layer
        calls ``connect_link`` or ``link_failed``."""
        due = [
            link
            for link in self.links.values()
            if link.due(now) and link.spec.port in self.endpoints
        ]
        for link in due:
            link.resolving = True
        return due

    def connect_link(self, link: Link, addr: Address, now: float) -> Session | None:
        endpoint = self.endpoints.get(link.spec.port)
        if endpoint is None or self.links.get(link.key) is not link:
            link.resolving = False  # removed by a reload meanwhile
            return None
        session = endpoint.table.connect(addr, now, name=link_name(self.spec.name, endpoint.label))
        link.session, link.resolving = session, False
        link.attempts += 1
        endpoint.hub_links[session.public_id] = link
        self._dirty.add(endpoint)
        return session

    def link_failed(self, link: Link, now: float, reason: LeaveReason) -> None:
        link.failed(now, reason)

    # -- time ------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """The timers due at ``now``: only the ports whose earliest filed session timer
        has come are visited, and in them only the sessions due (``SessionTable.tick``)."""
        for endpoint in self.endpoints.values():
            table = endpoint.table
            wake = table.next_wake()
            if wake is None or now < wake:
                continue
            events = table.tick(now)
            if events:
                self._handle(endpoint, events, now)
            self._dirty.add(endpoint)  # retries and clock syncs may be due

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do: the earliest session timer (guard
        packets, RS, clock sync, retries, timeouts) or link retry; None: nothing. Each
        port's is the top of its timer heap, not a scan of its sessions."""
        tables = [endpoint.table for endpoint in self.endpoints.values()]
        times = [t for table in tables if (t := table.next_deadline()) is not None]
        times += [link.next_attempt for link in self.links.values() if link.session is None]
        return min(times, default=None)

    def close(self, now: float) -> None:
        """Release every held note while all receivers are still there, then say BY
        to everyone (shutdown)."""
        for endpoint in self.endpoints.values():
            for peer in endpoint.participants:
                self._release(endpoint, peer.who, peer.held.release(), now)
        for endpoint in self.endpoints.values():
            self._close_guests(endpoint, LeaveReason.SHUTDOWN, now)
            self._handle(endpoint, endpoint.table.close(LeaveReason.SHUTDOWN), now)
            self._dirty.add(endpoint)

    # -- output ----------------------------------------------------------------

    def drain(self) -> Iterator[Outgoing]:
        """Everything due to be sent, removed endpoints' farewells included;
        ``pending_deadline``: a time no later than the next timer of the ports it
        drained (``SessionTable.next_wake``: the top of a heap, no session asked)."""
        dirty, self._dirty = self._dirty, set()
        deadline: float | None = None
        for endpoint in dirty:
            for kind, data, addr in endpoint.table.datagrams_to_send():
                yield Outgoing(endpoint, kind, data, addr)
            timer = endpoint.table.next_wake()
            if timer is not None and (deadline is None or timer < deadline):
                deadline = timer
        self.pending_deadline = deadline
        self.dispatch()

    # -- listeners ---------------------------------------------------------------

    def dispatch(self) -> None:
        """The listeners hear the events of the datagrams received since the last
        dispatch, in the order they happened: once per batch, after its datagrams are
        sent (the end of ``drain``), so nothing but forwarding runs on the datagram
        path. Events outside ``receive`` (guests, ticks, panics, reloads) are heard
        at once, after any still waiting. If a listener raises, the events after it
        wait for the next dispatch."""
        while taps := self._taps:
            self._taps = []
            for index, (listeners, endpoint, event, at) in enumerate(taps):
                self.heard_at = at
                try:
                    for listener in listeners:
                        listener(endpoint, event)
                except BaseException:
                    self._taps[:0] = taps[index + 1 :]
                    raise
                finally:
                    self.heard_at = None

    def _tap(self, listeners: list[Listener], endpoint: Endpoint, event: Event) -> None:
        self._taps.append((listeners, endpoint, event, self.stamp if self._receiving else None))
        if not self._receiving:
            self.dispatch()

    def _emit(self, endpoint: Endpoint, event: Event) -> None:
        if self.listeners:
            self._tap(self.listeners, endpoint, event)


def participant_id(endpoint: Endpoint, participant: Peer | Who) -> str:
    """Stable for the life of a participant: the hub port and an id the hub drew at
    random (never the SSRC: knowing it would let anyone speak for the participant)."""
    return participant_key(endpoint.port, participant.public_id)


def participant_key(port: int, public_id: str) -> str:
    """``participant_id`` from its parts."""
    return f"{port}-{public_id}"


def display_address(addr: Address) -> str:
    """``host:port`` as admins write it (``[v6]:port``; IPv4-mapped shown as IPv4)."""
    host = str(addr[0]).removeprefix("::ffff:")
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
