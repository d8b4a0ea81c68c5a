"""The MIDI command section of an RTP MIDI payload (RFC 6295 §3): a header, then a
list of MIDI commands separated by delta times.

A decoded command is ``(delta, message)``: ``delta`` in RTP timestamp units since the
previous command (the first: since the packet's timestamp), ``message`` one complete
MIDI message, or a SysEx *segment* (``F0…F0``, ``F7…F0``, ``F7…F7``, or any ending in
``F4`` = cancelled) that :class:`SysexAssembler` joins across packets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

from midihub.midi.messages import DATA_LENGTH, SYSEX_END, SYSEX_START, Message
from midihub.rtp.errors import ProtocolError

Command = tuple[int, Message]

FLAG_B: Final = 0x80
FLAG_J: Final = 0x40
FLAG_Z: Final = 0x20
FLAG_P: Final = 0x10
LIST_LENGTH_LIMIT: Final = 0x0FFF  # the 12-bit LEN of a command section (RFC 6295 §3)
SYSEX_CANCEL: Final = 0xF4

MAX_DELTA: Final = 0x0FFFFFFF  # four 7-bit groups


def decode_payload(data: bytes, start: int, end: int) -> tuple[list[Command], int | None]:
    """The commands, and where the recovery journal starts (None when J = 0)."""
    commands, journal = decode_command_section(data, start, end)
    if not journal:
        return commands, None
    header = data[start]
    length = header & 0x0F
    pos = start + 1
    if header & FLAG_B:
        length = (length << 8) | data[pos]
        pos += 1
    return commands, pos + length


def decode_command_section(data: bytes, start: int, end: int) -> tuple[list[Command], bool]:
    """Decode the command section at ``data[start:end]``.

    Returns the commands and whether a recovery journal (J) follows the list; the
    journal is not read here.
    """
    if start >= end:
        raise ProtocolError("RTP MIDI payload is empty")
    header = data[start]
    length = header & 0x0F
    pos = start + 1
    if header & FLAG_B:
        if pos >= end:
            raise ProtocolError("command section header truncated")
        length = (length << 8) | data[pos]
        pos += 1
    list_end = pos + length
    if list_end > end:
        raise ProtocolError(
            f"MIDI list length {length} exceeds the {end - pos} bytes left in the packet"
        )
    journal = bool(header & FLAG_J)
    if journal and list_end >= end:
        raise ProtocolError("J flag set but no journal follows the MIDI list")
    return _decode_list(data, pos, list_end, bool(header & FLAG_Z)), journal


def _decode_list(data: bytes, pos: int, end: int, z: bool) -> list[Command]:
    commands: list[Command] = []
    running = 0
    first = True
    while pos < end:
        delta = 0
        if z or not first:
            delta, pos = _read_delta(data, pos, end)
            if pos >= end:
                raise ProtocolError("delta time at the end of the MIDI list has no command")
        first = False
        status = data[pos]
        if status < 0x80:
            if not running:
                raise ProtocolError("data byte where a status byte is needed (no running status)")
            status = running
            data_start = pos
        else:
            data_start = pos + 1
        if status >= 0xF8:  # real-time: one byte, running status survives it
            commands.append((delta, bytes((status,))))
            pos += 1
            continue
        if status in (SYSEX_START, SYSEX_END):
            running = 0
            pos = _read_sysex(data, pos, end, delta, commands)
            continue
        count = DATA_LENGTH[status]
        stop = data_start + count
        if stop > end:
            raise ProtocolError(f"MIDI command {status:#04x} truncated")
        body = data[data_start:stop]
        for byte in body:
            if byte >= 0x80:
                raise ProtocolError(f"status byte {byte:#04x} inside a {status:#04x} command")
        commands.append((delta, bytes((status,)) + body))
        running = status if status < 0xF0 else 0
        pos = stop
    return commands


def _read_delta(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):
        if pos >= end:
            raise ProtocolError("delta time truncated")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos
    raise ProtocolError("delta time longer than 4 bytes")


def _read_sysex(data: bytes, pos: int, end: int, delta: int, commands: list[Command]) -> int:
    """Read one SysEx command or segment starting at ``data[pos]`` (F0 or F7).

    Real-time bytes inside it are delivered as their own commands, ahead of it.
    """
    segment = bytearray((data[pos],))
    pos += 1
    while pos < end:
        byte = data[pos]
        pos += 1
        if byte < 0x80:
            segment.append(byte)
        elif byte >= 0xF8:
            commands.append((delta, bytes((byte,))))
            delta = 0
        elif byte in (SYSEX_END, SYSEX_START, SYSEX_CANCEL):
            segment.append(byte)
            commands.append((delta, bytes(segment)))
            return pos
        else:
            raise ProtocolError(f"status byte {byte:#04x} inside a SysEx command")
    raise ProtocolError("SysEx command has no end byte (F7, F0 or F4) in the MIDI list")


class SysexAssembler:
    """Joins SysEx segments that span packets back into complete messages.

    A lost or cancelled segment drops the whole SysEx, as RFC 6295 requires. One
    longer than ``max_size`` is dropped whole as soon as it outgrows the cap, so an
    endless SysEx costs at most ``max_size`` bytes of memory and nothing is forwarded
    half.
    """

    __slots__ = ("_parts", "_skipping", "incomplete", "max_size", "too_long")

    def __init__(self, max_size: int = 65536) -> None:
        self.max_size = max_size
        self._parts: bytearray | None = None
        self._skipping = False  # inside a SysEx we gave up on: ignore it to its end
        self.incomplete = 0  # lost a segment, cancelled, or a continuation without its start
        self.too_long = 0

    @property
    def open(self) -> bool:
        """A SysEx has started and not yet ended (being assembled or skipped)."""
        return self._parts is not None or self._skipping

    @property
    def buffered(self) -> int:
        """Bytes held for the SysEx being assembled (at most ``max_size``)."""
        return 0 if self._parts is None else len(self._parts)

    @property
    def skipping(self) -> bool:
        """Inside a SysEx we gave up on: its remaining segments are ignored."""
        return self._skipping

    def push(self, segment: Message) -> Message | None:
        """Take a SysEx command or segment; return a complete SysEx when one finishes."""
        first, last = segment[0], segment[-1]
        if last == SYSEX_CANCEL or len(segment) < 2:
            self._drop()
            return None
        if first == SYSEX_START:
            self._drop()  # a new SysEx while one is open: the old one is lost
            if len(segment) > self.max_size:
                self.too_long += 1
                self._skipping = last != SYSEX_END
                return None
            if last == SYSEX_END:
                return segment
            self._parts = bytearray(segment[:-1])
            return None
        # A continuation (F7…): useless without its beginning.
        if self._parts is None:
            if self._skipping:
                self._skipping = last != SYSEX_END
            else:
                self.incomplete += 1
            return None
        if len(self._parts) + len(segment) > self.max_size:
            self.too_long += 1
            self._parts = None
            self._skipping = last != SYSEX_END
            return None
        self._parts += segment[1:-1]
        if last == SYSEX_END:
            whole = bytes(self._parts) + b"\xf7"
            self._parts = None
            return whole
        return None

    def abort(self) -> None:
        """Give up on the open SysEx (or the one this segment starts) to its end."""
        self._parts = None
        self._skipping = True

    def packet_lost(self) -> None:
        """A sequence gap: a segment may be missing, so the open SysEx is unusable."""
        self._drop()

    def _drop(self) -> None:
        if self._parts is not None:
            self.incomplete += 1
            self._parts = None
        self._skipping = False


def encode_delta(delta: int) -> bytes:
    if not 0 <= delta <= MAX_DELTA:
        raise ValueError(f"delta time must be 0..{MAX_DELTA}, got {delta}")
    out = bytearray((delta & 0x7F,))
    delta >>= 7
    while delta:
        out.insert(0, 0x80 | (delta & 0x7F))
        delta >>= 7
    return bytes(out)


_DELTA_ZERO: Final = b"\x00"


def encode_section(body: bytes, journal: bool = False) -> bytes:
    """Prefix an encoded MIDI list with its section header (always Z=1)."""
    length = len(body)
    flags = FLAG_Z | (FLAG_J if journal else 0)
    if length <= 0x0F:
        return bytes((flags | length,)) + body
    if length > LIST_LENGTH_LIMIT:
        raise ValueError(f"MIDI list of {length} bytes exceeds {LIST_LENGTH_LIMIT}")
    return bytes((FLAG_B | flags | (length >> 8), length & 0xFF)) + body


class Section(NamedTuple):
    """One encoded command section (header + list) and the commands it completes:
    what a recovery journal must record against the packet that carries it."""

    data: bytes
    commands: Sequence[Command]


def encode_sections(commands: Sequence[Command], max_length: int) -> list[Section]:
    """``encode_lists`` with section headers, each list paired with its commands (a
    SysEx split over several lists belongs to the one holding its last segment)."""
    ends: list[int] = []
    lists = encode_lists(commands, max_length, ends)
    out: list[Section] = []
    start = 0
    for body, end in zip(lists, ends, strict=True):
        out.append(Section(encode_section(body), commands[start:end]))
        start = end
    return out


def encode_lists(
    commands: Iterable[Command], max_length: int, ends: list[int] | None = None
) -> list[bytes]:
    """Encode commands as MIDI lists of at most ``max_length`` bytes each.

    Every list starts with a delta time (sent with Z=1: some peers drop a lone
    one-byte command without one) and uses running status within the list. A
    SysEx that does not fit is split into segments across lists. ``ends``, when
    given, receives for each list how many commands are complete after it.
    """
    if max_length < 8:
        raise ValueError("max_length too small to hold a command")
    lists: list[bytes] = []
    out = bytearray()
    running = 0
    done = 0

    def close(count: int) -> None:
        lists.append(bytes(out))
        out.clear()
        if ends is not None:
            ends.append(count)

    for delta, message in commands:
        status = message[0]
        if status == SYSEX_START:
            running = 0
            needed = len(encode_delta(delta)) + len(message)
            if len(out) + needed > max_length:
                if out:
                    close(done)
                if needed > max_length:
                    _segment_sysex(delta, message, max_length, lists, out)
                    if ends is not None:  # its leading segments complete nothing new
                        ends.extend([done] * (len(lists) - len(ends)))
                    done += 1
                    continue
            out += encode_delta(delta)
            out += message
            done += 1
            continue
        use_running = status < 0xF0 and status == running
        piece = encode_delta(delta) + (message[1:] if use_running else message)
        if len(out) + len(piece) > max_length:
            close(done)
            running = 0
            piece = encode_delta(delta) + message
        out += piece
        done += 1
        # After a system message, restate the status: some receivers expect it.
        running = status if status < 0xF0 else 0
    if out:
        close(done)
    return lists


def _segment_sysex(
    delta: int, message: Message, max_length: int, lists: list[bytes], out: bytearray
) -> None:
    """Split a SysEx into first (F0…F0), middle (F7…F0) and last (F7…F7) segments.

    Every segment but the last fills a list on its own; the last stays in ``out`` so
    that following commands can share its packet.
    """
    payload = message[1:-1]
    lead = encode_delta(delta)
    room = max_length - len(lead) - 2
    pos = 0
    opener = SYSEX_START
    while True:
        chunk = payload[pos : pos + room]
        pos += len(chunk)
        if pos >= len(payload):
            out += lead + bytes((opener,)) + chunk + bytes((SYSEX_END,))
            return
        lists.append(lead + bytes((opener,)) + chunk + bytes((SYSEX_START,)))
        opener = SYSEX_END
        lead = _DELTA_ZERO
        room = max_length - 3
