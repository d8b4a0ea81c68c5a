"""One Network MIDI 2.0 client of the host, from its invitation to its Bye.

Sans-IO like ``midihub.rtp.session``: every method takes ``now``; datagrams wait in the
session's outbox for ``Midi2Host.datagrams_to_send``; ``next_deadline`` says when
``tick`` has work (pings, the silence timeout, a gap's retransmit timer, the keep-alive
tail after data). The only moves between states are those in ``TRANSITIONS``.

Until a client has proved it receives at its address (its digest answered our nonce,
or its Ping Reply echoed our random ping id), we send it no more octets than it sent
us (``credit``), and what the hub sends it waits in the history: a spoofed invitation
cannot turn the host into a reflector. docs/protocol.md has the flows.
"""

from __future__ import annotations

import collections
import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from midihub.midi2 import commands as wire
from midihub.midi2.auth import check_secret, check_user, new_nonce
from midihub.midi2.commands import (
    AuthState,
    ByeReason,
    Code,
    CommandPacket,
    Identity,
    NakReason,
    RetransmitErrorReason,
)
from midihub.midi2.events import (
    Address,
    Departed,
    Invited,
    Midi2Event,
    RttMeasured,
    SessionReset,
    UmpLost,
    UmpReceived,
)
from midihub.midi2.events import UmpMessage as UmpMessage
from midihub.midi2.loss import ReceiveWindow, SendHistory, diff
from midihub.rtp.errors import LocalProtocolError, ProtocolError
from midihub.rtp.limits import TokenBucket, source_key

HANDSHAKE_TIMEOUT: Final = 10.0  # invited (or challenged) to accepted, not refreshed
MAX_AUTH_FAILURES: Final = 3  # wrong digests before Bye 0x43
MISSING_WAIT: Final = 0.03  # a gap FEC did not fill: wait this long, then ask (amidi2net)
RETRANSMIT_WAIT: Final = 0.1  # between Retransmit Requests for one gap (at least 1.5 RTT)
RETRANSMIT_ATTEMPTS: Final = 5
LOSSES_TOLERATED: Final = 5  # gaps skipped within LOSS_WINDOW; one more: Bye 0x03
LOSS_WINDOW: Final = 60.0
KEEPALIVE_AFTER: Final = 0.1  # idle after data: empty UMP Data carrying the FEC tail
NAK_RATE: Final = 2.0  # NAKs per second per session (burst NAK_BURST)
NAK_BURST: Final = 4
PING_SIZE: Final = 8  # one Ping command packet, octets
PROVING_PINGS: Final = 4  # Pings beyond its credit to a silent unproven client, then it ends


# UMP message type -> words (UMP spec table 1): how a UMP Data payload splits into UMPs.
UMP_WORDS: Final = (1, 1, 1, 2, 2, 4, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4)


def whole_umps(payload: bytes) -> bool:
    """True if ``payload`` is a whole number of UMPs, each as long as its type says."""
    at = 0
    end = len(payload)
    while at < end:
        at += 4 * UMP_WORDS[payload[at] >> 4]
    return at == end


def split_umps(payload: bytes) -> list[UmpMessage]:
    """The UMPs of a UMP Data payload; a last one cut short is left out (counted and
    NAKed when it arrived)."""
    words = wire.words_of(payload)
    out: list[UmpMessage] = []
    at = 0
    while at < len(words):
        size = UMP_WORDS[words[at] >> 28]
        if at + size > len(words):
            break
        out.append(words[at : at + size])
        at += size
    return out


class Count(enum.StrEnum):
    """Counter keys (``Midi2Host.counters``): a fixed set, never what a sender chose."""

    RECEIVED = "datagrams-received"
    SENT = "datagrams-sent"
    NOT_MIDI2 = "not-midi2"  # no signature or ragged length: dropped silently
    TRUNCATED = "truncated-command"  # payload past the datagram's end: NAK malformed
    MALFORMED = "malformed-command"  # wrong payload for its code: NAK malformed
    UNSUPPORTED = "unsupported-command"  # unknown code: NAK not supported
    UNEXPECTED = "unexpected-command"  # not for this state: NAK not expected
    STRANGER = "stranger-command"  # session command from an address without one
    REPLY_LIMITED = "reply-limited"  # a reply to a stranger not sent: its IP's budget
    REPLY_TOO_LARGE = "reply-too-large"  # a reply to a stranger larger than it sent
    CREDIT_LIMITED = "credit-limited"  # unproven client: nothing beyond what it sent
    NAK_LIMITED = "nak-limited"
    NAKS_SENT = "naks-sent"
    NAKS_RECEIVED = "naks-received"
    PENDING_FULL = "pending-full"  # invitations awaiting auth from one IP at the cap
    PENDING_EVICTED = "pending-evicted"  # the oldest made room (max_pending)
    HANDSHAKE_TIMEOUT = "handshake-timeout"
    AUTH_FAILURES = "auth-failures"
    AUTH_REJECTED = "auth-rejected"  # MAX_AUTH_FAILURES reached: Bye 0x43
    INVITATIONS = "invitations"
    REFUSED = "refused"
    JOINED = "joined"
    FEC_DUPLICATES = "fec-duplicates"  # UMP Data seen before (FEC copies, retransmits)
    REORDERED = "held-for-gap"  # UMP Data held until an earlier one arrives
    TOO_FAR_AHEAD = "too-far-ahead"
    BAD_UMP = "malformed-ump"  # UMP Data whose length does not fit its message type
    KEEPALIVES_RECEIVED = "keepalives-received"
    RETRANSMIT_ASKED = "retransmit-requests-sent"
    RETRANSMIT_ANSWERED = "retransmit-requests-answered"
    RETRANSMIT_FAILED = "retransmit-errors-sent"  # asked for what the history lost
    RETRANSMIT_ERRORS = "retransmit-errors-received"
    GAPS_UNRECOVERED = "gaps-unrecovered"  # skipped (or, too many, ended with Bye 0x03)
    UMP_LOST = "ump-lost"  # UMP Data commands in those gaps, or dropped by a reset
    RESETS = "session-resets"
    PING_UNMATCHED = "ping-reply-unmatched"
    TIMEOUTS = "timeouts"
    BYES_RECEIVED = "byes-received"
    BYES_SENT = "byes-sent"
    SEND_UNKNOWN = "send-without-session"  # the caller sent to a gone client
    PROVING_PINGS = "proving-pings"  # Pings to an unproven client beyond its credit
    NEVER_PROVEN = "never-proven"  # joined, never answered those Pings: ended, no Bye


@dataclass(frozen=True, slots=True)
class Midi2Settings:
    """One Network MIDI 2.0 port's knobs. ``secret`` and ``users`` both unset: plain
    invitations are accepted; either set: the client must authenticate."""

    name: str = "midihub"  # endpoint name in our replies (hub name + room)
    product_id: str = "midihub"  # product instance id in our replies
    secret: str | None = None  # shared secret (Invitation with Authentication, 0x02)
    users: Mapping[str, str] = field(default_factory=dict)  # user -> password (0x03)
    fec: int = 3  # earlier UMP Data commands repeated in each datagram (0..10)
    history: int = 256  # sent UMP Data commands kept for Retransmit Request
    ping_interval: float = 5.0
    timeout: float = 30.0  # silence before the host ends the session (Bye 0x04)
    max_pending: int = 128  # invitations awaiting authentication or accept(), per port
    pending_per_source: int = 4  # of those, from one IP (an IPv6 /64)

    def __post_init__(self) -> None:
        if not 0 <= self.fec <= 10:
            raise ValueError("fec must be 0..10")
        if self.history < 1 or self.max_pending < 1 or self.pending_per_source < 1:
            raise ValueError("history, max_pending and pending_per_source must be at least 1")
        if self.ping_interval <= 0 or self.timeout <= 0:
            raise ValueError("ping_interval and timeout must be positive")

    @property
    def needs_auth(self) -> bool:
        return self.secret is not None or bool(self.users)


class State(enum.Enum):
    AUTHENTICATING = "authenticating"  # challenged with a nonce, digest awaited
    INVITED = "invited"  # authenticated (or plain): the caller's accept()/refuse() awaited
    ESTABLISHED = "established"
    CLOSED = "closed"


TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    State.AUTHENTICATING: frozenset({State.INVITED, State.CLOSED}),
    State.INVITED: frozenset({State.ESTABLISHED, State.CLOSED}),
    State.ESTABLISHED: frozenset({State.CLOSED}),
    State.CLOSED: frozenset({State.CLOSED}),
}


class Midi2Session:
    """One client at one address. Made by ``Midi2Host`` on an Invitation."""

    def __init__(
        self,
        addr: Address,
        identity: Identity,
        settings: Midi2Settings,
        *,
        rng: random.Random,
        counters: collections.Counter[str],
        now: float,
        challenge: int = 0,
        credit: int = 0,
    ) -> None:
        """``challenge``: 0x12 or 0x13 to start by asking for a digest (sent at once);
        0: no authentication, the caller's ``accept`` awaited. ``credit``: the size of
        the invitation."""
        self.addr = addr
        self.source = source_key(addr[0] if addr else "")
        self.name = identity.name
        self.product_id = identity.product_id
        self.capabilities = identity.capabilities
        self.settings = settings
        self.state = State.AUTHENTICATING if challenge else State.INVITED
        self.created = now
        self.joined_at: float | None = None
        self.last_heard = now
        self.rtt: float | None = None
        self.packets_received = 0  # datagrams from the client
        self.packets_lost = 0  # UMP Data commands it sent that never arrived
        self.proven = False
        self.scheduled: float | None = None  # the deadline the host filed it under
        self.credit = credit  # octets we may still send before it is proven
        self._rng = rng
        self._counters = counters
        self._outbox: list[bytes] = []
        self._nonce = new_nonce(rng) if challenge else b""
        self._auth_code = challenge  # 0x12 or 0x13 while AUTHENTICATING
        self._auth_failures = 0
        self._history: SendHistory[bytes] = SendHistory(settings.history)  # encoded commands
        self._unsent: int | None = None  # first sequence number held until proven
        self._window = ReceiveWindow()
        self._missing_at: float | None = None
        self._missing_tries = 0
        self._missing_seq: int | None = None  # the gap's first missing number
        self._losses: collections.deque[float] = collections.deque()  # gaps skipped, when
        self._tail_at: float | None = None
        self._tail_left = 0
        self._next_ping = now
        self._proving_pings = 0  # sent beyond the credit (PROVING_PINGS)
        self._ping_id: int | None = None
        self._ping_sent_at = 0.0
        self._naks = TokenBucket(NAK_RATE, NAK_BURST, now)
        if challenge:
            self._send_challenge(AuthState.FIRST)

    def __repr__(self) -> str:
        return f"<Midi2Session {self.addr!r} {self.state.value}>"

    # -- queries ---------------------------------------------------------------------

    @property
    def joined(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def pending(self) -> bool:
        return self.state in (State.AUTHENTICATING, State.INVITED)

    def next_deadline(self) -> float | None:
        if self.state is State.CLOSED:
            return None
        if self.pending:
            return self.created + HANDSHAKE_TIMEOUT
        deadlines = [self.last_heard + self.settings.timeout, self._next_ping]
        if self._missing_at is not None:
            deadlines.append(self._missing_at)
        if self._tail_at is not None:
            deadlines.append(self._tail_at)
        return min(deadlines)

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    # -- handshake -------------------------------------------------------------------

    def _send_challenge(self, state: int) -> None:
        self._send([self._identity_reply(self._auth_code, state)])

    def _identity_reply(self, code: int, state: int = 0, reserve: int = 0) -> CommandPacket:
        """Our name and product id in an invitation reply, cut so that an unproven
        client gets no more than its credit (less ``reserve`` for what goes with it)."""
        fixed = 4 + 4 + (wire.NONCE_SIZE if code in _CHALLENGES else 0) + reserve
        name = self.settings.name
        product = self.settings.product_id
        if not self.proven:
            room = max(0, self.credit - fixed)
            name_data = wire.cut_utf8(name, room & ~3)
            name = name_data.decode("utf-8")
            room -= len(wire.padded(name_data))
            product = product[: max(0, room & ~3)]
        if code in _CHALLENGES:
            return wire.auth_required(code, self._nonce, state, name, product)
        return wire.invitation_reply(code, name, product)

    def on_reinvitation(self, now: float) -> list[Midi2Event]:
        """The client sent its Invitation again: our reply was lost, or it restarted
        (then its numbering starts again: so does what we expect of it)."""
        if self.state is State.AUTHENTICATING:
            self._send_challenge(AuthState.FIRST)
        elif self.state is State.ESTABLISHED:
            event = self._restart_receiving()
            self._send_accepted(now)  # with a new Ping: the first may have been lost
            return [event]
        return []

    def on_digest(self, command: CommandPacket, now: float) -> list[Midi2Event]:
        """Invitation with (User) Authentication while challenged."""
        expected = (
            Code.INVITATION_AUTH
            if self._auth_code == Code.AUTH_REQUIRED
            else (Code.INVITATION_USER_AUTH)
        )
        if self.state is State.ESTABLISHED and self._auth_code and command.code == expected:
            self._send([self._identity_reply(Code.ACCEPTED)])  # our Reply Accepted was lost
            return []
        if self.state is not State.AUTHENTICATING or command.code != expected:
            self._nak(NakReason.NOT_EXPECTED, command)
            return []
        payload = command.payload
        if len(payload) < wire.DIGEST_SIZE:
            self._nak(NakReason.MALFORMED, command)
            return []
        digest = payload[: wire.DIGEST_SIZE]
        if command.code == Code.INVITATION_AUTH:
            good = check_secret(self._nonce, self.settings.secret or "", digest)
            good = good and self.settings.secret is not None
        else:
            user = payload[wire.DIGEST_SIZE :].split(b"\x00", 1)[0].decode("utf-8", "replace")
            good = check_user(self._nonce, self.settings.users, user, digest)
        if good:
            self.proven = True  # it read our nonce at this address
            self._move(State.INVITED)
            return [Invited(self.addr, self.name, self.product_id)]
        self._counters[Count.AUTH_FAILURES] += 1
        self._auth_failures += 1
        if self._auth_failures >= MAX_AUTH_FAILURES:
            self._counters[Count.AUTH_REJECTED] += 1
            self.close(ByeReason.AUTH_FAILED)
            return []
        self._nonce = new_nonce(self._rng)
        self._send_challenge(AuthState.INCORRECT)
        return []

    def accept(self, now: float) -> None:
        """Reply Accepted; an unproven client also gets our first Ping in the same
        datagram (within its credit), whose answer proves its address."""
        self._move(State.ESTABLISHED)
        self.joined_at = now
        self.last_heard = now
        self._counters[Count.JOINED] += 1
        if self.proven:
            self._next_ping = now + self.settings.ping_interval
        self._send_accepted(now)

    def _send_accepted(self, now: float) -> None:
        """Reply Accepted; to an unproven client with a Ping if both fit its credit
        (an Invitation of 16 octets or more), else alone (the Ping waits for credit)."""
        if self.proven:
            self._send([self._identity_reply(Code.ACCEPTED)])
        elif self.credit >= 4 + 4 + PING_SIZE:
            reply = self._identity_reply(Code.ACCEPTED, reserve=PING_SIZE)
            self._send([reply, self._new_ping(now)])
        else:
            self._send([self._identity_reply(Code.ACCEPTED)])

    def close(self, reason: int) -> None:
        """Bye with ``reason``, and nothing more from either side."""
        if self.state is State.CLOSED:
            return
        self._send([wire.bye(reason)])
        self._counters[Count.BYES_SENT] += 1
        self._move(State.CLOSED)

    # -- established -----------------------------------------------------------------

    def receive(self, decoded: wire.Decoded, size: int, now: float) -> list[Midi2Event]:
        """One datagram from the client's address (the host has routed it here)."""
        self.last_heard = now
        self.packets_received += 1
        if not self.proven:
            self.credit += size
        events: list[Midi2Event] = []
        delivered: list[UmpMessage] = []
        for command in decoded.commands:
            if self.state is State.CLOSED:
                break
            if command.code == Code.UMP_DATA and self.joined:
                self._on_ump(command, delivered)
                continue
            if delivered:  # keep the order of what it said
                events.append(UmpReceived(self.addr, delivered))
                delivered = []
            events += self._on_command(command, now)
        if delivered:
            events.append(UmpReceived(self.addr, delivered))
        if decoded.truncated is not None and self.state is not State.CLOSED:
            self._counters[Count.TRUNCATED] += 1
            self._nak(NakReason.MALFORMED, header=decoded.truncated)
        if self.joined:
            self._arm_missing(now)
        return events

    def _on_command(self, command: CommandPacket, now: float) -> list[Midi2Event]:
        code = command.code
        if code == Code.PING:
            try:
                ping_id = wire.word_of(command)
            except ProtocolError:
                self._nak(NakReason.MALFORMED, command)
                return []
            self._send([wire.ping(Code.PING_REPLY, ping_id)])
            return []
        if code == Code.BYE:
            self._counters[Count.BYES_RECEIVED] += 1
            self._send([wire.empty(Code.BYE_REPLY)])
            joined = self.joined
            self._move(State.CLOSED)
            return [Departed(self.addr, command.csd1, by_client=True)] if joined else []
        if code == Code.INVITATION:
            return self.on_reinvitation(now)
        if code in (Code.INVITATION_AUTH, Code.INVITATION_USER_AUTH):
            return self.on_digest(command, now)
        if code in wire.NAK_CODES:
            return self._on_nak(command, now)
        if code in (Code.BYE_REPLY, Code.SESSION_RESET_REPLY):
            return []  # answers to what we sent: nothing to do
        if code not in wire.KNOWN_CODES:
            self._counters[Count.UNSUPPORTED] += 1
            self._nak(NakReason.NOT_SUPPORTED, command)
            return []
        if not self.joined or code in _HOST_ONLY:
            self._counters[Count.UNEXPECTED] += 1
            self._nak(NakReason.NOT_EXPECTED, command)
            return []
        if code == Code.PING_REPLY:
            return self._on_ping_reply(command, now)
        if code == Code.SESSION_RESET:
            self._counters[Count.RESETS] += 1
            event = self._reset()
            self._send([wire.empty(Code.SESSION_RESET_REPLY)])
            return [event]
        if code == Code.RETRANSMIT_REQUEST:
            self._on_retransmit_request(command)
            return []
        if code == Code.RETRANSMIT_ERROR:
            self._counters[Count.RETRANSMIT_ERRORS] += 1
            if self._window.gap() is not None:
                return self._give_up(now)
            return []
        return []  # pragma: no cover  (every code is handled above)

    def _on_ump(self, command: CommandPacket, delivered: list[UmpMessage]) -> None:
        """One UMP Data command: its payload is held by number until its turn, then
        split into UMPs by their message types (Windows MIDI Services packs several
        into one command; amidi2net and Zephyr send one)."""
        seq = command.csd
        expected = self._window.expected
        if expected is not None and (seq - expected) & 0xFFFF >= 0x8000:  # most FEC copies
            self._counters[Count.FEC_DUPLICATES] += 1
            return
        payload = command.payload
        refused = self._window.refused
        ready = self._window.accept(seq, payload)
        if ready is None:
            if self._window.refused != refused:
                self._counters[Count.TOO_FAR_AHEAD] += 1
            else:
                self._counters[Count.FEC_DUPLICATES] += 1
            return
        if not whole_umps(payload):
            self._counters[Count.BAD_UMP] += 1
            self._nak(NakReason.MALFORMED, command)
        if not ready:
            self._counters[Count.REORDERED] += 1
        self._deliver(ready, delivered)

    def _deliver(self, ready: list[bytes], delivered: list[UmpMessage]) -> None:
        """UMP Data payloads whose turn came: their UMPs (a keep-alive has none)."""
        for data in ready:
            if not data:
                self._counters[Count.KEEPALIVES_RECEIVED] += 1
            else:
                delivered += split_umps(data)

    def _arm_missing(self, now: float) -> None:
        """A gap starts the wait before asking; progress (its first missing command
        arrived) gives the rest of it a fresh set of attempts."""
        gap = self._window.gap()
        if gap is None:
            self._missing_at = None
            self._missing_seq = None
            self._missing_tries = 0
            return
        if gap[0] != self._missing_seq:
            self._missing_seq = gap[0]
            self._missing_tries = 0
            if self._missing_at is None:
                self._missing_at = now + MISSING_WAIT

    def _on_ping_reply(self, command: CommandPacket, now: float) -> list[Midi2Event]:
        try:
            ping_id = wire.word_of(command)
        except ProtocolError:
            self._nak(NakReason.MALFORMED, command)
            return []
        if ping_id != self._ping_id:
            self._counters[Count.PING_UNMATCHED] += 1
            return []
        self._ping_id = None
        self.rtt = now - self._ping_sent_at
        if not self.proven:
            self.proven = True
            self._flush_held()
        return [RttMeasured(self.addr, self.rtt)]

    def _on_nak(self, command: CommandPacket, now: float) -> list[Midi2Event]:
        self._counters[Count.NAKS_RECEIVED] += 1
        refused = command.payload[:1]
        if (
            refused == bytes([Code.RETRANSMIT_REQUEST])
            and command.csd1 == NakReason.NOT_SUPPORTED
            and self._window.gap() is not None
        ):
            return self._give_up(now)  # it cannot fill the gap: nor can anyone
        return []

    def _on_retransmit_request(self, command: CommandPacket) -> None:
        try:
            count = wire.seq_word(command)
        except ProtocolError:
            self._nak(NakReason.MALFORMED, command)
            return
        seq = command.csd
        held = self._unsent is not None and diff(seq, self._unsent) >= 0
        entries = None if held else self._history.since(seq, min(count, len(self._history)))
        if not entries:
            self._counters[Count.RETRANSMIT_FAILED] += 1
            self._send([wire.retransmit_error(seq, RetransmitErrorReason.NO_DATA)])
            return
        self._counters[Count.RETRANSMIT_ANSWERED] += 1
        self._send_data(entries)

    def _send_data(self, entries: list[tuple[int, bytes]]) -> None:
        """Encoded UMP Data commands in as few datagrams as ``MAX_DATAGRAM`` allows."""
        batch: list[bytes] = []
        size = 4
        for _, data in entries:
            if batch and size + len(data) > wire.MAX_DATAGRAM:
                self._send_encoded(batch)
                batch, size = [], 4
            batch.append(data)
            size += len(data)
        if batch:
            self._send_encoded(batch)

    def _give_up(self, now: float) -> list[Midi2Event]:
        """A gap neither FEC nor retransmission filled: skip it, as a musician would
        rather (what came after it is played, in order), and say so with ``UmpLost``: the
        hub releases the client's held notes (their NoteOff may be in the gap) and drops
        an open SysEx. A client losing more than ``LOSSES_TOLERATED`` gaps within
        ``LOSS_WINDOW`` seconds gets Bye 0x03 instead."""
        lost, ready = self._window.skip()
        self.packets_lost += lost
        self._counters[Count.UMP_LOST] += lost
        self._counters[Count.GAPS_UNRECOVERED] += 1
        losses = self._losses
        losses.append(now)
        while losses and losses[0] <= now - LOSS_WINDOW:
            losses.popleft()
        if len(losses) > LOSSES_TOLERATED:
            self.close(ByeReason.TOO_MANY_MISSING)
            return [Departed(self.addr, ByeReason.TOO_MANY_MISSING, by_client=False)]
        self._missing_at = None
        self._missing_seq = None
        self._missing_tries = 0
        self._arm_missing(now)  # a later gap, if any, waits its turn
        delivered: list[UmpMessage] = []
        self._deliver(ready, delivered)
        events: list[Midi2Event] = [UmpLost(self.addr, lost)]
        if delivered:
            events.append(UmpReceived(self.addr, delivered))
        return events

    def _reset(self) -> SessionReset:
        """Session Reset: both directions start their numbering again (Zephyr, amidi2net)."""
        self._history.reset()
        self._unsent = None
        self._tail_at = None
        self._tail_left = 0
        return self._restart_receiving()

    def _restart_receiving(self) -> SessionReset:
        """Forget the client's numbering; what a gap held back is lost and counted."""
        lost = self._window.reset()
        self.packets_lost += lost
        self._counters[Count.UMP_LOST] += lost
        self._missing_at = None
        self._missing_seq = None
        self._missing_tries = 0
        return SessionReset(self.addr, lost)

    # -- sending ---------------------------------------------------------------------

    def send(self, messages: Sequence[UmpMessage], now: float) -> None:
        """UMP Data to the client: numbered, each datagram led by the previous ``fec``
        commands; held in the history (not sent) until the client is proven."""
        if not self.joined:
            raise LocalProtocolError(f"{self!r}: not established")
        if not messages:
            return
        history = self._history
        step = self.settings.history  # more at once would leave the history unsent
        for at in range(0, len(messages), step):
            first = history.next_seq
            for message in messages[at : at + step]:
                if not 1 <= len(message) <= 4:
                    raise ValueError(f"a UMP is 1 to 4 words, not {len(message)}")
                history.add(wire.ump_data(history.next_seq, tuple(message)).encode())
            if self.proven:
                self._transmit(first)
            elif self._unsent is None:
                self._unsent = first
        if self.settings.fec:  # fec 0: no tail (pymidi2 cannot parse empty UMP Data)
            self._tail_left = self.settings.fec + 1
            self._tail_at = now + KEEPALIVE_AFTER

    def _transmit(self, first: int) -> None:
        """Everything from ``first`` to the newest, each datagram led by the ``fec``
        commands before its first new one, none over ``MAX_DATAGRAM``."""
        new = self._history.since(first, 0) or []
        fec = self.settings.fec
        at = 0
        while at < len(new):
            chunks = [data for _, data in self._history.before(new[at][0], fec)]
            size = 4 + sum(len(data) for data in chunks)
            fresh = 0
            while at < len(new):
                data = new[at][1]
                if fresh and size + len(data) > wire.MAX_DATAGRAM:
                    break
                size += len(data)
                chunks.append(data)
                fresh += 1
                at += 1
            self._send_encoded(chunks)

    def _flush_held(self) -> None:
        if self._unsent is not None:
            first, self._unsent = self._unsent, None
            if self._history.since(first, 1) is None:  # the history overflowed meanwhile
                oldest = self._history.before(self._history.next_seq, len(self._history))
                if not oldest:
                    return
                first = oldest[0][0]
            self._transmit(first)

    def _new_ping(self, now: float) -> CommandPacket:
        self._ping_id = self._rng.getrandbits(32)
        self._ping_sent_at = now
        self._next_ping = now + self.settings.ping_interval
        return wire.ping(Code.PING, self._ping_id)

    # -- timers ----------------------------------------------------------------------

    def tick(self, now: float) -> list[Midi2Event]:
        if self.state is State.CLOSED:
            return []
        if self.pending:
            if now >= self.created + HANDSHAKE_TIMEOUT:
                self._counters[Count.HANDSHAKE_TIMEOUT] += 1
                self._move(State.CLOSED)  # no Bye: it may be a spoofed address
            return []
        if now >= self.last_heard + self.settings.timeout:
            self._counters[Count.TIMEOUTS] += 1
            self.close(ByeReason.TIMEOUT)
            return [Departed(self.addr, ByeReason.TIMEOUT, by_client=False)]
        events: list[Midi2Event] = []
        if self._missing_at is not None and now >= self._missing_at:
            events += self._ask_again(now)
            if not self.joined:  # it lost too often: Bye 0x03
                return events
        if self._tail_at is not None and now >= self._tail_at:
            self._keepalive(now)
        if now >= self._next_ping:
            if self.proven or self.credit >= 4 + PING_SIZE:
                self._send([self._new_ping(now)])
            else:
                return events + self._prove(now)
        return events

    def _prove(self, now: float) -> list[Midi2Event]:
        """A Ping is due to an unproven client without the credit for it. A listen-only
        client that missed (or, like pymidi2 while connecting, ignored) the Ping sent with
        Reply Accepted sends nothing more, so it would never be proven and never get the
        room's MIDI: it gets up to ``PROVING_PINGS`` Pings of 12 octets anyway, one per
        ``ping_interval`` (to an address that invited: a small, bounded amplification),
        and then the session ends without a Bye (the address may be spoofed)."""
        interval = self.settings.ping_interval
        since = self.joined_at if self.joined_at is not None else self.created
        due = since + (self._proving_pings + 1) * interval
        if now < due:  # the Reply Accepted (or the last proving Ping) was just sent
            self._next_ping = due
            return []
        if self._proving_pings >= PROVING_PINGS:
            self._counters[Count.NEVER_PROVEN] += 1
            self._move(State.CLOSED)
            return [Departed(self.addr, ByeReason.TIMEOUT, by_client=False, proven=False)]
        self._proving_pings += 1
        self._counters[Count.PROVING_PINGS] += 1
        self.credit += 4 + PING_SIZE  # spent at once by this Ping, and only by it
        self._send([self._new_ping(now)])
        return []

    def _ask_again(self, now: float) -> list[Midi2Event]:
        gap = self._window.gap()
        if gap is None:
            self._missing_at = None
            return []
        if self._missing_tries >= RETRANSMIT_ATTEMPTS:
            return self._give_up(now)
        self._missing_tries += 1
        self._counters[Count.RETRANSMIT_ASKED] += 1
        self._send([wire.retransmit_request(gap[0], gap[1])])
        wait = max(RETRANSMIT_WAIT, 1.5 * self.rtt) if self.rtt is not None else RETRANSMIT_WAIT
        self._missing_at = now + wait
        return []

    def _keepalive(self, now: float) -> None:
        """Empty UMP Data after the hub stops sending: each carries the FEC copies of
        the last commands, so a lost final datagram is repaired without a request."""
        if self._tail_left <= 0 or not self.settings.fec:  # fec 0, perhaps by a reload
            self._tail_at = None
            return
        self._tail_left -= 1
        self._tail_at = now + KEEPALIVE_AFTER if self._tail_left else None
        first = self._history.add(wire.ump_data(self._history.next_seq, ()).encode())
        if self.proven and self._unsent is None:
            self._transmit(first)
        elif self._unsent is None:
            self._unsent = first

    # -- plumbing --------------------------------------------------------------------

    def configure(self, settings: Midi2Settings) -> None:
        if settings.history != self.settings.history:
            self._history.resize(settings.history)
        if settings.ping_interval < self.settings.ping_interval:
            self._next_ping = min(self._next_ping, self.created + settings.ping_interval)
        self.settings = settings

    def _nak(self, reason: int, command: CommandPacket | None = None, header: bytes = b"") -> None:
        if not self._naks.take(1, self.last_heard):
            self._counters[Count.NAK_LIMITED] += 1
            return
        self._counters[Count.NAKS_SENT] += 1
        self._send([wire.nak(reason, command.header if command else header)])

    def _send(self, packets: list[CommandPacket]) -> None:
        self._send_encoded([packet.encode() for packet in packets])

    def _send_encoded(self, chunks: list[bytes]) -> None:
        """One datagram of encoded command packets; within credit until proven."""
        data = wire.SIGNATURE + b"".join(chunks)
        if not self.proven:
            if len(data) > self.credit:
                self._counters[Count.CREDIT_LIMITED] += 1
                return
            self.credit -= len(data)
        self._outbox.append(data)

    def _move(self, state: State) -> None:
        if state not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"{self!r}: no move from {self.state.value} to {state.value}")
        self.state = state


_CHALLENGES: Final = frozenset({Code.AUTH_REQUIRED, Code.USER_AUTH_REQUIRED})
_HOST_ONLY: Final = frozenset(
    {Code.ACCEPTED, Code.PENDING, Code.AUTH_REQUIRED, Code.USER_AUTH_REQUIRED}
)
