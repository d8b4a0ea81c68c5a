"""One local port pair (control P, data P+1) and every session on it.

``SessionTable`` demultiplexes datagrams to sessions by SSRC (invitation token for
initiator replies), creates responder sessions for new invitations, and keeps the
counters an admin needs. Sans-IO like ``Session``: each session keeps its own
outbox, and ``datagrams_to_send()`` collects from those it touched since the last
call (plus the table's own NO replies).

A session is bound to the addresses it came from: once known, its SSRC is honoured
only from its own control or data address, and BY or a data-port IN also need its
initiator token. Invitations that never complete are limited per port and per
source IP and expire on their own (docs/security.md).

Timers: the table files each session in a heap by its deadline (``Session.scheduled``;
the session tells the table when a change brings a timer forward), so ``tick`` visits
only the sessions whose time has come and ``next_deadline`` looks at the heap's top,
whatever the number of sessions: idle participants cost nothing per datagram.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
from collections.abc import Callable, Sequence

from midihub.rtp import packets
from midihub.rtp.commands import FLAG_J, Section, decode_payload
from midihub.rtp.errors import ProtocolError
from midihub.rtp.events import Event, LeaveReason, PeerLeft
from midihub.rtp.limits import Counters, Drop, Limits, SourceLimiter, source_key
from midihub.rtp.packets import Clock, Feedback, Invitation
from midihub.rtp.recovery import MAX_DATAGRAM, RTP_HEADER, JournalCursor, share
from midihub.rtp.session import (
    TICKING,
    Address,
    Datagram,
    PortKind,
    Role,
    Session,
    SessionSettings,
    State,
    data_port_of,
)

RTP_HEADER_ROOM = bytes(RTP_HEADER)
_BUFFER = bytearray()  # only its join is used: a new buffer in one allocation


class SessionTable:
    """Sessions on one port pair. ``receive``/``tick``/``connect``/``close`` return
    events; the datagrams they cause wait in ``datagrams_to_send()``."""

    def __init__(
        self,
        name: str,
        *,
        rng: random.Random,
        settings: SessionSettings | None = None,
        accept: bool = True,
        max_sessions: int = 64,
        limits: Limits | None = None,
        others: Callable[[], int] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or SessionSettings()
        self.accept = accept
        self.max_sessions = max_sessions  # participants of every kind (max_participants)
        self.limits = limits or Limits()
        self.counters = Counters()
        # How many of the port's participants are not sessions here (the hub's guests).
        self._others = others or (lambda: 0)
        self._rng = rng
        self._outbox: list[Datagram] = []  # NO replies: no session behind them
        self._touched: list[Session] = []  # sessions that may have datagrams waiting
        self._by_peer: dict[int, Session] = {}  # peer SSRC → session (once known)
        self._by_token: dict[int, Session] = {}  # our initiations awaiting OK
        self._local_ssrcs: set[int] = set()
        self._by_public_id: dict[str, Session] = {}
        self._established: list[Session] | None = None  # see ``established``
        self._replies = SourceLimiter(self.limits.reject_rate, self.limits.reject_burst)
        # Each live session's timer: (time it is filed for, order, session). An entry whose
        # time is no longer the session's ``scheduled``, or whose session closed, is stale
        # and skipped when it reaches the top (``_top``).
        self._timers: list[tuple[float, int, Session]] = []
        self._order = itertools.count()

    def configure(
        self,
        settings: SessionSettings,
        *,
        name: str,
        max_sessions: int,
        limits: Limits,
        now: float,
    ) -> None:
        """A reload, applied to the live sessions too: they share the table's settings;
        each takes the new limits (its SysEx caps and rate, its timers); the NO-reply
        limiter takes the new rate, each source keeping what it spent; sessions that
        introduced themselves by the port's name use the new one from their next
        datagram. The participant and per-source caps are checked at each new
        invitation: lowering them turns newcomers away and drops no one."""
        for field in dataclasses.fields(settings):
            setattr(self.settings, field.name, getattr(settings, field.name))
        for session in self.sessions:
            if session.local_name == self.name:
                session.local_name = name
            session.use_limits(limits, now)  # its timers may come sooner: it refiles
        self.name = name
        self.max_sessions = max_sessions
        self.limits = limits
        self._replies.configure(limits.reject_rate, limits.reject_burst, now)

    # -- queries ---------------------------------------------------------------

    @property
    def sessions(self) -> list[Session]:
        """Every live session, joined or not, initiated here or not."""
        return [*self._by_peer.values(), *self._by_token.values()]

    @property
    def established(self) -> list[Session]:
        """The participants: handshake done and address proven by a clock sync. Kept
        between joins and leaves: every forward asks for it."""
        cached = self._established
        if cached is None:
            cached = self._established = [s for s in self._by_peer.values() if s.joined]
        return cached

    @property
    def pending(self) -> int:
        """Half-open sessions: invited (either way) but not yet participants."""
        return sum(1 for s in self.sessions if s.pending)

    def has_room(self) -> bool:
        """Admission, the one place it is decided for every kind of participant: the
        joined sessions and the port's other participants (guests) stay within
        ``max_sessions``. Asked at an IN (refused with NO when full), when a session
        first proves its address (its join: refused with BY when full, so invitations
        accepted together cannot all join) and when the hub admits a guest."""
        return len(self.established) + self._others() < self.max_sessions

    def find(self, public_id: str) -> Session | None:
        """The live session an event or the API names by its public id."""
        return self._by_public_id.get(public_id)

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._outbox = self._outbox, []
        touched, self._touched = self._touched, []
        for session in touched:
            out += session.datagrams_to_send()
        self.counters.sent += len(out)
        return out

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do (None: no sessions). The earliest
        filed session is asked for its real deadline; if a timer of its has moved later
        since, it is filed again and the next one asked."""
        while (when := self._top()) is not None:
            session = self._timers[0][2]
            deadline = session.next_deadline()
            if deadline == when:
                return when
            heapq.heappop(self._timers)
            self._file(session, deadline)
        return None

    def next_wake(self) -> float | None:
        """A time no later than ``next_deadline()``, without asking any session: the
        earliest filed time (a wake-up then may find that timer moved later, and
        ``tick`` files it again). What ``Hub.drain`` reports after every datagram."""
        return self._top()

    def _top(self) -> float | None:
        """The earliest filed time, stale entries dropped on the way."""
        timers = self._timers
        while timers:
            when, _, session = timers[0]
            if when == session.scheduled and session.state is not State.CLOSED:
                return when
            heapq.heappop(timers)
        return None

    def _file(self, session: Session, when: float) -> None:
        """File ``session`` for ``when`` (its ``on_earlier``: only ever brought forward
        between ticks; the older entry goes stale)."""
        session.scheduled = when
        timers = self._timers
        heapq.heappush(timers, (when, next(self._order), session))
        if len(timers) > 2 * (len(self._by_peer) + len(self._by_token)) + 64:
            self._compact()

    def _compact(self) -> None:
        """Drop the stale entries (many sessions brought forward, or closed, before
        their filed times came)."""
        self._timers[:] = [
            entry
            for entry in self._timers
            if entry[0] == entry[2].scheduled and entry[2].state is not State.CLOSED
        ]
        heapq.heapify(self._timers)

    # -- input -----------------------------------------------------------------

    def receive(self, data: bytes, kind: PortKind, addr: Address, now: float) -> list[Event]:
        """One datagram from ``addr`` on our ``kind`` port. Never raises on bad bytes:
        they are counted (``counters.malformed`` and a drop reason) and dropped."""
        self.counters.received += 1
        if packets.is_session_packet(data):
            try:
                packet = packets.decode_session_packet(data)
            except ProtocolError as error:
                bad_version = str(error).startswith("unsupported AppleMIDI protocol version")
                return self._malformed(Drop.BAD_VERSION if bad_version else Drop.MALFORMED_SESSION)
            return self._on_session_packet(packet, kind, addr, now, len(data))
        if kind is not PortKind.DATA:
            return self._malformed(Drop.RTP_ON_CONTROL)
        try:
            header, start, end = packets.decode_rtp_header(data)
            commands, journal_at = decode_payload(data, start, end)
        except ProtocolError:
            return self._malformed(Drop.MALFORMED_RTP)
        session = self._by_peer.get(header.ssrc)
        if session is None:
            return self._dropped(Drop.UNKNOWN_SESSION)
        if addr != session.data_addr:
            return self._dropped(Drop.WRONG_ADDRESS)
        if not session.joined:
            return self._dropped(Drop.NOT_JOINED)
        session.heard(len(data), now)
        journal = None if journal_at is None else (data, journal_at, end)
        return session.on_rtp(header, commands, now, journal)

    def _malformed(self, reason: Drop) -> list[Event]:
        self.counters.malformed += 1
        return self._dropped(reason)

    def _dropped(self, reason: Drop) -> list[Event]:
        self.counters.drop(reason)
        return []

    def _bound(self, packet_ssrc: int, kind: PortKind, addr: Address) -> Session | None:
        """The session with this SSRC if ``addr`` is its own address for ``kind``."""
        session = self._by_peer.get(packet_ssrc)
        if session is None:
            self.counters.drop(Drop.UNKNOWN_SESSION)
            return None
        own = session.control_addr if kind is PortKind.CONTROL else session.data_addr
        if addr != own:
            self.counters.drop(Drop.WRONG_ADDRESS)
            return None
        return session

    def _on_session_packet(
        self, packet: packets.SessionPacket, kind: PortKind, addr: Address, now: float, size: int
    ) -> list[Event]:
        if isinstance(packet, Clock):
            session = self._bound(packet.ssrc, kind, addr)
            if session is None:
                return []
            if session.state is not State.ESTABLISHED:
                return self._dropped(Drop.NOT_JOINED)
            joined = session.joined_at
            self._touched.append(session)
            events = session.on_clock(packet, kind, addr, now, size)
            if session.refused:  # it proved its address, but the port is full
                self.counters.drop(Drop.PORT_FULL)
                self._forget(session)
                return self._ended(session, LeaveReason.FULL, bye=True)
            if session.joined_at is not joined:
                self._established = None  # a new participant
            return events
        if isinstance(packet, Feedback):
            session = self._bound(packet.ssrc, kind, addr)
            if session is None:
                return []
            if not session.joined:
                return self._dropped(Drop.NOT_JOINED)
            session.on_feedback(packet.sequence, size, now)
            return []
        if not isinstance(packet, Invitation):  # RL: noted, nothing to do for MIDI rates
            return []
        command = packet.command
        if command == packets.INVITATION:
            return self._on_invitation(packet, kind, addr, now, size)
        if command in (packets.ACCEPT, packets.REJECT):
            return self._on_answer(packet, kind, addr, now)
        # BY: the peer ends the session (it may send one per port; the second is stray).
        session = self._by_peer.get(packet.ssrc)
        if session is None:
            pending = self._by_token.get(packet.token)
            if pending is None or addr[0] != pending.control_addr[0]:
                return self._dropped(Drop.UNKNOWN_SESSION)
            session = pending
        elif addr not in (session.control_addr, session.data_addr):
            return self._dropped(Drop.WRONG_ADDRESS)
        if packet.token != session.token:
            return self._dropped(Drop.WRONG_TOKEN)
        self._forget(session)
        return self._ended(session, LeaveReason.BYE, bye=False)

    def _on_answer(
        self, packet: Invitation, kind: PortKind, addr: Address, now: float
    ) -> list[Event]:
        """OK or NO to one of our invitations: only from the remote we invited."""
        pending = self._by_token.get(packet.token)
        if pending is None:
            return self._dropped(Drop.UNKNOWN_SESSION)
        expected = pending.control_addr
        if kind is PortKind.DATA:
            expected = data_port_of(expected)
        if addr != expected:
            return self._dropped(Drop.WRONG_ADDRESS)
        if packet.command == packets.REJECT:
            del self._by_token[packet.token]
            return self._ended(pending, LeaveReason.REJECTED, bye=False)
        self._touched.append(pending)
        if not pending.on_accept(packet, kind, addr, now):
            return []
        del self._by_token[packet.token]
        if self._by_peer.get(pending.peer_ssrc) not in (None, pending):
            self._forget(pending)  # the remote reused a live SSRC of this port
            return self._ended(pending, LeaveReason.REJECTED, bye=True)
        self._by_peer[pending.peer_ssrc] = pending
        return []

    def _on_invitation(
        self, packet: Invitation, kind: PortKind, addr: Address, now: float, size: int
    ) -> list[Event]:
        session = self._by_peer.get(packet.ssrc)
        if session is not None:
            return self._on_repeat_invitation(session, packet, kind, addr, now, size)
        if kind is PortKind.DATA:  # a data-port IN must follow a control-port one
            return self._refuse(packet, kind, addr, now, Drop.DATA_IN_FIRST)
        if not self.accept:
            return self._refuse(packet, kind, addr, now, Drop.CLOSED)
        source = source_key(addr[0])
        from_source = [s for s in self.sessions if s.source == source]
        if len(from_source) >= self.limits.sessions_per_source:
            return self._refuse(packet, kind, addr, now, Drop.SOURCE_FULL)
        if sum(1 for s in from_source if s.pending) >= self.limits.pending_per_source:
            return self._refuse(packet, kind, addr, now, Drop.PENDING_FULL)
        if not self.has_room():
            return self._refuse(packet, kind, addr, now, Drop.PORT_FULL)
        events = self._make_room(now)
        session = self._new_session(Role.RESPONDER, self.name, packet.token, addr, now)
        session.invited_by(packet.ssrc)
        self._by_peer[packet.ssrc] = session
        session.on_invitation(packet, kind, addr, now, size)
        return events

    def _on_repeat_invitation(
        self,
        session: Session,
        packet: Invitation,
        kind: PortKind,
        addr: Address,
        now: float,
        size: int,
    ) -> list[Event]:
        """An IN for an SSRC we know: the data-port half of the handshake, or a
        retransmission. Anything else (another token, another address) is refused and
        never replaces or redirects the live session."""
        if session.role is Role.INITIATOR or packet.token != session.token:
            drop = Drop.SSRC_IN_USE if kind is PortKind.CONTROL else Drop.WRONG_TOKEN
            return self._refuse(packet, kind, addr, now, drop)
        if kind is PortKind.CONTROL:
            if addr != session.control_addr:
                return self._refuse(packet, kind, addr, now, Drop.SSRC_IN_USE)
        elif session.data_addr is not None:
            if addr != session.data_addr:
                return self._refuse(packet, kind, addr, now, Drop.SSRC_IN_USE)
        elif addr[0] != session.control_addr[0]:
            return self._refuse(packet, kind, addr, now, Drop.WRONG_ADDRESS)
        self._touched.append(session)
        session.on_invitation(packet, kind, addr, now, size)
        return []

    def _refuse(
        self, packet: Invitation, kind: PortKind, addr: Address, now: float, reason: Drop
    ) -> list[Event]:
        """NO, rate-limited per source IP; never longer than the IN (no name)."""
        self.counters.drop(reason)
        if not self._replies.allow(source_key(addr[0]), now):
            self.counters.drop(Drop.REPLY_LIMITED)
            return []
        reply = Invitation(packets.REJECT, packet.token, 0, None)
        self._outbox.append((kind, packets.encode_invitation(reply), addr))
        return []

    def _make_room(self, now: float) -> list[Event]:
        """At the half-open limit an unfinished invitation, drawn at random, makes way.
        Not the oldest, nor the one that got least far: a spoofer can send both
        halves of the handshake for free and at any rate, so either rule would always
        pick the real player, whose next step is a round trip away. At random, each
        flood invitation costs a real one only its share of the table."""
        waiting = [s for s in self._by_peer.values() if s.pending and s.role is Role.RESPONDER]
        events: list[Event] = []
        while len(waiting) >= self.limits.max_pending:
            victim = waiting.pop(self._rng.randrange(len(waiting)))
            self._forget(victim)
            self.counters.drop(Drop.PENDING_EVICTED)
            events += self._ended(victim, LeaveReason.EVICTED, bye=False)
        return events

    # -- output ----------------------------------------------------------------

    def connect(self, control_addr: Address, now: float, *, name: str | None = None) -> Session:
        """Invite a remote responder (initiator role); PeerJoined or PeerLeft follows.
        ``name``: the session name to introduce ourselves with (default: the table's)."""
        token = self._rng.getrandbits(32)
        while token in self._by_token:
            token = self._rng.getrandbits(32)
        session = self._new_session(Role.INITIATOR, name or self.name, token, control_addr, now)
        self._by_token[token] = session
        session.tick(now)
        return session

    def _new_session(
        self, role: Role, name: str, token: int, control_addr: Address, now: float
    ) -> Session:
        """A session with fresh random SSRC, public id, CK offset and sequence number,
        findable by its public id; the caller files it by peer SSRC or token."""
        session = Session(
            role=role,
            local_ssrc=self._new_ssrc(),
            local_name=name,
            token=token,
            control_addr=control_addr,
            now=now,
            settings=self.settings,
            limits=self.limits,
            counters=self.counters,
            public_id=self._new_public_id(),
            clock_offset=self._rng.getrandbits(32),
            initial_sequence=self._rng.getrandbits(16),
            admit=self.has_room,
        )
        session.on_earlier = self._file
        self._file(session, session.next_deadline())
        self._by_public_id[session.public_id] = session
        self._touched.append(session)
        return session

    def send(
        self,
        sessions: Sequence[Session],
        sections: Sequence[Section | bytes],
        now: float,
        source: str | None = None,
    ) -> None:
        """Send encoded command sections (see ``commands.encode_sections``; plain bytes
        carry nothing journalled), one RTP packet each, to the sessions that may be sent
        MIDI (``routable``); ``source``: the public id of the session of this port whose
        MIDI it is (None: another port's, or the hub's own). Each packet's journal is
        encoded once per stream journal (``recovery.share``), not once per receiver, and
        each receiver's copy is made once from a shared buffer (``Session.send_packet``)."""
        journalled: list[Session] = []
        cursors: list[JournalCursor] = []
        plain: list[Session] = []
        for session in sessions:
            if session.routable and session.data_addr is not None:
                cursor = session.journal
                if cursor is None:
                    plain.append(session)
                else:
                    journalled.append(session)
                    cursors.append(cursor)
        self._touched += journalled
        self._touched += plain
        groups = share(cursors, source) if cursors else ()
        everyone = range(len(journalled))
        counters = self.counters
        for section in sections:
            data, carried = (section, ()) if isinstance(section, bytes) else section
            head = RTP_HEADER_ROOM + data  # the RTP header is each receiver's to write
            at = len(head)  # where the journal goes
            for stream, members in groups:
                trimmed = stream.trimmed
                journal = stream.journal(MAX_DATAGRAM - at, now)
                if stream.trimmed != trimmed:
                    counters.journals_trimmed += 1
                number = stream.record(carried, now)
                if journal is None:
                    packet = bytearray(head)
                else:
                    packet = _BUFFER.join((head, journal))  # one allocation
                    packet[RTP_HEADER] |= FLAG_J
                for i in everyone if members is None else members:
                    journalled[i].send_packet(packet, at, number, now)
            if plain:
                packet = bytearray(head)
                for session in plain:
                    session.send_packet(packet, at, -1, now)

    def sync_clock(self, session: Session, now: float) -> None:
        """Start a clock-sync exchange with ``session`` now, not at its next turn."""
        self._touched.append(session)
        session.sync_clock(now)

    def tick(self, now: float) -> list[Event]:
        """The timers due at ``now``: only the sessions filed for ``now`` or earlier are
        visited; each is filed again at its next deadline."""
        events: list[Event] = []
        timers = self._timers
        due: list[Session] = []
        while timers and timers[0][0] <= now:
            when, _, session = heapq.heappop(timers)
            if when == session.scheduled and session.state is not State.CLOSED:
                session.scheduled = TICKING  # what it changes now, it is filed for after
                due.append(session)
        for session in due:
            deadline = session.next_deadline()
            if now >= deadline:
                self._touched.append(session)
                released = session.release_unrepaired(now)
                if released is not None:
                    events.append(released)
                reason = session.tick(now)
                if reason is not None:
                    if reason is LeaveReason.HANDSHAKE_TIMEOUT:
                        self.counters.drop(Drop.HANDSHAKE_TIMEOUT)
                    self._forget(session)
                    events += self._ended(session, reason, bye=reason is LeaveReason.TIMEOUT)
                    continue
                deadline = session.next_deadline()
            self._file(session, deadline)
        return events

    def disconnect(self, session: Session, reason: LeaveReason = LeaveReason.CLOSED) -> list[Event]:
        """End one session from our side, with BY."""
        if session.state is State.CLOSED:
            return []
        self._forget(session)
        return self._ended(session, reason, bye=True)

    def close(self, reason: LeaveReason = LeaveReason.CLOSED) -> list[Event]:
        """End every session with BY (shutdown, port removed)."""
        events: list[Event] = []
        for session in self.sessions:
            events += self.disconnect(session, reason)
        return events

    def _forget(self, session: Session) -> None:
        self._established = None
        if self._by_peer.get(session.peer_ssrc) is session:
            del self._by_peer[session.peer_ssrc]
        if self._by_token.get(session.token) is session:
            del self._by_token[session.token]

    def _ended(self, session: Session, reason: LeaveReason, *, bye: bool) -> list[Event]:
        """Close ``session``; PeerLeft unless it was a stranger's invitation that never
        became a participant (nothing to release, nothing worth a log line)."""
        self._established = None
        if bye:
            self._touched.append(session)  # its BYs leave after it is forgotten
            session.send_bye()
        session.close()
        self._local_ssrcs.discard(session.local_ssrc)
        self._by_public_id.pop(session.public_id, None)
        joined = session.joined_at is not None
        if not joined and session.role is Role.RESPONDER:
            return []
        return [PeerLeft(session.who, reason, joined, tuple(session.held.release()))]

    def _new_public_id(self) -> str:
        """An id for the API: random, so it says nothing about SSRC, token or order."""
        while True:
            public_id = f"{self._rng.getrandbits(32):08x}"
            if public_id not in self._by_public_id:
                return public_id

    def _new_ssrc(self) -> int:
        while True:
            ssrc = self._rng.getrandbits(32)
            if ssrc and ssrc not in self._local_ssrcs:
                self._local_ssrcs.add(ssrc)
                return ssrc
