"""The RFC 6295 recovery journal: codec, the sender's state, and repair.

A journal rides after the MIDI list of an RTP packet (J = 1) and describes what
changed since a *checkpoint* packet, so a receiver that lost packets can restore
the state they carried without a retransmission (RFC 6295 §4-§6, Appendix A).
We write and use chapters P (program), C (controllers), W (pitch wheel) and N
(notes); every other chapter is skipped by its length.

- ``encode_journal`` / ``decode_journal``: bytes <-> ``Journal``.
- ``JournalSender`` (one per outgoing session): ``journal()`` for the next packet,
  ``record(seq, commands)`` after it, ``on_feedback(seq)`` when RS arrives.
- ``repair(journal, state)``: the messages that bring a receiver's state (what the
  hub tracks per source) to what the journal says, to play before the packet's own.

Sans-IO: no sockets, no clocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from midihub.rtp.commands import Command
from midihub.rtp.errors import ProtocolError

PITCH_CENTRE = 8192
CC_BANK_MSB, CC_BANK_LSB, CC_SUSTAIN, CC_SOSTENUTO = 0, 32, 64, 66
CC_ALL_NOTES_OFF_FIRST = 123  # 123-127 all end every note; 120 (all sound off) too
MAX_UNACKED = 64  # packets a silent receiver may lag before the checkpoint moves on
MAX_JOURNAL = 900  # bytes; beyond this a packet goes without (J = 0)

# Channel journal table of contents (RFC 6295 §5.2), in chapter order.
TOC_P, TOC_C, TOC_M, TOC_W, TOC_N, TOC_E, TOC_T, TOC_A = 0x80, 0x40, 0x20, 0x10, 8, 4, 2, 1


@dataclass(slots=True)
class ChannelJournal:
    channel: int  # 0..15
    program: tuple[int, int | None, int | None] | None = None  # program, bank MSB, LSB
    controllers: list[tuple[int, int]] = field(default_factory=list)  # (number, value)
    wheel: int | None = None  # 0..16383
    notes_on: list[tuple[int, int]] = field(default_factory=list)  # (note, velocity)
    notes_off: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Journal:
    checkpoint: int
    channels: list[ChannelJournal] = field(default_factory=list)
    single_loss: bool = False


# -- codec ---------------------------------------------------------------------


def encode_journal(journal: Journal) -> bytes:
    if not 1 <= len(journal.channels) <= 16:
        raise ValueError("a journal carries 1 to 16 channel journals")
    first = (0x80 if journal.single_loss else 0) | 0x20 | (len(journal.channels) - 1)
    out = bytearray((first, journal.checkpoint >> 8 & 0xFF, journal.checkpoint & 0xFF))
    for channel in journal.channels:
        out += _encode_channel(channel)
    return bytes(out)


def _encode_channel(cj: ChannelJournal) -> bytes:
    toc = 0
    body = bytearray()
    if cj.program is not None:
        toc |= TOC_P
        program, msb, lsb = cj.program
        banked = msb is not None
        body += bytes((program, (0x80 if banked else 0) | (msb or 0), lsb or 0))
    if cj.controllers:
        toc |= TOC_C
        body.append(len(cj.controllers) - 1)
        for number, value in cj.controllers:
            body += bytes((number, value))
    if cj.wheel is not None:
        toc |= TOC_W
        body += bytes((cj.wheel & 0x7F, cj.wheel >> 7 & 0x7F))
    if cj.notes_on or cj.notes_off:
        toc |= TOC_N
        body += _encode_notes(cj.notes_on, cj.notes_off)
    length = 3 + len(body)
    if length > 0x3FF:
        raise ValueError("channel journal longer than its 10-bit length allows")
    return bytes((cj.channel << 3 | length >> 8, length & 0xFF, toc)) + body


def _encode_notes(notes_on: list[tuple[int, int]], notes_off: set[int]) -> bytes:
    if len(notes_on) > 127:
        raise ValueError("chapter N: at most 127 note logs")
    if notes_off:
        low, high = min(notes_off) >> 3, max(notes_off) >> 3
        bits = bytearray(high - low + 1)
        for note in notes_off:
            bits[(note >> 3) - low] |= 0x80 >> (note & 7)
    else:  # no bitfield: LOW > HIGH, but 15/0 with 127 logs would read as 128 logs (A.6)
        low, high, bits = 1, 0, bytearray()
    out = bytearray((len(notes_on), low << 4 | high))
    for note, velocity in notes_on:
        out += bytes((note, 0x80 | velocity))  # Y = 1: still worth playing
    return bytes(out + bits)


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
            if velocity & 0x7F:
                cj.notes_on.append((note, velocity & 0x7F))
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
    until something on the channel changes (a packet touches one channel or two)."""

    __slots__ = (
        "bank",
        "controllers",
        "encoded",
        "held",
        "off",
        "offmask",
        "program",
        "program_seq",
        "wheel",
        "wheel_seq",
    )

    def __init__(self) -> None:
        self.program: tuple[int, int | None, int | None] | None = None
        self.program_seq = -1
        self.bank: tuple[int | None, int | None] = (None, None)
        self.controllers: dict[int, tuple[int, int]] = {}  # number → (value, seq)
        self.wheel = PITCH_CENTRE
        self.wheel_seq = -1
        self.held: dict[int, bytes] = {}  # note → its log: note, Y = 1 | velocity
        self.off: dict[int, int] = {}  # note → seq of its NoteOff
        self.offmask = 0  # bit 127 - note set for each note in ``off``
        self.encoded: bytes | None = None

    def end_notes(self, seq: int) -> None:
        for note in self.held:
            self.off[note] = seq
            self.offmask |= 1 << (127 - note)
        self.held.clear()

    def encode(self, number: int) -> bytes:
        """This channel's journal (RFC 6295 §5.2 + chapters P, C, W, N), or b""."""
        toc = 0
        parts: list[bytes] = []
        if self.program is not None and self.program_seq >= 0:
            toc |= TOC_P
            program, msb, lsb = self.program
            parts.append(bytes((program, 0 if msb is None else 0x80 | msb, lsb or 0)))
        if self.controllers:
            toc |= TOC_C
            logs = sorted(self.controllers.items())[:128]
            parts.append(bytes((len(logs) - 1, *(x for n, (v, _) in logs for x in (n, v)))))
        if self.wheel != PITCH_CENTRE or self.wheel_seq >= 0:
            toc |= TOC_W
            parts.append(bytes((self.wheel & 0x7F, self.wheel >> 7 & 0x7F)))
        mask = self.offmask
        if self.held or mask:
            toc |= TOC_N
            held = self.held
            notes = (
                b"".join(held.values()) if len(held) <= 127 else b"".join(list(held.values())[:127])
            )
            if mask:
                low = (128 - mask.bit_length()) >> 3
                high = (128 - (mask & -mask).bit_length()) >> 3
                bits = mask.to_bytes(16, "big")[low : high + 1]
            else:  # no bitfield: LOW > HIGH, and not 15/0, which can mean 128 logs
                low, high, bits = 1, 0, b""
            parts.append(bytes((len(notes) >> 1, low << 4 | high)) + notes + bits)
        if not toc:
            return b""
        body = b"".join(parts)
        length = 3 + len(body)  # at most 3 + 3 + 257 + 2 + 272: fits 10 bits
        return bytes((number << 3 | length >> 8, length & 0xFF, toc)) + body


class JournalSender:
    """What one receiver may have missed since the checkpoint.

    Held notes, pedals down and a bent wheel are always in the journal (they are
    what leaves notes stuck), and so are released notes until the receiver's RS
    confirms it has them: a receiver that missed a long stretch must still learn
    which of the notes it thinks held have ended (at most 16 bytes per channel).
    Other changes stay until RS, or until ``MAX_UNACKED`` packets have passed without
    one, which keeps the journal small for peers that never send RS.
    """

    __slots__ = ("_cache", "_channels", "_count", "checkpoint", "last_seq")

    def __init__(self) -> None:
        self._channels: dict[int, _Channel] = {}
        self.checkpoint: int | None = None  # sequence number; None: nothing sent yet
        self.last_seq: int | None = None
        self._count = 0  # packets recorded since the checkpoint
        self._cache: bytes | None = None

    def record(self, seq: int, commands: Iterable[Command]) -> None:
        """The packet ``seq`` has left carrying ``commands``."""
        if self.checkpoint is None:
            self.checkpoint = (seq - 1) & 0xFFFF
        self.last_seq = seq
        self._count += 1
        self._cache = None
        for _, message in commands:
            status = message[0]
            if status >= 0xF0:
                if status == 0xFF:  # System Reset
                    for channel in self._channels.values():
                        channel.end_notes(seq)
                        channel.encoded = None
                continue
            kind = status & 0xF0
            state = self._channels.get(status & 0x0F)
            if state is None:
                state = self._channels[status & 0x0F] = _Channel()
            state.encoded = None
            if kind == 0x90 and message[2]:
                note = message[1]
                state.held[note] = bytes((note, 0x80 | message[2]))  # Y = 1: still worth playing
                if state.off.pop(note, None) is not None:
                    state.offmask &= ~(1 << (127 - note))
            elif kind == 0x80 or kind == 0x90:
                note = message[1]
                if state.held.pop(note, None) is not None:
                    state.off[note] = seq
                    state.offmask |= 1 << (127 - note)
            elif kind == 0xB0:
                number, value = message[1], message[2]
                if number >= 120 and number != 121:  # ends every note
                    state.end_notes(seq)
                elif number == CC_BANK_MSB:
                    state.bank = (value, state.bank[1])
                elif number == CC_BANK_LSB:
                    state.bank = (state.bank[0], value)
                if number < 120:
                    state.controllers[number] = (value, seq)
            elif kind == 0xC0:
                state.program = (message[1], *state.bank)
                state.program_seq = seq
            elif kind == 0xE0:
                state.wheel = message[1] | message[2] << 7
                state.wheel_seq = seq
        if self._count > MAX_UNACKED:
            self._advance((seq - MAX_UNACKED // 2) & 0xFFFF, acknowledged=False)

    def on_feedback(self, seq: int) -> None:
        """RS: the receiver has every packet up to ``seq``."""
        if self.checkpoint is None or self.last_seq is None:
            return
        ahead = (self.last_seq - seq) & 0xFFFF
        if ahead >= 0x8000:  # feedback about packets we never sent
            return
        behind = (seq - self.checkpoint) & 0xFFFF
        if 0 < behind < 0x8000:
            self._advance(seq)

    def _advance(self, checkpoint: int, *, acknowledged: bool = True) -> None:
        self.checkpoint = checkpoint
        self._count = (self.last_seq - checkpoint) & 0xFFFF if self.last_seq is not None else 0
        self._cache = None

        def newer(seq: int) -> bool:
            return 0 < (seq - checkpoint) & 0xFFFF < 0x8000

        for state in self._channels.values():
            state.encoded = None
            if acknowledged:
                state.off = {note: s for note, s in state.off.items() if newer(s)}
                state.offmask = sum(1 << (127 - note) for note in state.off)
            state.controllers = {
                n: (v, s)
                for n, (v, s) in state.controllers.items()
                if newer(s) or (n in (CC_SUSTAIN, CC_SOSTENUTO) and v >= 64)
            }
            if state.program_seq >= 0 and not newer(state.program_seq):
                state.program_seq = -1

    def journal(self) -> bytes | None:
        """The journal for the next packet, or None when there is nothing to repair."""
        if self._cache is not None or self.checkpoint is None:
            return self._cache or None
        parts: list[bytes] = []
        for number in sorted(self._channels):
            state = self._channels[number]
            encoded = state.encoded
            if encoded is None:
                encoded = state.encoded = state.encode(number)
            if encoded:
                parts.append(encoded)
        if not parts or 3 + sum(map(len, parts)) > MAX_JOURNAL:
            self._cache = b""  # nothing to say, or too much for one packet (J = 0)
            return None
        checkpoint = self.checkpoint
        self._cache = bytes((0x20 | (len(parts) - 1), checkpoint >> 8, checkpoint & 0xFF))
        self._cache += b"".join(parts)
        return self._cache


# -- receiver ------------------------------------------------------------------


class HeldState(Protocol):
    """What the receiver knows now (the hub's ``NoteState`` satisfies this)."""

    def holds(self, channel: int, note: int) -> bool: ...

    def pedal(self, channel: int, controller: int) -> bool: ...

    def wheel(self, channel: int) -> int: ...

    def controller(self, channel: int, number: int) -> int | None: ...

    def program(self, channel: int) -> int | None: ...


def repair(journal: Journal, state: HeldState) -> list[Command]:
    """Messages that bring ``state`` to what ``journal`` describes: NoteOffs for notes
    it says ended, NoteOns for notes it says are held, then controllers, wheel and
    program. Nothing for what already agrees, so a repair is never applied twice."""
    out: list[Command] = []
    for cj in journal.channels:
        ch = cj.channel
        for note in sorted(cj.notes_off):
            if state.holds(ch, note) and all(n != note for n, _ in cj.notes_on):
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
