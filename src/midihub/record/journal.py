"""The append-only journal a recording is written to while it runs: JSON lines,
one per player, message or marker, times in milliseconds since the start.

A crash can cut the last line short; the reader stops there and keeps everything
before it, so a crash loses at most what was not yet flushed.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

VERSION = 1
SUFFIX = ".journal"


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


@dataclass(slots=True)
class Content:
    """A journal read back: players by track number, and events in time order."""

    header: Header
    players: dict[int, str] = field(default_factory=dict)
    midi: list[tuple[int, int, bytes]] = field(default_factory=list)  # (ms, track, message)
    markers: list[tuple[int, str]] = field(default_factory=list)  # (ms, text)
    end: int | None = None  # ms, when it was stopped (None: cut short)
    damaged: bool = False  # a line could not be read (a crash mid-write)

    @property
    def duration(self) -> int:
        times = [t for t, _, _ in self.midi[-1:]] + [t for t, _ in self.markers[-1:]]
        return max([self.end or 0, *times])


class JournalFile:
    """Appends records; ``flush()`` makes them durable. Used from the writer thread only."""

    def __init__(self, path: Path, header: Header) -> None:
        self.path = path
        self._file: BinaryIO = open(path, "ab")  # noqa: SIM115 - closed by close()
        self.size = self._file.tell()
        self._pending: list[bytes] = []
        if self.size == 0:
            self._add({"midihub": "recording", "v": VERSION, **header.as_dict()})

    def _add(self, record: dict[str, Any]) -> None:
        self._pending.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")

    def player(self, ms: int, track: int, name: str) -> None:
        self._add({"t": ms, "track": track, "name": name})

    def message(self, ms: int, track: int, message: bytes) -> None:
        self._add({"t": ms, "track": track, "midi": message.hex()})

    def marker(self, ms: int, text: str) -> None:
        self._add({"t": ms, "marker": text})

    def end(self, ms: int) -> None:
        self._add({"t": ms, "end": True})

    def flush(self) -> int:
        """Write and fsync what was added; returns the file's size. OSError (a full
        disk) propagates: the caller stops the recording."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.size += len(data)
        return self.size

    def close(self) -> None:
        # Buffered bytes a full disk refused are lost; what is on disk is what we keep.
        with contextlib.suppress(OSError):
            self._file.close()


def read(path: Path) -> Content:
    """Everything readable in a journal; raises ValueError when even the header is not."""
    with open(path, "rb") as file:
        lines = file.read().split(b"\n")
    try:
        first = json.loads(lines[0])
        header = Header(
            id=str(first["id"]),
            port=int(first["port"]),
            label=str(first["label"]),
            start=float(first["start"]),
            name=str(first["name"]),
        )
    except (ValueError, KeyError, TypeError, IndexError):
        raise ValueError(f"{path.name}: not a midihub recording journal") from None
    content = Content(header)
    for line in lines[1:]:
        if not line:
            continue
        try:
            record = json.loads(line)
            ms = int(record["t"])
            if "midi" in record:
                content.midi.append((ms, int(record["track"]), bytes.fromhex(record["midi"])))
            elif "name" in record:
                content.players[int(record["track"])] = str(record["name"])
            elif "marker" in record:
                content.markers.append((ms, str(record["marker"])))
            elif "end" in record:
                content.end = ms
        except (ValueError, KeyError, TypeError):
            content.damaged = True  # a line cut by a crash: nothing after it is trusted
            break
    return content
