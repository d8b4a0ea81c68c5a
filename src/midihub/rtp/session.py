"""The AppleMIDI session state machine for one remote peer, in either role.

Sans-IO: no sockets, no clock. Every method takes ``now`` (seconds, any monotonic
origin); the datagrams it wants sent wait in its own outbox until
``datagrams_to_send()``, and ``next_deadline()`` says when to call ``tick`` next (the
shape of aioquic's connection). See docs/protocol.md for the packet flows.

Its table files it in a timer heap by that deadline, so a table never scans its
sessions for one: whenever the session's state changes in a way that may bring a timer
forward, it tells the table (``on_earlier``), and only then; a timer that moves later
(a guard pushed back by the next packet, ``last_heard`` by the next datagram) leaves
the filed time early, which costs one look when it comes (the table then files the
session again at its real deadline).

A session joins (``PeerJoined``) only once the peer has proved it receives at its
address: it completed a clock-sync exchange echoing a timestamp we chose, and then only
if its port has a place for it (``admit``: the table's one admission rule). Until then
it gets no MIDI, and what we send it never exceeds what it sent us, so a spoofed
invitation cannot turn the hub into a reflector (docs/security.md).
"""

from __future__ import annotations

import enum
import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from midihub.midi.held import NoteState
from midihub.rtp import packets
from midihub.rtp.commands import FLAG_J, Command
from midihub.rtp.errors import LocalProtocolError, ProtocolError
from midihub.rtp.events import (
    Event,
    LatencyMeasured,
    LeaveReason,
    MidiReceived,
    NotesReleased,
    PacketsLost,
    PeerJoined,
    Who,
)
from midihub.rtp.intake import Intake
from midihub.rtp.limits import Counters, Drop, Limits, source_key
from midihub.rtp.packets import PAYLOAD_TYPE, RTP_VERSION_BITS, Clock, Invitation, RtpHeader
from midihub.rtp.recovery import (
    MAX_DATAGRAM,
    RTP_HEADER,
    Journal,
    JournalCursor,
    decode_journal,
    missed_before_first,
)
from midihub.rtp.recovery import repair as recovery_repair
from midihub.rtp.sequence import SequenceTracker
from midihub.rtp.unrepaired import UnrepairedNotes

Address = tuple[Any, ...]
"""A socket address as asyncio gives it: ``(host, port)`` or ``(host, port, flow, scope)``."""


class PortKind(enum.IntEnum):
    CONTROL = 0
    DATA = 1


Datagram = tuple[PortKind, bytes, Address]

CLOCK_RATE: Final = 10_000  # AppleMIDI: timestamps in 100 µs units
INVITE_RETRY: Final = 1.5
INVITE_ATTEMPTS: Final = 12
CK_BURST_INTERVAL: Final = 1.5
CK_BURST_COUNT: Final = 3
CK_ANSWER_WAIT: Final = 5.0
# Guard packets (RFC 4696 §7.1): after a burst of MIDI, journal-only packets at growing
# intervals, so a receiver that lost the burst's last packet still repairs (a lost
# final NoteOff has no later packet to carry its journal otherwise).
# They stop as soon as RS acknowledges everything; for a receiver that never sends
# RS they go on (at most once a second) up to GUARD_COUNT: about 12 s after a burst.
GUARD_FIRST: Final = 0.05
GUARD_MAX_INTERVAL: Final = 1.0
GUARD_COUNT: Final = 16
EMPTY_LIST: Final = b"\x00"  # a command section with no commands (guard packets)
CLOCK_SIZE: Final = 36
TIMESTAMP_MASK: Final = 0xFFFF_FFFF  # some peers echo only the low 32 bits of a CK stamp
ECHOES_KEPT: Final = 4  # our recent CK1 stamps a CK2 may echo
# Receiver feedback (RS) about once a second while the peer sends, so a peer that
# trims its journal on RS (RFC 4696 §6) keeps it small.
RS_INTERVAL: Final = 1.0
MAX_RTT: Final = 10.0  # seconds; a CK answer claiming more is not a measurement
_RTP: Final = struct.Struct("!BBHII")  # written into a shared packet buffer per receiver
_CHECKPOINT: Final = struct.Struct("!H")
_RANDOM: Final = random.SystemRandom()  # initial sequence number (RFC 3550 §5.1)
TICKING: Final = -math.inf  # ``scheduled`` while its table ticks it (it files it after)


class Role(enum.Enum):
    RESPONDER = "responder"
    INITIATOR = "initiator"


class State(enum.Enum):
    """Where a session is; the only moves are those in ``TRANSITIONS``."""

    INVITING_CONTROL = "inviting-control"  # initiator: IN sent to the control port
    INVITING_DATA = "inviting-data"  # initiator: IN sent to the data port
    HALF_OPEN = "half-open"  # responder: control IN accepted, data IN awaited
    ESTABLISHED = "established"
    CLOSED = "closed"


TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    # initiator: IN on the control port, then on the data port, then up
    State.INVITING_CONTROL: frozenset({State.INVITING_DATA, State.CLOSED}),
    State.INVITING_DATA: frozenset({State.ESTABLISHED, State.CLOSED}),
    # responder: the control-port IN accepted, the data-port IN completes it
    State.HALF_OPEN: frozenset({State.ESTABLISHED, State.CLOSED}),
    # joining (the clock-sync proof) happens within ESTABLISHED: see ``joined``
    State.ESTABLISHED: frozenset({State.CLOSED}),
    State.CLOSED: frozenset({State.CLOSED}),
}


@dataclass(slots=True)
class SessionSettings:
    """Per-session knobs, shared by all sessions of a table: timers and journals."""

    timeout: float = 30.0
    ck_interval: float = 10.0
    journal: bool = True  # send a recovery journal with every data packet


class Session:
    """One peer. Created by ``SessionTable`` (responder) or ``SessionTable.connect`` (initiator)."""

    def __init__(
        self,
        *,
        role: Role,
        local_ssrc: int,
        local_name: str,
        token: int,
        control_addr: Address,
        now: float,
        settings: SessionSettings,
        limits: Limits | None = None,
        counters: Counters | None = None,
        public_id: str = "",
        clock_offset: int = 0,
        initial_sequence: int | None = None,
        admit: Callable[[], bool] | None = None,
    ) -> None:
        self.role = role
        self.local_ssrc = local_ssrc
        self.local_name = local_name
        self.token = token
        self.peer_ssrc = 0
        self.peer_name = ""
        self.control_addr = control_addr
        self.source = source_key(control_addr[0])  # whom per-source limits count it against
        self.data_addr: Address | None = None
        self.state = State.INVITING_CONTROL if role is Role.INITIATOR else State.HALF_OPEN
        self.public_id = public_id  # what the API shows; the SSRC and token stay private
        self.created = now
        self.joined_at: float | None = None  # when the peer first proved its address
        self.proven_at: float | None = None  # its latest completed clock sync
        self.routable = False  # proven recently enough to be sent MIDI
        self._pending_since = now  # for the handshake timeout (initiator: from establish)
        self._credit = 0  # bytes we may still send before the peer proves its address
        self._echoes: list[int] = []  # our CK1 stamps (ts2) a CK2 may echo
        self._limits = limits or Limits()
        self._counters = counters or Counters()
        self.last_heard = now
        self.rtt: float | None = None
        self.packets_received = 0
        self.packets_lost = 0
        self._settings = settings
        self._outbox: list[Datagram] = []
        self._origin = now  # this session's own time base for CK and RTP timestamps
        self._clock_offset = clock_offset  # random: our CK stamps are not guessable
        self._seq_out = _RANDOM.getrandbits(16) if initial_sequence is None else initial_sequence
        self.sequence = SequenceTracker()
        self.held = NoteState()  # what the peer holds, by what it sent (and journals)
        self._rs_due: float | None = None
        self.intake = Intake(self._limits, self._counters, now)  # SysEx caps, as for guests
        # Asked when the peer first proves its address: is there a place for it?
        self._admit = admit
        self.refused = False  # it proved its address on a full port: the table ends it
        self._release_after: float | None = None  # see ``release_after_loss``
        self._unrepaired = UnrepairedNotes()
        self._invite_attempts = 0
        self._next_invite = now
        self._ck_pending: int | None = None  # ts1 of our unanswered CK0
        self._ck_sent_at = 0.0
        self._ck_done = 0
        self._next_ck = now
        self.feedback_sequence: int | None = None  # last RS from the peer
        self.journal = JournalCursor(public_id) if settings.journal else None
        self._guard_at: float | None = None
        self._guards = 0
        self._who: Who | None = None  # fixed when it joins (its name and address are known)
        # Its table's timer heap: when the session is filed for (never later than
        # ``next_deadline()``; inf: not filed) and whom to tell when a timer may come
        # due before that. Both are the table's to set.
        self.scheduled = math.inf
        self.on_earlier: Callable[[Session, float], None] | None = None

    def __repr__(self) -> str:
        return (
            f"<Session {self.peer_name!r} {self.role.value} {self.state.value} "
            f"ssrc={self.local_ssrc:08x}/{self.peer_ssrc:08x}>"
        )

    transport: Final = "rtp"

    @property
    def name(self) -> str:
        return self.peer_name

    @property
    def address(self) -> Address:
        return self.control_addr

    @property
    def who(self) -> Who:
        who = self._who
        if who is None:
            who = Who(self.public_id, self.peer_name, self.control_addr, self.transport)
            if self.joined_at is not None:
                self._who = who
        return who

    @property
    def established(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def joined(self) -> bool:
        """Handshake done and address proven: a participant (it may since have gone stale)."""
        return self.joined_at is not None and self.state is State.ESTABLISHED

    @property
    def pending(self) -> bool:
        """Invited but not (yet) a participant: what half-open limits count."""
        return self.joined_at is None and self.state is not State.CLOSED

    def datagrams_to_send(self) -> list[Datagram]:
        """What this session wants sent, in order; each datagram is handed out once."""
        out, self._outbox = self._outbox, []
        return out

    def timestamp(self, now: float) -> int:
        """``now`` on this session's clock, in 100 µs units."""
        return int((now - self._origin) * CLOCK_RATE) + self._clock_offset

    def heard(self, size: int, now: float) -> None:
        """A datagram from the peer's own address: it lives, and until it has proved
        that address, it earns the right to as many bytes in reply."""
        self.last_heard = now
        if self.joined_at is None:
            self._credit += size

    # -- session packets -------------------------------------------------------

    def invited_by(self, ssrc: int) -> None:
        """Responder: the SSRC of the peer whose control-port IN created this session."""
        self.peer_ssrc = ssrc

    def on_invitation(
        self, packet: Invitation, kind: PortKind, addr: Address, now: float, size: int
    ) -> None:
        """Responder side of IN (the table checked address and token). The OK is never
        longer than the IN it answers: our name is cut to fit."""
        self.heard(size, now)
        if packet.name is not None and not self.peer_name:
            self.peer_name = packet.name
        self._reply(packets.ACCEPT, packet.token, kind, addr, size)
        if kind is PortKind.DATA:
            self.data_addr = addr
            if self.state is State.HALF_OPEN:
                self._establish(now)
                self.reschedule()

    def on_accept(self, packet: Invitation, kind: PortKind, addr: Address, now: float) -> bool:
        """Initiator side of OK. Returns True when this OK completed the handshake."""
        self.last_heard = now
        if kind is PortKind.CONTROL and self.state is State.INVITING_CONTROL:
            self.peer_ssrc = packet.ssrc
            self.peer_name = packet.name or self.peer_name
            self.control_addr = addr
            self._move(State.INVITING_DATA)
            self._invite_attempts = 0
            self._send_invitation(now)
            self.reschedule()
            return False
        if kind is PortKind.DATA and self.state is State.INVITING_DATA:
            self.data_addr = addr
            self._establish(now)
            self.reschedule()
            return True
        return False

    def on_clock(
        self, packet: Clock, kind: PortKind, addr: Address, now: float, size: int = CLOCK_SIZE
    ) -> list[Event]:
        """A CK from the peer's address. An exchange that echoes a stamp we chose
        (ts1 of our CK0, or ts2 of our CK1) proves the peer receives at its address."""
        self.heard(size, now)
        ts1, ts2, _ = packet.timestamps
        local = self.timestamp(now)
        if packet.count == 0:  # the peer measures: answer at once (as long as its CK0)
            self._send(kind, packets.encode_clock(self.local_ssrc, 1, (ts1, local, 0)), addr)
            self._echoes = [*self._echoes[1 - ECHOES_KEPT :], local & TIMESTAMP_MASK]
            return []
        if packet.count == 1:  # the answer to our CK0
            pending = self._ck_pending
            if pending is None or ts1 & TIMESTAMP_MASK != pending & TIMESTAMP_MASK:
                self._counters.drop(Drop.CLOCK_UNMATCHED)
                return []
            self._send(kind, packets.encode_clock(self.local_ssrc, 2, (ts1, ts2, local)), addr)
            self._ck_pending = None
            return self._synced(local - pending, now)
        # CK2 ends the peer's exchange. Never start a CK0 here: two peers that
        # both did would ping-pong forever. It must echo the ts2 of one of our CK1s.
        echoed = ts2 & TIMESTAMP_MASK
        if echoed not in self._echoes:
            self._counters.drop(Drop.CLOCK_UNMATCHED)
            return []
        self._echoes.remove(echoed)
        # Modulo 2**32: between our CK1 and this CK2 the low 32 bits may have wrapped.
        return self._synced((local - echoed) & TIMESTAMP_MASK, now)

    def _synced(self, ticks: int, now: float) -> list[Event]:
        if not 0 <= ticks <= MAX_RTT * CLOCK_RATE:  # a bogus timestamp, not an RTT
            self._counters.drop(Drop.CLOCK_IMPLAUSIBLE)
            return []
        events: list[Event] = []
        if self.joined_at is None and self.state is State.ESTABLISHED:
            if self._admit is not None and not self._admit():
                self.proven_at = now  # it receives at its address: a BY may go there
                self.refused = True  # the table ends it at once: no timer to file
                return events
            self.joined_at = now
            events.append(PeerJoined(self.who))
        self.proven_at = now
        self.routable = self.state is State.ESTABLISHED
        self.rtt = ticks / CLOCK_RATE
        self._ck_done += 1
        self._schedule_clock_sync(now)
        self.reschedule()
        events.append(LatencyMeasured(self.who, self.rtt))
        return events

    # -- data ------------------------------------------------------------------

    def on_rtp(
        self,
        header: RtpHeader,
        commands: list[Command],
        now: float,
        journal: tuple[bytes, int, int] | None = None,
    ) -> list[Event]:
        """One decoded data packet: sequence accounting, SysEx reassembly, and after a
        loss the packet's recovery journal (``data``, start, end), decoded only then."""
        events: list[Event] = []
        repair: Journal | None = None
        sequence = self.sequence
        first, resyncs = sequence.expected is None, sequence.resyncs
        gap = sequence.accept(header.sequence)  # RFC 3550 A.1
        if sequence.resyncs != resyncs:
            self._counters.sequence_resyncs += 1
        if gap is None:  # a duplicate, a late packet, or a jump on probation
            return events
        if first and journal is not None:
            gap = missed_before_first(header.sequence, journal)
        if gap:
            self.packets_lost += gap
            self.intake.packet_lost()
            events.append(PacketsLost(self.who, gap))
            if journal is None and self._release_after is not None:
                self._unrepaired.lost(self.held, now + self._release_after)
                if self._unrepaired.deadline is not None:
                    self._earlier(self._unrepaired.deadline)
            if journal is not None:
                try:
                    repair = decode_journal(*journal)
                except ProtocolError:
                    self._counters.journals_unreadable += 1  # the commands are still good
        if self._rs_due is None:
            self._rs_due = rs_due = now + RS_INTERVAL
            if rs_due < self.scheduled:
                self._earlier(rs_due)
        self.packets_received += 1
        assembled = self.intake.accept(commands, now)
        repaired = 0
        if repair is not None:  # bring what we know it holds up to date first
            fixes = recovery_repair(repair, self.held)
            repaired = len(fixes)
            assembled = fixes + assembled
        if assembled:
            self.held.update(assembled)
            if self._unrepaired.deadline is not None:  # suspects since a loss: any news?
                self._unrepaired.heard(assembled)
            events.append(MidiReceived(self.who, assembled, repaired, repair))
        return events

    def release_after_loss(self, seconds: float | None) -> None:
        """``release_after`` for this sender (None: off): after a loss its packets
        carry no journal to repair from, so a note it held then and still holds
        ``seconds`` later is released (``release_unrepaired``)."""
        self._release_after = seconds
        if seconds is None:
            self._unrepaired.clear()

    def release_unrepaired(self, now: float) -> NotesReleased | None:
        """The notes whose ``release_after`` ran out since a loss without journal, as
        an event for the hub; what the peer holds is updated."""
        release = self._unrepaired.due(self.held, now)
        if not release:
            return None
        self._counters.loss_releases += len(release)
        return NotesReleased(self.who, tuple(release))

    def send_packet(self, packet: bytearray, journal_at: int, number: int, now: float) -> None:
        """One RTP packet of a forward, copied once from ``packet``: room for the RTP
        header, the command section and (from ``journal_at``, unless it is the end)
        the journal of this receiver's stream, shared by all its receivers. This
        receiver's sequence number, timestamp, SSRC and checkpoint are written in.
        ``number``: the packet's number in that stream journal. Only to a peer that
        proved its address recently (``routable``; the table checks)."""
        seq = self._seq_out
        timestamp = (int((now - self._origin) * CLOCK_RATE) + self._clock_offset) & 0xFFFF_FFFF
        _RTP.pack_into(packet, 0, RTP_VERSION_BITS, PAYLOAD_TYPE, seq, timestamp, self.local_ssrc)
        cursor = self.journal
        if cursor is None:
            data = bytes(packet)
        else:
            self._guard_at = guard = now + GUARD_FIRST
            self._guards = 0
            if guard < self.scheduled:  # later than its filed time: nothing to tell
                self._earlier(guard)
            if journal_at == len(packet):  # nothing to repair yet
                cursor.sent(number, seq)
                data = bytes(packet)
            elif cursor.stamp(packet, journal_at, number, seq):
                data = bytes(packet)
            else:  # its first packet: no history yet
                first = packet[:journal_at]
                first[RTP_HEADER] &= ~FLAG_J
                data = bytes(first)
        self._seq_out = (seq + 1) & 0xFFFF
        addr = self.data_addr
        assert addr is not None  # the table sends only to sessions with one
        self._outbox.append((PortKind.DATA, data, addr))

    def _send_guard(self, now: float) -> None:
        """A journal-only packet (RFC 4696 §7.1); the next at a growing interval."""
        cursor = self.journal
        self._guard_at = None
        if cursor is None or not self.routable or self.data_addr is None or cursor.acknowledged:
            return  # acknowledged by RS: nothing left to repair
        stream, checkpoint = cursor.stream, cursor.checkpoint
        if stream is None or checkpoint is None:
            return
        trimmed = stream.trimmed
        journal = stream.journal(MAX_DATAGRAM - RTP_HEADER - len(EMPTY_LIST), now)
        if stream.trimmed != trimmed:
            self._counters.journals_trimmed += 1
        if journal is None:
            return
        header = packets.encode_rtp_header(self._seq_out, self.timestamp(now), self.local_ssrc)
        journal = journal[:1] + _CHECKPOINT.pack(checkpoint) + journal[3:]
        self._seq_out = (self._seq_out + 1) & 0xFFFF
        self._outbox.append((PortKind.DATA, header + bytes((FLAG_J,)) + journal, self.data_addr))
        self._guards += 1
        if self._guards < GUARD_COUNT:
            self._guard_at = now + min(GUARD_FIRST * 2**self._guards, GUARD_MAX_INTERVAL)

    def _send_feedback(self) -> None:
        """RS on the control port: every packet up to the last in order has arrived."""
        self._rs_due = None
        last = self.sequence.last
        if last is not None:
            self._send(
                PortKind.CONTROL, packets.encode_feedback(self.local_ssrc, last), self.control_addr
            )

    # -- timers ----------------------------------------------------------------

    def tick(self, now: float) -> LeaveReason | None:
        """Retries, clock sync and the timeouts. Returns a reason to end, or None."""
        if self.state in (State.INVITING_CONTROL, State.INVITING_DATA):
            if now >= self._next_invite:
                if self._invite_attempts >= INVITE_ATTEMPTS:
                    return LeaveReason.NO_ANSWER
                self._send_invitation(now)
            return None
        if self.proven_at is None:
            if now >= self._pending_since + self._limits.handshake_timeout:
                return LeaveReason.HANDSHAKE_TIMEOUT
        else:
            if now >= self.last_heard + self._settings.timeout or now >= self.proven_at + max(
                self._settings.timeout, self._stale_after
            ):
                return LeaveReason.TIMEOUT
            if now >= self.proven_at + self._stale_after:
                self.routable = False  # it stopped answering clock syncs: no more MIDI
        if self.state is State.ESTABLISHED:
            if self._ck_pending is not None and now >= self._ck_sent_at + CK_ANSWER_WAIT:
                self._ck_pending = None  # lost; the schedule below sends another
            if self._ck_pending is None and now >= self._next_ck:
                if self._may_send(CLOCK_SIZE):
                    self.sync_clock(now)
                else:  # it has not earned a CK0 from us: let it start the exchange
                    self._next_ck = now + CK_BURST_INTERVAL
            if self._guard_at is not None and now >= self._guard_at:
                self._send_guard(now)
            if self._rs_due is not None and now >= self._rs_due:
                self._send_feedback()
        return None

    @property
    def _stale_after(self) -> float:
        return self._limits.proof_intervals * self._settings.ck_interval

    def next_deadline(self) -> float:
        """When ``tick`` next has something to do, computed from the timers (its table
        asks only when a filed time comes, or when told of an earlier one)."""
        if self.state in (State.INVITING_CONTROL, State.INVITING_DATA):
            return self._next_invite
        if self.proven_at is None:
            deadline = self._pending_since + self._limits.handshake_timeout
        else:
            stale = self._stale_after
            deadline = min(
                self.last_heard + self._settings.timeout,
                self.proven_at + max(self._settings.timeout, stale),
            )
            if self.routable:
                deadline = min(deadline, self.proven_at + stale)
        if self.state is State.ESTABLISHED:
            if self._unrepaired.deadline is not None:
                deadline = min(deadline, self._unrepaired.deadline)
            if self._guard_at is not None:
                deadline = min(deadline, self._guard_at)
            if self._rs_due is not None:
                deadline = min(deadline, self._rs_due)
            if self._ck_pending is not None:
                return min(deadline, self._ck_sent_at + CK_ANSWER_WAIT)
            return min(deadline, self._next_ck)
        return deadline

    def sync_clock(self, now: float) -> None:
        """Start a CK exchange now (CK0; the answer measures RTT and proves the peer)."""
        if self.data_addr is None:
            return
        ts1 = self.timestamp(now)
        self._ck_pending = ts1
        self._ck_sent_at = now
        self._schedule_clock_sync(now)
        self._send(
            PortKind.DATA, packets.encode_clock(self.local_ssrc, 0, (ts1, 0, 0)), self.data_addr
        )
        self.reschedule()

    def reschedule(self) -> None:
        """After a change that may bring any timer forward: tell the table if the
        deadline is now before the time the session is filed for."""
        if self.on_earlier is not None and self.scheduled != TICKING:
            self._earlier(self.next_deadline())

    def _earlier(self, when: float) -> None:
        """A timer is now due at ``when``: tell the table if that is before the time
        the session is filed for (a later one it finds out about when that comes)."""
        if when < self.scheduled and self.on_earlier is not None:
            self.on_earlier(self, when)

    def _schedule_clock_sync(self, now: float) -> None:
        """The initiator's opening burst keeps its pace; after it (and for any exchange
        the peer started) the next one is a full interval away."""
        burst = self.role is Role.INITIATOR and self._ck_done < CK_BURST_COUNT
        self._next_ck = now + (CK_BURST_INTERVAL if burst else self._settings.ck_interval)

    def _establish(self, now: float) -> None:
        self._move(State.ESTABLISHED)
        if self.role is Role.INITIATOR:
            self._pending_since = now
            self.sync_clock(now)  # the initiator starts clock sync straight away
        else:
            # Initiators start CK themselves; step in (credit allowing) if one doesn't soon.
            self._next_ck = now + CK_BURST_INTERVAL

    # -- sending helpers -------------------------------------------------------

    def _send_invitation(self, now: float) -> None:
        self._invite_attempts += 1
        self._next_invite = now + INVITE_RETRY
        invitation = Invitation(packets.INVITATION, self.token, self.local_ssrc, self.local_name)
        if self.state is State.INVITING_CONTROL:
            self._send(PortKind.CONTROL, packets.encode_invitation(invitation), self.control_addr)
        else:
            self._send(
                PortKind.DATA,
                packets.encode_invitation(invitation),
                data_port_of(self.control_addr),
            )

    def _reply(self, command: bytes, token: int, kind: PortKind, addr: Address, size: int) -> None:
        reply = Invitation(command, token, self.local_ssrc, fit_name(self.local_name, size))
        self._send(kind, packets.encode_invitation(reply), addr)

    def send_bye(self) -> None:
        """BY on both ports: some peers listen for it on one, some on the other. Never
        to an address that did not prove itself (it may be a spoofing victim)."""
        if self.role is Role.RESPONDER and self.proven_at is None:
            self.close()
            return
        bye = packets.encode_invitation(Invitation(packets.BYE, self.token, self.local_ssrc))
        self._send(PortKind.CONTROL, bye, self.control_addr)
        if self.data_addr is not None:
            self._send(PortKind.DATA, bye, self.data_addr)
        self.close()

    def close(self) -> None:
        """Over: nothing more is sent or accepted (the table forgets the session)."""
        self._move(State.CLOSED)
        self.routable = False
        if self.journal is not None:
            self.journal.detach()  # its stream journal no longer waits for its RS

    def use_journal(self, wanted: bool) -> None:
        """Journals on or off for this receiver (off: a peer that misreads them). Turned
        back on, the journal covers what is sent from then on."""
        if not wanted:
            if self.journal is not None:
                self.journal.detach()
            self.journal = None
        elif self.journal is None:
            self.journal = JournalCursor(self.public_id)

    def use_limits(self, limits: Limits, now: float) -> None:
        """New ``[limits]`` (a reload), live: the handshake and proof timers, the SysEx
        length cap (checked as the next segment arrives) and the SysEx rate, whose
        bucket keeps what this participant already spent."""
        self._limits = limits
        self.intake.configure(limits, now)
        self.reschedule()  # shorter handshake or proof timers, or the settings' timers

    def on_feedback(self, sequence: int, size: int, now: float) -> None:
        """RS from the peer's own address: it has every packet up to ``sequence``, so
        the journal's checkpoint moves on."""
        self.heard(size, now)
        self.feedback_sequence = sequence
        if self.journal is not None:
            self.journal.acknowledge(sequence, self._seq_out)

    def _move(self, state: State) -> None:
        if state not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"{self!r}: no move from {self.state.value} to {state.value}")
        self.state = state

    def _may_send(self, size: int) -> bool:
        return self.role is Role.INITIATOR or self.proven_at is not None or self._credit >= size

    def _send(self, kind: PortKind, data: bytes, addr: Address) -> None:
        if self.proven_at is None and self.role is Role.RESPONDER:
            self._credit -= len(data)
        self._outbox.append((kind, data, addr))


def fit_name(name: str, size: int) -> str | None:
    """Our name cut so that an OK/NO is no longer than the ``size``-byte IN it answers."""
    room = size - packets.INVITATION_HEAD - 1  # the name is NUL-terminated
    if room <= 0:
        return None
    data = name.encode("utf-8")
    return name if len(data) <= room else data[:room].decode("utf-8", "ignore")


def data_port_of(control: Address) -> Address:
    """The data port's address of a control port's (P + 1, RFC 6295's AppleMIDI pairs)."""
    return (control[0], control[1] + 1, *control[2:])
