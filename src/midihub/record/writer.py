"""The writer thread: drains every recording's buffer into its journal at least every
``interval`` seconds; when a recording ends, a second thread has its SMF written (by a
child process, ``worker``), so a long finish never holds up the other journals.

It keeps what each player's track holds (``NoteState``), so a panic to everyone on a
recorded port becomes, in each track, the NoteOffs of the notes that track still
held, at the panic's time. A journal never passes its recording's cap: the record
that would is refused, the loop is told (``on_full``) and stops the recording.

A failure to write (a full disk, a read-only directory) ends that recording with a
clear log line and its state set to ``failed``; the packet loop is never touched
except through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from midihub.hub.panic import ended_by_panic
from midihub.midi.held import NoteState
from midihub.midi.notes import NoteRange
from midihub.record import journal, smf, worker
from midihub.record.recorder import END, MARKER, MIDI, PANIC, PLAYER, Recording

log = logging.getLogger("midihub.record")

Done = Callable[[Recording, smf.Info | None], None]
Full = Callable[[Recording], None]


class _Open:
    """A running recording's journal and what each of its tracks holds."""

    __slots__ = ("file", "held")

    def __init__(self, file: journal.JournalFile) -> None:
        self.file = file
        self.held: dict[int, NoteState] = {}


class Writer:
    def __init__(
        self,
        directory: Path,
        interval: float,
        loop: asyncio.AbstractEventLoop,
        on_done: Done,
        on_full: Full | None = None,
        children: worker.Children | None = None,
    ) -> None:
        self.directory = directory
        self.interval = interval
        self._loop = loop
        self._on_done = on_done  # called on the loop: finished (with Info) or failed (None)
        self._on_full = on_full  # called on the loop once, when a journal reached its cap
        self._children = children or worker.Children()  # where journals are finished
        self._recordings: list[Recording] = []
        self._open: dict[str, _Open] = {}
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="midihub-recorder", daemon=True)
        self._ended: queue.SimpleQueue[tuple[Recording, Path] | None] = queue.SimpleQueue()
        self._finisher = threading.Thread(
            target=self._finish_ended, name="midihub-finisher", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        self._finisher.start()

    def add(self, recording: Recording) -> None:
        self._recordings.append(recording)

    def wake(self) -> None:
        self._wake.set()

    def close(self, timeout: float = 10.0) -> bool:
        """Write out every buffer (recordings already ended get their end record),
        then finish them; returns False if that took longer than ``timeout``: the
        threads go on until the process exits, and a journal not finished by then is
        recovered at the next start."""
        deadline = time.monotonic() + timeout
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._ended.put(None)  # after every recording the last pass ended
        self._finisher.join(max(deadline - time.monotonic(), 0.0))
        return not self._thread.is_alive() and not self._finisher.is_alive()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            for recording in list(self._recordings):
                if self._service(recording):
                    state = self._open.pop(recording.id)
                    state.file.close()
                    self._recordings.remove(recording)
                    self._ended.put((recording, state.file.path))
            if self._closing:
                return

    def _finish_ended(self) -> None:
        while (job := self._ended.get()) is not None:
            self._finish(*job)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed (the process is exiting)
            self._loop.call_soon_threadsafe(callback, *args)

    def _service(self, recording: Recording) -> bool:
        """Drain and flush; True when the recording ended and awaits finishing."""
        rid = recording.id
        try:
            state = self._open.get(rid)
            if state is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.directory / (rid + journal.SUFFIX)
                file = journal.JournalFile(path, recording.header, recording.max_bytes)
                state = self._open[rid] = _Open(file)
            ended, count = self._drain(recording, state)
            recording.size = state.file.flush()
            recording.flushed += count
        except OSError as error:
            self._failed(recording, error)
            return False
        if state.file.full and not recording.capped:
            recording.capped = True
            if self._on_full is not None and not ended:
                self._call(self._on_full, recording)
        return ended

    @staticmethod
    def _drain(recording: Recording, state: _Open) -> tuple[bool, int]:
        """Journal what is buffered; (ended, how many of the players' messages)."""
        queue, t0, file, held = recording.queue, recording.t0, state.file, state.held
        count = 0
        while queue:
            now, kind, track, value = queue.popleft()
            ms = round((now - t0) * 1000)
            if kind == MIDI:
                assert isinstance(value, list)
                notes = held.get(track)
                for message in value:
                    if not file.message(ms, track, message):
                        recording.refused += 1  # past the cap
                        continue
                    if notes is not None:
                        notes.apply(message)
                    count += 1
            elif kind == PLAYER:
                if file.player(ms, track, str(value)):
                    held[track] = NoteState()
            elif kind == MARKER:
                file.marker(ms, str(value))
            elif kind == PANIC:
                note_range, channels = cast(tuple[NoteRange, tuple[int, ...]], value)
                for number, notes in held.items():
                    for message in ended_by_panic(notes, note_range, channels):
                        file.message(ms, number, message)
            elif kind == END:
                file.end(ms)
                return True, count
        return False, count

    def _finish(self, recording: Recording, path: Path) -> None:
        try:
            info: smf.Info | None = self._children.finish(path)
        except worker.Interrupted:
            return  # shutdown: the journal is whole, finished at the next start
        except (OSError, ValueError) as error:
            self._failed(recording, error, closed=True)
            return
        self._call(self._on_done, recording, info)

    def _failed(self, recording: Recording, error: Exception, *, closed: bool = False) -> None:
        reason = getattr(error, "strerror", None) or str(error)
        recording.error = f"cannot write to {self.directory}: {reason}"
        recording.state = "failed"
        log.error(
            "recording %s stopped: %s; MIDI keeps flowing, the journal so far is kept",
            recording.id,
            recording.error,
        )
        if not closed:
            state = self._open.pop(recording.id, None)
            if state is not None:
                state.file.close()
            if recording in self._recordings:
                self._recordings.remove(recording)
        recording.queue.clear()
        self._call(self._on_done, recording, None)
