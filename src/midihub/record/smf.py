"""Standard MIDI Files (type 1): one track per player after a conductor track with
the tempo and markers (joins, leaves, panics), written from a journal and read back
by streaming: memory does not grow with a recording's length.

Timing is exact to the millisecond: 500 ticks per beat at 500000 µs per beat
(120 BPM), so one tick is one millisecond of the hub's arrival time.

Writing: a chunk needs its length before its bytes, so each track's events are
buffered (at most ``SPILL`` bytes a track, ``BUFFERED`` in all) and spilled to a
file of its own beside the target; the SMF is then their concatenation. ``mido``
reads what is written here (the tests use it as the independent reader); it is not
used to write or read, because it holds a whole file as one object per message.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import shutil
import struct
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from midihub.midi.held import NoteState
from midihub.record import journal
from midihub.record.journal import Header

TICKS_PER_BEAT = 500
TEMPO = 500_000  # µs per beat: 500 ticks per 0.5 s, one tick per ms
CHARSET = "utf-8"  # track names and markers (players' names are Unicode)
SUFFIX = ".mid"
INFO_PREFIX = "midihub "  # a text event in track 0 holding the recording's header as JSON

SPILL: Final = 32 * 1024  # a track's buffered bytes go to its spill file at this size
BUFFERED: Final = 4 << 20  # all tracks' buffered bytes together, at most
READ_BLOCK: Final = 16 * 1024  # bytes a track reader holds
MAX_TRACKS: Final = 0xFFFF  # what the SMF header can count

# Meta event types
TEXT: Final = 0x01
TRACK_NAME: Final = 0x03
MARKER: Final = 0x06
END_OF_TRACK: Final = 0x2F
SET_TEMPO: Final = 0x51
MESSAGE: Final = -1  # a MIDI message (SysEx included), not a meta event
ESCAPE: Final = -2  # an F7 escape (raw bytes): not replayed

_LENGTHS: Final = {0x8: 3, 0x9: 3, 0xA: 3, 0xB: 3, 0xC: 2, 0xD: 2, 0xE: 3}
_SYSTEM_LENGTHS: Final = {0xF1: 2, 0xF2: 3, 0xF3: 2}  # the rest of 0xF1-0xFE: 1


@dataclass(slots=True)
class Info:
    """What the list of recordings shows, read back from an SMF."""

    header: Header
    duration: float  # seconds
    players: list[str]
    messages: int
    size: int


def _varlen(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _meta(kind: int, data: bytes) -> bytes:
    return bytes((0xFF, kind)) + _varlen(len(data)) + data


def _event(message: bytes) -> bytes | None:
    """A message as an SMF event's bytes (after the delta), or None if it is not one
    whole channel message or SysEx (the hub records only those; a bad one is dropped)."""
    if not message:
        return None
    status = message[0]
    if status == 0xF0:
        if len(message) < 2 or message[-1] != 0xF7 or max(message[1:-1], default=0) > 0x7F:
            return None
        return b"\xf0" + _varlen(len(message) - 1) + message[1:]
    if status < 0x80 or status > 0xEF or len(message) != _LENGTHS[status >> 4]:
        return None
    return message if max(message[1:]) < 0x80 else None


class _Track:
    """One track being written: its events buffered, then spilled to ``path``."""

    __slots__ = ("buffer", "held", "last", "length", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.buffer = bytearray()
        self.last = 0  # ms of the last event
        self.length = 0  # bytes of the chunk so far, spilled or not
        self.held = NoteState()  # what the player still holds, ended with the file

    def add(self, ms: int, event: bytes) -> int:
        delta = ms - self.last
        if delta < 0:
            delta = 0
        else:
            self.last = ms
        data = _varlen(delta) + event
        self.buffer += data
        self.length += len(data)
        return len(data)

    def spill(self) -> None:
        if self.buffer:
            with open(self.path, "ab") as file:
                file.write(self.buffer)
            self.buffer.clear()

    def copy_to(self, out: BinaryIO) -> None:
        self.spill()
        out.write(b"MTrk" + struct.pack(">I", self.length))
        if self.length:
            with open(self.path, "rb") as file:
                shutil.copyfileobj(file, out, 1 << 20)


def write(reader: journal.Reader, path: Path) -> Info:
    """The SMF of a journal, written beside ``path`` and renamed into place (a reader
    never sees half a file): every player's messages on its own track, in order.
    OSError (a full disk) propagates."""
    header = reader.header
    partial = path.with_name(path.name + ".partial")
    spill = path.with_name(path.name + ".tracks")
    shutil.rmtree(spill, ignore_errors=True)  # left by a crash mid-finish
    spill.mkdir()
    try:
        conductor = _Track(spill / "conductor")
        conductor.add(0, _meta(TRACK_NAME, header.name.encode(CHARSET)))
        info = json.dumps(header.as_dict(), separators=(",", ":"))
        conductor.add(0, _meta(TEXT, (INFO_PREFIX + info).encode(CHARSET)))
        conductor.add(0, _meta(SET_TEMPO, TEMPO.to_bytes(3, "big")))
        tracks: dict[int, _Track] = {}
        players: dict[int, str] = {}
        messages = duration = buffered = 0
        for ms, kind, number, value in reader:
            if kind == journal.MIDI:
                track = tracks.get(number)
                event = _event(value) if track is not None else None
                if track is None or event is None:
                    continue
                buffered += track.add(ms, event)
                track.held.apply(value)
                messages += 1
                if len(track.buffer) >= SPILL:
                    buffered -= len(track.buffer)
                    track.spill()
            elif kind == journal.PLAYER:
                if number in tracks or len(tracks) >= MAX_TRACKS - 1:
                    continue
                track = tracks[number] = _Track(spill / str(len(tracks)))
                players[number] = value
                buffered += track.add(0, _meta(TRACK_NAME, value.encode(CHARSET)))
                continue  # a player's time is its first message's
            elif kind == journal.MARKER:
                buffered += conductor.add(ms, _meta(MARKER, value.encode(CHARSET)))
            duration = max(duration, ms)
            if buffered > BUFFERED:
                for track in (conductor, *tracks.values()):
                    track.spill()
                buffered = 0
        conductor.add(duration, _meta(END_OF_TRACK, b""))
        ordered = [tracks[number] for number in sorted(tracks)]
        for track in ordered:
            # Stopped mid-note (by hand, at the cap): the file ends what was held, at its end.
            for _, release in track.held.release():  # the hub's, not counted as played
                track.add(duration, release)
            track.add(track.last, _meta(END_OF_TRACK, b""))
        with open(partial, "wb") as out:
            out.write(b"MThd" + struct.pack(">IHHH", 6, 1, 1 + len(ordered), TICKS_PER_BEAT))
            for track in (conductor, *ordered):
                track.copy_to(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    names = [players[number] for number in sorted(players)]
    return Info(header, duration / 1000, names, messages, path.stat().st_size)


# -- reading ----------------------------------------------------------------------


class _Chunk:
    """One track chunk of a file, read a block at a time (the file may be shared by
    the readers of other tracks: each seeks to its own place)."""

    __slots__ = ("buffer", "end", "file", "offset", "pos")

    def __init__(self, file: BinaryIO, offset: int, length: int) -> None:
        self.file = file
        self.offset = offset  # where the next block starts
        self.end = offset + length
        self.buffer = b""
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.buffer) and self.offset >= self.end

    def _need(self, count: int) -> None:
        if len(self.buffer) - self.pos >= count:
            return
        want = min(max(READ_BLOCK, count), self.end - self.offset)
        self.file.seek(self.offset)
        block = self.file.read(want)
        self.offset += len(block)
        self.buffer = self.buffer[self.pos :] + block
        self.pos = 0
        if len(self.buffer) < count:
            raise ValueError("a track is cut short")

    def byte(self) -> int:
        self._need(1)
        value = self.buffer[self.pos]
        self.pos += 1
        return value

    def take(self, count: int) -> bytes:
        self._need(count)
        data = self.buffer[self.pos : self.pos + count]
        self.pos += count
        return data

    def varlen(self) -> int:
        value = 0
        for _ in range(4):
            byte = self.byte()
            value = value << 7 | byte & 0x7F
            if byte < 0x80:
                return value
        raise ValueError("a variable-length number is too long")


def _events(chunk: _Chunk) -> Iterator[tuple[int, int, bytes]]:
    """``(delta ticks, kind, data)`` of each event: kind is a meta event's type,
    ``MESSAGE`` (data: the whole message, running status expanded) or ``ESCAPE``."""
    status = 0
    while not chunk.done():
        delta = chunk.varlen()
        first = chunk.byte()
        if first == 0xFF:
            kind = chunk.byte()
            yield delta, kind, chunk.take(chunk.varlen())
        elif first == 0xF0:
            yield delta, MESSAGE, b"\xf0" + chunk.take(chunk.varlen())
        elif first == 0xF7:
            yield delta, ESCAPE, chunk.take(chunk.varlen())
        else:
            if first < 0x80:
                if not status:
                    raise ValueError("a data byte without a status")
                data = bytes((status, first)) + chunk.take(_LENGTHS[status >> 4] - 2)
            elif first < 0xF0:
                status = first
                data = bytes((first,)) + chunk.take(_LENGTHS[first >> 4] - 1)
            else:
                data = bytes((first,)) + chunk.take(_SYSTEM_LENGTHS.get(first, 1) - 1)
            if max(data[1:], default=0) > 0x7F:
                raise ValueError("a data byte over 127")
            yield delta, MESSAGE, data


def _tracks(file: BinaryIO) -> tuple[int, list[_Chunk]]:
    """The ticks per beat and the track chunks of an SMF (other chunks are skipped)."""
    head = file.read(14)
    if len(head) != 14 or head[:4] != b"MThd":
        raise ValueError("not a Standard MIDI File")
    size, _format, count, division = struct.unpack(">IHHH", head[4:])
    if size < 6 or division & 0x8000 or division == 0:
        raise ValueError("unsupported MIDI file header")
    offset = 8 + size
    total = os.fstat(file.fileno()).st_size
    chunks: list[_Chunk] = []
    while len(chunks) < count and offset + 8 <= total:
        file.seek(offset)
        kind, length = struct.unpack(">4sI", file.read(8))
        offset += 8
        if offset + length > total:
            raise ValueError("a track is cut short")
        if kind == b"MTrk":
            chunks.append(_Chunk(file, offset, length))
        offset += length
    return division, chunks


def read_info(path: Path) -> Info:
    """The list entry of a recording file; ValueError when it is not one of ours."""
    try:
        with open(path, "rb") as file:
            header: Header | None = None
            players: list[str] = []
            messages = ticks = 0
            _division, chunks = _tracks(file)
            for number, chunk in enumerate(chunks):
                name: str | None = None
                length = 0
                for delta, kind, data in _events(chunk):
                    length += delta
                    if kind in (MESSAGE, ESCAPE):
                        messages += number > 0
                    elif kind == TRACK_NAME and name is None:
                        name = data.decode(CHARSET)
                    elif kind == TEXT and number == 0:
                        text = data.decode(CHARSET)
                        if text.startswith(INFO_PREFIX):
                            header = Header.from_dict(json.loads(text[len(INFO_PREFIX) :]))
                ticks = max(ticks, length)
                if number > 0:
                    players.append(name or "")
            size = os.fstat(file.fileno()).st_size
    except (OSError, ValueError, KeyError, struct.error) as error:
        raise ValueError(f"{path.name}: unreadable MIDI file ({error})") from None
    if header is None:
        raise ValueError(f"{path.name}: not a midihub recording")
    return Info(header, ticks / 1000, players, messages, size)


def timed_messages(path: Path) -> Generator[tuple[float, bytes], None, None]:
    """Every MIDI message of a file with its time in seconds from the start, all tracks
    merged in time order (tempo changes honoured), read as they are asked for (one
    block per track in memory). Blocking file reads: call it off the loop. ValueError
    (or OSError) when the file is unreadable."""
    with open(path, "rb") as file:
        division, chunks = _tracks(file)

        def absolute(number: int, chunk: _Chunk) -> Iterator[tuple[int, int, int, bytes]]:
            tick = 0
            for delta, kind, data in _events(chunk):
                tick += delta
                yield tick, number, kind, data

        tempo, seconds, last = TEMPO, 0.0, 0
        merged = heapq.merge(*(absolute(n, c) for n, c in enumerate(chunks)))
        for tick, _number, kind, data in merged:
            seconds += (tick - last) * tempo / division / 1_000_000
            last = tick
            if kind == MESSAGE:
                yield seconds, data
            elif kind == SET_TEMPO and len(data) == 3:
                tempo = int.from_bytes(data, "big")
