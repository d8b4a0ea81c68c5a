"""The packet loop's side of a recording: a bounded buffer and nothing else.

``Recording.midi`` is called from the hub's MIDI listener for every message batch on
the recorded port; it filters and appends one tuple. No file, no lock, no allocation
beyond the tuple and the kept list. The writer thread drains ``queue``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Final

from midihub.midi.notes import NoteRange
from midihub.record.journal import Header
from midihub.record.names import display_name
from midihub.rtp import Command

# Kinds of buffered items: (monotonic time, kind, a, b)
MIDI: Final = 0  # a = track number, b = list of messages
PLAYER: Final = 1  # a = track number, b = name
MARKER: Final = 2  # b = text
END: Final = 3
PANIC: Final = 4  # b = (NoteRange, channels)

Item = tuple[float, int, int, object]


def kept(commands: Sequence[Command]) -> list[bytes]:
    """Channel messages and SysEx; MIDI clock, active sensing and the other system
    real-time and common messages (which a Standard MIDI File cannot hold) are not."""
    return [message for _, message in commands if message[0] <= 0xF0]


class Recording:
    """One recording of a room or a group, as the loop sees it."""

    __slots__ = (
        "auto",
        "capped",
        "done",
        "dropped",
        "error",
        "flushed",
        "header",
        "last_sound",
        "limit",
        "max_bytes",
        "max_tracks",
        "messages",
        "midi_port",
        "players",
        "ports",
        "queue",
        "refused",
        "size",
        "state",
        "stopped_at",
        "t0",
        "tracks",
    )

    def __init__(
        self,
        header: Header,
        *,
        ports: tuple[int, ...],
        midi_port: int,
        t0: float,
        limit: int,
        max_tracks: int,
        max_bytes: int | None = None,
        auto: bool = False,
    ) -> None:
        self.header = header
        self.ports = ports  # joins and leaves are marked on all of them
        self.midi_port = midi_port  # where the MIDI that is forwarded arrives
        self.t0 = t0  # monotonic time of the start
        self.limit = limit
        self.max_tracks = max_tracks
        self.max_bytes = max_bytes  # the journal's cap, exact (the writer keeps it)
        self.capped = False  # the journal reached max_bytes (set by the writer)
        self.auto = auto
        self.queue: deque[Item] = deque()
        self.tracks: dict[str, int] = {}  # by participant id (port-id)
        self.players: list[str] = []
        self.messages = 0  # accepted into the buffer
        self.dropped = 0  # refused: buffer full (the disk is too slow) or too many players
        self.flushed = 0  # messages the writer has made durable
        self.refused = 0  # messages the writer refused: the journal was at its cap
        self.size = 0  # journal bytes on disk
        self.state = "recording"  # then stopping, done or failed
        self.error: str | None = None
        self.last_sound = t0
        self.stopped_at: float | None = None
        self.done: asyncio.Future[None] | None = None

    @property
    def id(self) -> str:
        return self.header.id

    @property
    def active(self) -> bool:
        return self.state == "recording"

    def midi(self, player: str, name: str, commands: Sequence[Command], now: float) -> None:
        """MIDI that participant ``player`` (its API id) called ``name`` played, or that
        the hub sent for it (its release when it left)."""
        messages = kept(commands)
        if not messages:
            return
        track = self.tracks.get(player)
        if track is None:
            track = self._new_player(player, name, now)
            if track is None:
                self.dropped += len(messages)
                return
        if len(self.queue) >= self.limit:
            self.dropped += len(messages)
            return
        self.queue.append((now, MIDI, track, messages))
        self.messages += len(messages)
        self.last_sound = now

    def _new_player(self, player: str, name: str, now: float) -> int | None:
        if len(self.tracks) >= self.max_tracks:
            return None
        track = len(self.tracks)
        name = display_name(name)
        self.tracks[player] = track
        self.players.append(name)
        self.queue.append((now, PLAYER, track, name))
        return track

    def marker(self, text: str, now: float) -> None:
        if len(self.queue) < self.limit:
            self.queue.append((now, MARKER, 0, text))

    def panic(self, note_range: NoteRange, channels: tuple[int, ...], now: float) -> None:
        """A panic to everyone on a recorded port: the writer ends, in each player's
        track, the notes of ``note_range`` on ``channels`` that player still holds."""
        if len(self.queue) < self.limit:
            self.queue.append((now, PANIC, 0, (note_range, channels)))

    def end(self, now: float) -> None:
        """No more input; the writer finishes the file when it reaches this item."""
        self.state = "stopping"
        self.stopped_at = now
        self.queue.append((now, END, 0, None))
