"""The RFC 6295 recovery journal: codec, the sender's state, and repair.

A journal rides after the MIDI list of an RTP packet (J = 1) and describes what
changed since a *checkpoint* packet, so a receiver that lost packets can restore
the state they carried without a retransmission (RFC 6295 §4-§6, Appendix A).
We write and use chapters P (program), C (controllers), W (pitch wheel) and N
(notes); every other chapter is skipped by its length.

- ``decode_journal``: bytes -> ``Journal`` (what a receiver reads).
- ``StreamJournal`` (one per distinct outgoing stream of a port, shared by its
  receivers): ``journal()`` for the next packet, ``record(commands)`` after it; the one
  place journals are written. ``JournalCursor`` (one per receiver): its checkpoint in its
  own sequence numbers and its RS. ``share`` groups a forward's receivers by journal.
- ``repair(journal, state)``: the messages that bring a receiver's state (what the
  hub tracks per source) to what the journal says, to play before the packet's own.

Sans-IO: no sockets, no clocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from midihub.midi.state import RESET_VALUES, Effect, classify
from midihub.rtp.commands import Command
from midihub.rtp.errors import ProtocolError

PITCH_CENTRE = 8192
CC_BANK_MSB, CC_BANK_LSB, CC_SUSTAIN, CC_SOSTENUTO = 0, 32, 64, 66
MAX_UNACKED = 64  # packets a silent receiver may lag before the checkpoint moves on
MAX_DATAGRAM: Final = 1232
"""UDP payload bytes the hub ever sends: 1280 (IPv6 minimum MTU) - 40 IPv6 - 8 UDP.
The same budget on IPv4 keeps every datagram unfragmented on any path."""
RTP_HEADER: Final = 12
JOURNAL_RESERVE: Final = 400  # bytes of every full packet kept for the journal
MAX_LIST_LENGTH: Final = MAX_DATAGRAM - RTP_HEADER - 2 - JOURNAL_RESERVE
"""Bytes of MIDI list per packet (818): a full list leaves JOURNAL_RESERVE for the journal."""
MAX_JOURNAL: Final = MAX_DATAGRAM - RTP_HEADER - 1  # a guard packet's whole room
STALE_NOTE: Final = 1.0
"""Seconds after which a held note's log says Y = 0 (RFC 6295 A.6): a NoteOn recovered
that late would start a note the player struck long ago, so receivers skip it."""

# Chapter N without OFFBITS (RFC 6295 A.6): any LOW > HIGH says "none", but LOW = 15,
# HIGH = 0 is reserved for LEN = 127 meaning 128 logs, and Wireshark's dissector reads
# only that and LOW = 15, HIGH = 1 as "none". We write 15/1 and accept any LOW > HIGH.
NO_OFFBITS_LOW, NO_OFFBITS_HIGH = 15, 1

# Channel journal table of contents (RFC 6295 §5.2), in chapter order.
TOC_P, TOC_C, TOC_M, TOC_W, TOC_N, TOC_E, TOC_T, TOC_A = 0x80, 0x40, 0x20, 0x10, 8, 4, 2, 1


@dataclass(slots=True)
class ChannelJournal:
    channel: int  # 0..15
    program: tuple[int, int | None, int | None] | None = None  # program, bank MSB, LSB
    controllers: list[tuple[int, int]] = field(default_factory=list)  # (number, value)
    wheel: int | None = None  # 0..16383
    notes_on: list[tuple[int, int]] = field(default_factory=list)  # (note, velocity), Y = 1
    notes_off: set[int] = field(default_factory=set)
    quiet: list[tuple[int, int]] = field(default_factory=list)  # held, Y = 0: do not play


@dataclass(slots=True)
class Journal:
    checkpoint: int
    channels: list[ChannelJournal] = field(default_factory=list)
    single_loss: bool = False


# -- codec (reading; the one writer is ``StreamJournal``) ---------------------


def decode_journal(data: bytes, start: int, end: int) -> Journal:
    """Read the journal at ``data[start:end]``; unknown chapters are skipped."""
    if end - start < 3:
        raise ProtocolError("recovery journal header truncated")
    first = data[start]
    journal = Journal(checkpoint=data[start + 1] << 8 | data[start + 2])
    journal.single_loss = bool(first & 0x80)
    pos = start + 3
    if first & 0x40:  # system journal: not needed for notes; skip it by its length
        if pos + 2 > end:
            raise ProtocolError("system journal header truncated")
        length = (data[pos] & 0x03) << 8 | data[pos + 1]
        if length < 2 or pos + length > end:
            raise ProtocolError(f"system journal length {length} does not fit")
        pos += length
    if first & 0x20:
        for _ in range((first & 0x0F) + 1):
            channel, pos = _decode_channel(data, pos, end)
            journal.channels.append(channel)
    return journal


def _decode_channel(data: bytes, pos: int, end: int) -> tuple[ChannelJournal, int]:
    if pos + 3 > end:
        raise ProtocolError("channel journal header truncated")
    length = (data[pos] & 0x03) << 8 | data[pos + 1]
    stop = pos + length
    if length < 3 or stop > end:
        raise ProtocolError(f"channel journal length {length} does not fit")
    cj = ChannelJournal(channel=data[pos] >> 3 & 0x0F)
    toc = data[pos + 2]
    p = pos + 3

    def need(count: int, what: str) -> None:
        if p + count > stop:
            raise ProtocolError(f"chapter {what} runs past its channel journal")

    if toc & TOC_P:
        need(3, "P")
        banked = bool(data[p + 1] & 0x80)
        cj.program = (
            data[p] & 0x7F,
            data[p + 1] & 0x7F if banked else None,
            data[p + 2] & 0x7F if banked else None,
        )
        p += 3
    if toc & TOC_C:
        need(1, "C")
        count = (data[p] & 0x7F) + 1
        need(1 + 2 * count, "C")
        for i in range(count):
            number, value = data[p + 1 + 2 * i] & 0x7F, data[p + 2 + 2 * i]
            if not value & 0x80:  # A = 1 logs (toggle/count forms) carry no plain value
                cj.controllers.append((number, value))
        p += 1 + 2 * count
    if toc & TOC_M:
        need(2, "M")
        m_length = (data[p] & 0x03) << 8 | data[p + 1]
        if m_length < 2:
            raise ProtocolError("chapter M length too short")
        need(m_length, "M")
        p += m_length
    if toc & TOC_W:
        need(2, "W")
        cj.wheel = (data[p] & 0x7F) | (data[p + 1] & 0x7F) << 7
        p += 2
    if toc & TOC_N:
        need(2, "N")
        logs = data[p] & 0x7F
        low, high = data[p + 1] >> 4, data[p + 1] & 0x0F
        if logs == 127 and low == 15 and high == 0:
            logs = 128  # RFC 6295 A.6: the one way to say 128 logs
        offbytes = high - low + 1 if low <= high else 0
        need(2 + 2 * logs + offbytes, "N")
        q = p + 2
        for _ in range(logs):
            note, velocity = data[q] & 0x7F, data[q + 1]
            if velocity & 0x7F:  # velocity 0 logs carry nothing to play
                target = cj.notes_on if velocity & 0x80 else cj.quiet
                target.append((note, velocity & 0x7F))
            q += 2
        for i in range(offbytes):
            byte = data[q + i]
            for bit in range(8):
                if byte & (0x80 >> bit):
                    cj.notes_off.add((low + i) * 8 + bit)
        p = q + offbytes
    # E, T and A follow; nothing we repair needs them, and the length bounds them.
    return cj, stop


# -- sender --------------------------------------------------------------------


class _Channel:
    """One channel's journal state, kept in the shape the wire wants: note logs as
    ready bytes, NoteOffs as a 128-bit mask, and the encoded channel journal cached
    until something on the channel changes or a held note turns stale."""

    __slots__ = (
        "bank",
        "controllers",
        "encoded",
        "off",
        "offmask",
        "pressed",
        "program",
        "program_seq",
        "sounding",
        "stale_at",
        "wheel",
        "wheel_seq",
    )

    def __init__(self) -> None:
        self.program: tuple[int, int | None, int | None] | None = None
        self.program_seq = -1  # -1: not in the journal
        self.bank: tuple[int | None, int | None] = (None, None)
        # number → (value, seq of the change, or -1 once the checkpoint passed it)
        self.controllers: dict[int, tuple[int, int]] = {}
        self.wheel = PITCH_CENTRE
        self.wheel_seq = -1
        self.sounding: dict[int, int] = {}  # note → velocity of its NoteOn, until its NoteOff
        self.pressed: dict[int, float] = {}  # note → when its NoteOn left
        self.off: dict[int, int] = {}  # note → seq of its NoteOff
        self.offmask = 0  # bit 127 - note set for each note in ``off``
        self.encoded: tuple[bytes, bytes] | None = None  # (full, essential)
        self.stale_at = math.inf

    def copy(self) -> _Channel:
        other = _Channel()
        other.program, other.program_seq, other.bank = self.program, self.program_seq, self.bank
        other.controllers = dict(self.controllers)
        other.wheel, other.wheel_seq = self.wheel, self.wheel_seq
        other.sounding, other.pressed = dict(self.sounding), dict(self.pressed)
        other.off, other.offmask = dict(self.off), self.offmask
        other.encoded, other.stale_at = self.encoded, self.stale_at
        return other

    def end_notes(self, seq: int) -> None:
        for note in self.sounding:
            self.off[note] = seq
            self.offmask |= 1 << (127 - note)
        self.sounding.clear()
        self.pressed.clear()

    def apply(self, effect: Effect, a: int, b: int, seq: int, now: float) -> None:
        """The shared rules (``midihub.midi.state``), remembering when each change left."""
        self.encoded = None
        if effect is Effect.NOTE_ON:
            self.sounding[a] = b
            self.pressed[a] = now
            if self.off.pop(a, None) is not None:
                self.offmask &= ~(1 << (127 - a))
        elif effect is Effect.NOTE_OFF:
            if self.sounding.pop(a, None) is not None:
                del self.pressed[a]
                self.off[a] = seq
                self.offmask |= 1 << (127 - a)
        elif effect is Effect.CONTROLLER:
            self.controllers[a] = (b, seq)
            if a == CC_BANK_MSB:
                self.bank = (b, self.bank[1])
            elif a == CC_BANK_LSB:
                self.bank = (self.bank[0], b)
        elif effect is Effect.END_NOTES:
            self.end_notes(seq)
        elif effect is Effect.RESET_CONTROLLERS:
            self.reset_controllers(seq)
        elif effect is Effect.PROGRAM:
            self.program = (a, *self.bank)
            self.program_seq = seq
        elif effect is Effect.BEND:
            self.wheel, self.wheel_seq = a, seq

    def reset_controllers(self, seq: int) -> None:
        controllers = self.controllers
        for number, value in RESET_VALUES.items():
            if number in controllers:
                controllers[number] = (value, seq)
        if self.wheel != PITCH_CENTRE or self.wheel_seq >= 0:
            self.wheel, self.wheel_seq = PITCH_CENTRE, seq

    def system_reset(self, seq: int) -> None:
        """FF: notes end, reset controllers and wheel are journalled at their reset
        values, the rest (unknown after a reset) leaves the journal."""
        self.encoded = None
        self.end_notes(seq)
        self.reset_controllers(seq)
        self.controllers = {n: v for n, v in self.controllers.items() if n in RESET_VALUES}
        self.program, self.program_seq, self.bank = None, -1, (None, None)

    def encode(self, number: int, now: float) -> tuple[bytes, bytes]:
        """This channel's journal (RFC 6295 §5.2 + chapters P, C, W, N), full and
        essential (held notes, ended notes, pedals, wheel only); b"" when empty."""
        notes = b""
        stale_at = math.inf
        if self.sounding or self.offmask:
            notes = self._chapter_n(now)
            for pressed in self.pressed.values():
                if pressed + STALE_NOTE > now:
                    stale_at = min(stale_at, pressed + STALE_NOTE)
        self.stale_at = stale_at
        logs = [
            (n, v)
            for n, (v, s) in sorted(self.controllers.items())
            if s >= 0 or n in (CC_SUSTAIN, CC_SOSTENUTO)  # pedals: always (2 bytes each)
        ]
        pedals = [(n, v) for n, v in logs if n in (CC_SUSTAIN, CC_SOSTENUTO)]
        wheel = b""
        if self.wheel != PITCH_CENTRE or self.wheel_seq >= 0:
            wheel = bytes((self.wheel & 0x7F, self.wheel >> 7 & 0x7F))
        program: bytes | None = None
        if self.program is not None and self.program_seq >= 0:
            number_, msb, lsb = self.program
            program = bytes((number_, 0 if msb is None else 0x80 | msb, lsb or 0))
        full = _channel_bytes(number, program, logs, wheel, notes)
        essential = full if len(logs) == len(pedals) and program is None else b""
        if not essential:
            essential = _channel_bytes(number, None, pedals, wheel, notes)
        return full, essential

    def _chapter_n(self, now: float) -> bytes:
        old = now - STALE_NOTE
        pressed = self.pressed
        logs = b"".join(
            bytes((note, velocity if pressed[note] <= old else 0x80 | velocity))
            for note, velocity in list(self.sounding.items())[:127]
        )
        mask = self.offmask
        if mask:
            low = (128 - mask.bit_length()) >> 3
            high = (128 - (mask & -mask).bit_length()) >> 3
            bits = mask.to_bytes(16, "big")[low : high + 1]
        else:
            low, high, bits = NO_OFFBITS_LOW, NO_OFFBITS_HIGH, b""
        return bytes((len(logs) >> 1, low << 4 | high)) + logs + bits


def _channel_bytes(
    number: int,
    program: bytes | None,
    controllers: list[tuple[int, int]],
    wheel: bytes,
    notes: bytes,
) -> bytes:
    toc = 0
    parts: list[bytes] = []
    if program is not None:
        toc |= TOC_P
        parts.append(program)
    if controllers:
        toc |= TOC_C
        logs = controllers[:128]
        parts.append(bytes((len(logs) - 1, *(x for pair in logs for x in pair))))
    if wheel:
        toc |= TOC_W
        parts.append(wheel)
    if notes:
        toc |= TOC_N
        parts.append(notes)
    if not toc:
        return b""
    body = b"".join(parts)
    length = 3 + len(body)  # at most 3 + 3 + 257 + 2 + 272: fits 10 bits
    return bytes((number << 3 | length >> 8, length & 0xFF, toc)) + body


MAX_SOURCES: Final = 256
"""Sources a stream journal remembers having recorded; past that it takes no newcomers."""


class StreamJournal:
    """The outbound history of one stream: what every receiver sharing it was sent.

    One per distinct stream on a port, not one per receiver: every receiver of a group's
    out port gets the same stream, and so do a room's listeners; a room member that has
    played gets its own (its stream lacks its own notes; ``share`` forks it off). Packets
    are numbered 0, 1, 2… in the order recorded (each receiver's cursor maps them to its
    own RTP sequence numbers). The checkpoint history runs from ``checkpoint`` *inclusive*
    to the last packet (RFC 6295 §4, §5: "Checkpoint Packet Seqnum"); ``checkpoint`` is the
    oldest packet some receiver has not acknowledged by RS (RFC 4696 §6), moved on after
    ``MAX_UNACKED`` packets without one. An entry leaves the journal only once the
    checkpoint is past the packet that made it.

    Held notes, the pedals (64, 66) and a moved wheel are always in the journal (they
    are what leaves notes stuck), and so are released notes until every receiver's RS
    confirms it has them: a receiver that missed a long stretch must still learn which
    of the notes it thinks held have ended (at most 16 bytes per channel). Other changes
    stay while their packet is in the checkpoint history.

    ``journal(budget)`` never exceeds ``budget`` bytes: when everything does not fit,
    each channel keeps only notes, pedals and wheel; when even that does not fit, the
    channels that fit (lowest first) — see docs/protocol.md, "Journal size".
    """

    __slots__ = ("_channels", "acked", "checkpoint", "last", "members", "sources", "trimmed")

    def __init__(self) -> None:
        self._channels: dict[int, _Channel] = {}
        self.checkpoint = 0  # number of the checkpoint packet (inclusive)
        self.acked = -1  # every receiver has every packet up to this one (RS)
        self.last = -1  # number of the last packet recorded; -1: none yet
        self.members: set[JournalCursor] = set()
        self.sources: set[str] = set()  # whose packets it recorded (see ``share``)
        self.trimmed = 0  # journals cut down to fit their packet

    def copy(self) -> StreamJournal:
        """The same history, for receivers whose streams part from here (no members)."""
        other = StreamJournal()
        other._channels = {n: c.copy() for n, c in self._channels.items()}
        other.checkpoint, other.acked, other.last = self.checkpoint, self.acked, self.last
        other.sources = set(self.sources)
        return other

    def record(self, commands: Iterable[Command], now: float = 0.0) -> int:
        """A packet carrying ``commands`` leaves (at ``now``) for every member; its number."""
        seq = self.last = self.last + 1
        channels = self._channels
        for _, message in commands:
            effect, number, a, b = classify(message)
            if effect is Effect.NONE:
                continue
            if effect is Effect.RESET_ALL:
                for channel in channels.values():
                    channel.system_reset(seq)
                continue
            state = channels.get(number)
            if state is None:
                state = channels[number] = _Channel()
            state.apply(effect, a, b, seq, now)
        if seq - self.checkpoint >= MAX_UNACKED:
            self._advance(seq - MAX_UNACKED // 2)
        return seq

    def settle(self) -> None:
        """The members' RS (or who the members are) changed: the checkpoint may move on."""
        floor = min((m.acked for m in self.members), default=self.last)
        if floor <= self.acked:
            return
        self.acked = floor
        for state in self._channels.values():
            if any(s < floor for s in state.off.values()):
                state.off = {note: s for note, s in state.off.items() if s >= floor}
                state.offmask = sum(1 << (127 - note) for note in state.off)
                state.encoded = None
        if floor > self.checkpoint:
            self._advance(floor)

    def _advance(self, checkpoint: int) -> None:
        """Controllers and programs changed before ``checkpoint`` leave the journal; one
        changed *in* the checkpoint packet stays (the history includes it)."""
        self.checkpoint = checkpoint
        for state in self._channels.values():
            state.encoded = None
            state.controllers = {
                n: (v, s if s >= checkpoint else -1) for n, (v, s) in state.controllers.items()
            }
            if state.program_seq < checkpoint:
                state.program_seq = -1
            # The wheel, once moved, stays in (2 bytes), like the pedals: a receiver
            # that missed a long stretch must still get the bend back to centre.

    def journal(self, budget: int = MAX_JOURNAL, now: float = 0.0) -> bytes | None:
        """The journal for the next packet, at most ``budget`` bytes, or None when there
        is nothing to repair (or not even the essentials of one channel fit). Its
        checkpoint field is left 0: each receiver's cursor writes its own."""
        full: list[bytes] = []
        essential: list[bytes] = []
        for number in sorted(self._channels):
            state = self._channels[number]
            encoded = state.encoded
            if encoded is None or now >= state.stale_at:
                encoded = state.encoded = state.encode(number, now)
            if encoded[0]:
                full.append(encoded[0])
                essential.append(encoded[1])
        if not full:
            return None
        parts = full
        if 3 + sum(map(len, full)) > budget:
            self.trimmed += 1
            parts, room = [], budget - 3
            for part in essential:  # by priority: notes, pedals, wheel; lowest channels
                if part and len(part) <= room:
                    parts.append(part)
                    room -= len(part)
            if not parts:
                return None
        return bytes((0x20 | (len(parts) - 1), 0, 0)) + b"".join(parts)


class JournalCursor:
    """One receiver's place in a ``StreamJournal``: what it acknowledged, and how the
    journal's packet numbers map to its own RTP sequence numbers (a run per stretch
    sent without a guard packet of its own in between)."""

    __slots__ = ("_last", "_runs", "acked", "owner", "stream")

    def __init__(self, owner: str = "") -> None:
        self.owner = owner  # the receiver's public id: whose packets it must not be told of
        self.stream: StreamJournal | None = None  # None: not sent anything journalled yet
        self.acked = -1
        self._last = -1  # number of the last packet of the stream it was sent
        self._runs: list[tuple[int, int]] = []  # (packet number, RTP sequence) run starts

    def attach(self, stream: StreamJournal) -> None:
        """Join ``stream``: its history from the next packet on is this receiver's."""
        self.stream = stream
        stream.members.add(self)
        self.acked = self._last = stream.last
        self._runs = []

    def move(self, stream: StreamJournal) -> None:
        """The same history under another journal (a fork: the numbers carry over)."""
        if self.stream is not None:
            self.stream.members.discard(self)
        self.stream = stream
        stream.members.add(self)

    def detach(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.members.discard(self)
            stream.settle()

    def sent(self, number: int, sequence: int) -> None:
        """Packet ``number`` of the stream went out with RTP sequence ``sequence``."""
        self._last = number
        runs = self._runs
        if runs:
            start, first = runs[-1]
            if (first + number - start) & 0xFFFF == sequence:
                return
            if len(runs) >= 8:
                self._prune()
        runs.append((number, sequence))

    def stamp(self, packet: bytearray, at: int, number: int, sequence: int) -> bool:
        """Packet ``number`` of the stream goes out as RTP ``sequence`` with the
        stream's journal at ``packet[at:]``: write this receiver's checkpoint into it.
        False: its first packet, no history to cover yet (send it without)."""
        runs = self._runs
        stream = self.stream
        if not runs or stream is None:
            self.sent(number, sequence)
            return False
        start, first = runs[-1]
        wanted = stream.checkpoint
        # The usual case first: the checkpoint is in the latest run.
        checkpoint = (first + wanted - start) & 0xFFFF if start <= wanted else self.checkpoint
        assert checkpoint is not None
        self._last = number
        if (first + number - start) & 0xFFFF != sequence:
            self.sent(number, sequence)  # a new run
        packet[at + 1] = checkpoint >> 8
        packet[at + 2] = checkpoint & 0xFF
        return True

    def _prune(self) -> None:
        """Runs wholly before the stream's checkpoint are no longer needed (an RS that
        old moves nothing the next one will not): at most one per packet since it."""
        stream = self.stream
        runs = self._runs
        if stream is not None:
            checkpoint = stream.checkpoint
            keep = 0
            for i, (start, _) in enumerate(runs):
                if start <= checkpoint:
                    keep = i
            del runs[:keep]
        if len(runs) > 2 * MAX_UNACKED:  # never reached by the hub's own use
            del runs[: len(runs) - 2 * MAX_UNACKED]

    @property
    def checkpoint(self) -> int | None:
        """The RTP sequence number of this receiver's checkpoint packet (RFC 6295 §5):
        the stream's, or its own first packet if it joined later; None before that."""
        stream, runs = self.stream, self._runs
        if stream is None or not runs:
            return None
        number = stream.checkpoint
        start, first = runs[-1]
        if start <= number:
            return (first + number - start) & 0xFFFF
        for start, first in reversed(runs):
            if start <= number:
                return (first + number - start) & 0xFFFF
        return runs[0][1]

    @property
    def acknowledged(self) -> bool:
        """RS has confirmed every journalled packet sent: nothing left to repair."""
        return self.acked >= self._last

    def acknowledge(self, sequence: int, next_sequence: int) -> None:
        """RS: the receiver has every packet up to RTP ``sequence`` (``next_sequence``:
        the one we send next; feedback about packets never sent is ignored)."""
        if (next_sequence - 1 - sequence) & 0xFFFF >= 0x8000 or self.stream is None:
            return
        runs = self._runs
        bound = self._last
        for start, first in reversed(runs):
            ahead = (sequence - first) & 0xFFFF
            if ahead < 0x8000:
                number = min(start + ahead, bound)
                if number > self.acked:
                    self.acked = number
                    self.stream.settle()
                return
            bound = start - 1


def share(
    cursors: Sequence[JournalCursor], source: str | None
) -> Sequence[tuple[StreamJournal, list[int] | None]]:
    """Group the receivers of one forward (by index; None: all of them) so that each
    group's stream journal is encoded once per packet; ``source`` is whose packets
    these are.

    Every receiver of a stream journal gets all it records. When only some do (a room
    member does not get its own packets; a panic or a stale receiver), the journal forks:
    the smaller side moves to a copy. A receiver new to journals joins the largest group
    whose journal never recorded its own packets (its journal may then describe notes
    held before it joined: docs/protocol.md), or a new journal."""
    stream = cursors[0].stream
    if stream is not None and len(stream.members) == len(cursors):  # the usual case:
        for cursor in cursors:  # one stream, and all its receivers get this
            if cursor.stream is not stream:
                break
        else:
            if source is not None and len(stream.sources) < MAX_SOURCES:
                stream.sources.add(source)
            return [(stream, None)]
    out: list[tuple[StreamJournal, list[int]]] = []
    groups: dict[StreamJournal, list[int]] = {}
    fresh: list[int] = []
    for i, cursor in enumerate(cursors):
        stream = cursor.stream
        if stream is None:
            fresh.append(i)
        elif len(stream.members) == 1:  # a stream of its own (a room's players)
            out.append((stream, [i]))
        elif stream in groups:
            groups[stream].append(i)
        else:
            groups[stream] = [i]
    for stream, members in groups.items():
        if len(members) != len(stream.members):
            stream = _fork(stream, [cursors[i] for i in members])
        out.append((stream, members))
    for i in fresh:
        owner = cursors[i].owner
        taken = [
            (len(members), n)
            for n, (s, members) in enumerate(out)
            if owner not in s.sources and len(s.sources) < MAX_SOURCES
        ]
        if taken:
            stream, members = out[max(taken)[1]]
            members.append(i)
        else:
            stream = StreamJournal()
            out.append((stream, [i]))
        cursors[i].attach(stream)
    if source is not None:
        for stream, _ in out:
            if len(stream.sources) < MAX_SOURCES:  # full: it takes no newcomers
                stream.sources.add(source)
    return out


def _fork(stream: StreamJournal, receiving: list[JournalCursor]) -> StreamJournal:
    """Part ``stream``'s receivers (those ``receiving`` the next packet from the rest);
    the smaller side moves to a copy. Returns the journal of those receiving."""
    copy = stream.copy()
    if 2 * len(receiving) <= len(stream.members):
        movers: Iterable[JournalCursor] = receiving
        result = copy
    else:
        movers = stream.members.difference(receiving)
        result = stream
    for cursor in list(movers):
        cursor.move(copy)
    stream.settle()
    copy.settle()
    return result


# -- receiver ------------------------------------------------------------------


def missed_before_first(sequence: int, journal: tuple[bytes, int, int]) -> int:
    """Packets missed before the first one we get of a stream: its journal covers the
    checkpoint packet *inclusive* up to the packet before it (RFC 6295 §4-§5), so
    from the checkpoint on, every packet before this one was sent and is known lost
    (none: the checkpoint is this packet, an empty history)."""
    data, start, end = journal
    if end - start < 3:
        return 0
    missed = (sequence - (data[start + 1] << 8 | data[start + 2])) & 0xFFFF
    return missed if missed < 0x8000 else 0


class HeldState(Protocol):
    """What the receiver knows now (the hub's ``NoteState`` satisfies this)."""

    def holds(self, channel: int, note: int) -> bool: ...

    def pedal(self, channel: int, controller: int) -> bool: ...

    def wheel(self, channel: int) -> int: ...

    def controller(self, channel: int, number: int) -> int | None: ...

    def program(self, channel: int) -> int | None: ...


def repair(journal: Journal, state: HeldState) -> list[Command]:
    """Messages that bring ``state`` to what ``journal`` describes: NoteOffs for notes
    it says ended, NoteOns for notes it says are held (unless their log says Y = 0:
    too stale to start now), then controllers, wheel and program. Nothing for what
    already agrees, so a repair is never applied twice."""
    out: list[Command] = []
    for cj in journal.channels:
        ch = cj.channel
        logged = {n for n, _ in cj.notes_on}.union(n for n, _ in cj.quiet)
        for note in sorted(cj.notes_off):
            if state.holds(ch, note) and note not in logged:
                out.append((0, bytes((0x80 | ch, note, 0))))
        for note, velocity in cj.notes_on:
            if not state.holds(ch, note):
                out.append((0, bytes((0x90 | ch, note, velocity))))
        for number, value in cj.controllers:
            if number in (CC_SUSTAIN, CC_SOSTENUTO):
                if state.pedal(ch, number) != (value >= 64):
                    out.append((0, bytes((0xB0 | ch, number, value))))
            elif number < 120 and state.controller(ch, number) != value:
                out.append((0, bytes((0xB0 | ch, number, value))))
        if cj.wheel is not None and state.wheel(ch) != cj.wheel:
            out.append((0, bytes((0xE0 | ch, cj.wheel & 0x7F, cj.wheel >> 7))))
        if cj.program is not None and state.program(ch) != cj.program[0]:
            # A program change restarts a synth's voice: only when it was really missed.
            program, msb, lsb = cj.program
            if msb is not None:
                out.append((0, bytes((0xB0 | ch, CC_BANK_MSB, msb))))
                out.append((0, bytes((0xB0 | ch, CC_BANK_LSB, lsb or 0))))
            out.append((0, bytes((0xC0 | ch, program))))
    return out
