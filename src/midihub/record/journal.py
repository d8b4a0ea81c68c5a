"""The append-only journal a recording is written to while it runs: JSON lines,
one per player, message or marker, times in milliseconds since the start.

A crash can cut the last line short; the reader stops there and keeps everything
before it, so a crash loses at most what was not yet flushed. The journal never
grows past its cap: a record that would pass it is refused (``full``), and room for
the closing ``end`` record is always kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final

VERSION = 1
SUFFIX = ".journal"
END_RESERVE: Final = 64  # bytes kept for the end record: {"t":<13 digits>,"end":true}
READ_BLOCK: Final = 1 << 20  # bytes read at a time when finishing

# Kinds of records read back: (ms, kind, track, value)
MIDI: Final = 0  # value: the message (bytes)
PLAYER: Final = 1  # value: the player's name
MARKER: Final = 2  # value: the text
END: Final = 3

Record = tuple[int, int, int, Any]

# The hub writes every MIDI record in exactly this form: read it without json.loads.
_MIDI_LINE = re.compile(rb'\{"t":(\d+),"track":(\d+),"midi":"([0-9a-f]*)"\}')


@dataclass(slots=True)
class Header:
    """What a recording is: written first, kept in the SMF too."""

    id: str
    port: int
    label: str
    start: float  # UTC epoch seconds
    name: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "port": self.port,
            "label": self.label,
            "start": self.start,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Header:
        """ValueError when ``data`` is not a header."""
        try:
            return cls(
                id=str(data["id"]),
                port=int(data["port"]),
                label=str(data["label"]),
                start=float(data["start"]),
                name=str(data["name"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError("recording header unreadable") from None


class JournalFile:
    """Appends records; ``flush()`` makes them durable. Used from the writer thread only.

    ``limit``: the most bytes the file may hold; a record that does not fit is
    refused and ``full`` is set (the end record always fits)."""

    def __init__(self, path: Path, header: Header, limit: int | None = None) -> None:
        self.path = path
        self.limit = limit
        self.full = False
        self._file: BinaryIO = open(path, "ab")  # noqa: SIM115 - closed by close()
        self.size = self._file.tell()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        if self.size == 0:
            self._add({"midihub": "recording", "v": VERSION, **header.as_dict()}, always=True)

    def _add(self, record: dict[str, Any], *, always: bool = False) -> bool:
        """Queue one record; False (and ``full``) when it would pass the cap."""
        if self.full and not always:
            return False
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        if (
            not always
            and self.limit is not None
            and self.size + self._pending_bytes + len(line) + END_RESERVE > self.limit
        ):
            self.full = True
            return False
        self._pending.append(line)
        self._pending_bytes += len(line)
        return True

    def player(self, ms: int, track: int, name: str) -> bool:
        return self._add({"t": ms, "track": track, "name": name})

    def message(self, ms: int, track: int, message: bytes) -> bool:
        return self._add({"t": ms, "track": track, "midi": message.hex()})

    def marker(self, ms: int, text: str) -> bool:
        return self._add({"t": ms, "marker": text})

    def end(self, ms: int) -> None:
        """The last record: it takes the room kept for it."""
        self._add({"t": ms, "end": True}, always=True)

    def flush(self) -> int:
        """Write and fsync what was added; returns the file's size. OSError (a full
        disk) propagates: the caller stops the recording."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.size += len(data)
        return self.size

    def close(self) -> None:
        # Buffered bytes a full disk refused are lost; what is on disk is what we keep.
        with contextlib.suppress(OSError):
            self._file.close()


class Reader:
    """A journal read back one record at a time (memory independent of its length):
    ``header``, then iterate for ``(ms, kind, track, value)``. ``damaged``: a line
    could not be read (a crash mid-write); nothing after it is trusted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.damaged = False
        self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            first = self._file.readline(READ_BLOCK)
            self.header = Header.from_dict(json.loads(first))
        except (ValueError, TypeError):
            self._file.close()
            raise ValueError(f"{path.name}: not a midihub recording journal") from None

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[Record]:
        rest = b""
        while True:
            block = self._file.read(READ_BLOCK)
            if not block:
                break
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                record = self._parse(line)
                if record is None:
                    if self.damaged:
                        return
                    continue
                yield record
        if rest:  # a last line without its newline: cut by a crash, unless whole
            record = self._parse(rest)
            if record is not None:
                yield record

    def _parse(self, line: bytes) -> Record | None:
        if not line:
            return None
        match = _MIDI_LINE.fullmatch(line)
        try:
            if match is not None:
                ms, track, hexed = match.groups()
                return int(ms), MIDI, int(track), bytes.fromhex(hexed.decode())
            record = json.loads(line)
            ms = int(record["t"])
            if "midi" in record:
                return ms, MIDI, int(record["track"]), bytes.fromhex(record["midi"])
            if "name" in record:
                return ms, PLAYER, int(record["track"]), str(record["name"])
            if "marker" in record:
                return ms, MARKER, 0, str(record["marker"])
            if "end" in record:
                return ms, END, 0, None
            return None  # a record of a later version: skipped
        except (ValueError, KeyError, TypeError):
            pass
        self.damaged = True  # a line cut by a crash: nothing after it is trusted
        return None
