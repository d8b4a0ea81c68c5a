"""A Network MIDI 2.0 host on one UDP port: every client session on it, keyed by the
client's address, and the answers to strangers.

Sans-IO like ``midihub.rtp.table``: ``receive``/``tick`` return events, the datagrams
they cause wait in ``datagrams_to_send()``, ``next_deadline()`` says when to tick.
Timers: each session is filed in a heap by its deadline (as in rtp's table); a session
the host handled since is filed again when the heap is next asked, so ``next_deadline``
looks at the top and ``tick`` visits only the sessions due, whatever their number.

Every datagram comes from someone we don't know. A stranger (an address with no
session) gets at most one reply datagram per datagram, never larger than what it
sent, and only within its IP's reply budget (rtp's ``SourceLimiter``); invitations
that never complete are capped per port (``max_pending``, the oldest evicted) and per
source IP, and expire after ``HANDSHAKE_TIMEOUT``.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import random
from collections.abc import Sequence

from midihub.midi2 import commands as wire
from midihub.midi2.commands import ByeReason, Capability, Code, CommandPacket, NakReason
from midihub.midi2.events import Address, Departed, Invited, Midi2Event, UmpMessage
from midihub.midi2.session import Count, Midi2Session, Midi2Settings, State
from midihub.rtp.errors import LocalProtocolError, ProtocolError
from midihub.rtp.limits import Limits, SourceLimiter, source_key

# Commands that need a session: from a stranger they get Bye 0x05 (session not
# established), as the specification asks (Microsoft's host follows it).
_NEEDS_SESSION = frozenset(
    {
        Code.UMP_DATA,
        Code.RETRANSMIT_REQUEST,
        Code.RETRANSMIT_ERROR,
        Code.SESSION_RESET,
        Code.SESSION_RESET_REPLY,
    }
)
_IGNORED_FROM_STRANGERS = frozenset(
    {
        Code.BYE_REPLY,
        Code.NAK,
        Code.PING_REPLY,
        Code.ACCEPTED,
        Code.PENDING,
        Code.AUTH_REQUIRED,
        Code.USER_AUTH_REQUIRED,
    }
)


class Midi2Host:
    """Sessions on one port. The caller answers each ``Invited`` with ``accept`` or
    ``refuse`` (the hub decides admission: ``max_participants``, per-source caps)."""

    def __init__(
        self,
        settings: Midi2Settings,
        rng: random.Random,
        now: float,
        *,
        limits: Limits | None = None,
    ) -> None:
        self.settings = settings
        self.counters: collections.Counter[str] = collections.Counter()
        self._rng = rng
        self._sessions: dict[Address, Midi2Session] = {}
        self._outbox: list[tuple[bytes, Address]] = []
        self._touched: dict[int, Midi2Session] = {}  # by id: one address may have two
        self._moved: dict[int, Midi2Session] = {}  # handled since: its deadline may differ
        self._timers: list[tuple[float, int, Midi2Session]] = []  # stale entries skipped
        self._order = itertools.count()
        limits = limits or Limits()
        self._replies = SourceLimiter(limits.reject_rate, limits.reject_burst)
        self._now = now

    def configure(self, settings: Midi2Settings, now: float) -> None:
        """A reload, live: every session takes the new settings (name, FEC depth,
        history, timers; a challenged client's digest is checked against the new secret
        or users). Lowering a cap turns newcomers away and drops no one."""
        self.settings = settings
        for session in self._sessions.values():
            session.configure(settings)
            self._moved[id(session)] = session

    # -- queries ---------------------------------------------------------------------

    def session(self, addr: Address) -> Midi2Session | None:
        return self._sessions.get(addr)

    @property
    def sessions(self) -> list[Midi2Session]:
        """Every live session, joined or not."""
        return list(self._sessions.values())

    @property
    def joined(self) -> list[Midi2Session]:
        return [s for s in self._sessions.values() if s.joined]

    @property
    def pending(self) -> int:
        return sum(1 for s in self._sessions.values() if s.pending)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        touched, self._touched = self._touched, {}
        for session in touched.values():
            out += [(data, session.addr) for data in session.datagrams_to_send()]
        self.counters[Count.SENT] += len(out)
        return out

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do: the heap's earliest live entry."""
        self._refile()
        timers = self._timers
        while timers:
            when, _, session = timers[0]
            if self._filed(session, when):
                return when
            heapq.heappop(timers)
        return None

    def _touch(self, session: Midi2Session) -> None:
        """``session`` has something to send, and perhaps a timer moved."""
        self._touched[id(session)] = session
        self._moved[id(session)] = session

    def _filed(self, session: Midi2Session, when: float) -> bool:
        """True if a heap entry is the session's current one (not stale)."""
        return session.scheduled == when and self._sessions.get(session.addr) is session

    def _refile(self) -> None:
        """File again each session handled since the last look (a stale entry stays
        behind until it reaches the top, or the heap is compacted)."""
        moved, self._moved = self._moved, {}
        timers = self._timers
        for session in moved.values():
            when = session.next_deadline()
            if when is None or when == session.scheduled:
                continue
            if self._sessions.get(session.addr) is not session:
                continue
            session.scheduled = when
            heapq.heappush(timers, (when, next(self._order), session))
        if len(timers) > 2 * len(self._sessions) + 64:
            timers[:] = [e for e in timers if self._filed(e[2], e[0])]
            heapq.heapify(timers)

    # -- input -----------------------------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float) -> list[Midi2Event]:
        """One datagram from ``addr``. Never raises on bad bytes: they are counted."""
        self.counters[Count.RECEIVED] += 1
        try:
            decoded = wire.decode_datagram(data)
        except ProtocolError:
            self.counters[Count.NOT_MIDI2] += 1
            return []
        session = self._sessions.get(addr)
        if session is None:
            return self._from_stranger(decoded, len(data), addr, now)
        self._touch(session)
        events = session.receive(decoded, len(data), now)
        self._forget_if_closed(session)
        return events

    def _from_stranger(
        self, decoded: wire.Decoded, size: int, addr: Address, now: float
    ) -> list[Midi2Event]:
        """A datagram from an address without a session. With an Invitation in it, the
        rest is ignored: the new session's replies spend all of its size."""
        for command in decoded.commands:
            if command.code == Code.INVITATION:
                ignored = len(decoded.commands) - 1 + (decoded.truncated is not None)
                self.counters[Count.UNEXPECTED] += ignored
                return self._on_invitation(command, size, addr, now)
        replies: list[CommandPacket] = []
        said_bye = False  # one Bye 0x05 per datagram, however many commands need a session
        for command in decoded.commands:
            code = command.code
            self.counters[Count.STRANGER] += 1
            if code in _NEEDS_SESSION:
                if not said_bye:
                    replies.append(wire.bye(ByeReason.SESSION_NOT_ESTABLISHED))
                    said_bye = True
            elif code == Code.PING:
                try:
                    replies.append(wire.ping(Code.PING_REPLY, wire.word_of(command)))
                except ProtocolError:
                    replies.append(wire.nak(NakReason.MALFORMED, command.header))
            elif code == Code.BYE:
                replies.append(wire.empty(Code.BYE_REPLY))
            elif code in (Code.INVITATION_AUTH, Code.INVITATION_USER_AUTH):
                replies.append(wire.nak(NakReason.NOT_EXPECTED, command.header))
            elif code not in _IGNORED_FROM_STRANGERS and code not in wire.NAK_CODES:
                replies.append(wire.nak(NakReason.NOT_SUPPORTED, command.header))
        if decoded.truncated is not None:
            self.counters[Count.TRUNCATED] += 1
            replies.append(wire.nak(NakReason.MALFORMED, decoded.truncated))
        if replies:
            self._reply(replies, size, addr, now)
        return []

    def _reply(self, replies: list[CommandPacket], size: int, addr: Address, now: float) -> None:
        """One datagram to a stranger: no larger than the ``size`` it sent (what does not
        fit is left out), within its IP's reply budget."""
        kept: list[CommandPacket] = []
        used = 4
        for command in replies:
            if used + command.size > size:
                self.counters[Count.REPLY_TOO_LARGE] += 1
                continue
            kept.append(command)
            used += command.size
        if not kept:
            return
        if not self._replies.allow(source_key(addr[0] if addr else ""), now):
            self.counters[Count.REPLY_LIMITED] += 1
            return
        self._outbox.append((wire.encode_datagram(kept), addr))

    def _on_invitation(
        self, command: CommandPacket, size: int, addr: Address, now: float
    ) -> list[Midi2Event]:
        try:
            identity = wire.decode_identity(command)
        except ProtocolError:
            self.counters[Count.MALFORMED] += 1
            self._reply([wire.nak(NakReason.MALFORMED, command.header)], size, addr, now)
            return []
        self.counters[Count.INVITATIONS] += 1
        settings = self.settings
        code = _challenge_for(settings, identity.capabilities)
        source = source_key(addr[0] if addr else "")
        pending = [s for s in self._sessions.values() if s.pending]
        if sum(1 for s in pending if s.source == source) >= settings.pending_per_source:
            self.counters[Count.PENDING_FULL] += 1
            return []
        if not self._replies.allow(source, now):  # one answer per invitation, budgeted
            self.counters[Count.REPLY_LIMITED] += 1
            return []
        if len(pending) >= settings.max_pending:
            oldest = min(pending, key=lambda s: s.created)
            self.counters[Count.PENDING_EVICTED] += 1
            self._drop(oldest)  # no Bye: it may be a spoofed address
        session = Midi2Session(
            addr,
            identity,
            settings,
            rng=self._rng,
            counters=self.counters,
            now=now,
            challenge=code,
            credit=size,
        )
        self._sessions[addr] = session
        self._touch(session)
        return [] if code else [Invited(addr, identity.name, identity.product_id)]

    # -- the caller's answers and output ---------------------------------------------

    def _invited(self, addr: Address) -> Midi2Session:
        session = self._sessions.get(addr)
        if session is None or session.state is not State.INVITED:
            raise LocalProtocolError(f"no invitation from {addr!r} awaits an answer")
        return session

    def accept(self, addr: Address, now: float) -> None:
        """Reply Accepted to an ``Invited`` client: it joins."""
        session = self._invited(addr)
        self._touch(session)
        session.accept(now)

    def refuse(self, addr: Address, reason: int, now: float) -> None:
        """Bye(``reason``) to an ``Invited`` client, e.g. 0x40 too many sessions."""
        session = self._invited(addr)
        self.counters[Count.REFUSED] += 1
        self._touch(session)
        session.close(reason)
        self._forget_if_closed(session)

    def send(self, addr: Address, messages: Sequence[UmpMessage], now: float) -> None:
        """UMP Data to a joined client (numbered, with FEC, kept for retransmission)."""
        session = self._sessions.get(addr)
        if session is None or not session.joined:
            self.counters[Count.SEND_UNKNOWN] += 1
            return
        self._touch(session)
        session.send(messages, now)

    def bye(self, addr: Address, reason: int, now: float) -> list[Midi2Event]:
        """The hub ends a session (0x01 kicked, 0x02 shutting down...): Bye, and the
        ``Departed`` for a joined one (empty if there was no such session)."""
        session = self._sessions.get(addr)
        if session is None:
            return []
        joined = session.joined
        self._touch(session)
        session.close(reason)
        self._forget_if_closed(session)
        return [Departed(addr, reason, by_client=False)] if joined else []

    def bye_all(self, reason: int, now: float) -> list[Midi2Event]:
        """Bye to every session, joined or pending (0x02 when the hub stops or the port
        is removed): the ``Departed`` of the joined ones."""
        events: list[Midi2Event] = []
        for addr in list(self._sessions):
            events += self.bye(addr, reason, now)
        return events

    def tick(self, now: float) -> list[Midi2Event]:
        """The timers due at ``now``: only the sessions filed for ``now`` or earlier."""
        self._refile()
        timers = self._timers
        due: list[Midi2Session] = []
        while timers and timers[0][0] <= now:
            when, _, session = heapq.heappop(timers)
            if self._filed(session, when):
                session.scheduled = None
                due.append(session)
        events: list[Midi2Event] = []
        for session in due:
            self._moved[id(session)] = session  # filed again at its next deadline
            deadline = session.next_deadline()
            if deadline is None or deadline > now:
                continue
            self._touch(session)
            events += session.tick(now)
            self._forget_if_closed(session)
        return events

    def _forget_if_closed(self, session: Midi2Session) -> None:
        if not session.joined and not session.pending:
            self._drop(session)

    def _drop(self, session: Midi2Session) -> None:
        if self._sessions.get(session.addr) is session:
            del self._sessions[session.addr]


def _challenge_for(settings: Midi2Settings, capabilities: int) -> int:
    """0: no authentication needed; else the challenge to send, 0x12 or 0x13. The
    declared capabilities pick between the two when the port has both; a client
    declaring neither (or only the other) is challenged all the same, as Zephyr does:
    pymidi2 without credentials expects the challenge (it then says a secret is needed)
    and ignores a Bye, so Bye 0x45 (no matching method) is never the answer."""
    if not settings.needs_auth:
        return 0
    if settings.secret is None:
        return Code.USER_AUTH_REQUIRED
    user_only = capabilities & Capability.USER_AUTH and not capabilities & Capability.AUTH
    return Code.USER_AUTH_REQUIRED if user_only and settings.users else Code.AUTH_REQUIRED
