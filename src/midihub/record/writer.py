"""The writer thread: drains every recording's buffer into its journal at least every
``interval`` seconds, and finishes the SMF when a recording ends.

A failure to write (a full disk, a read-only directory) ends that recording with a
clear log line and its state set to ``failed``; the packet loop is never touched
except through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from midihub.record import files, journal, smf
from midihub.record.recorder import END, MARKER, MIDI, PLAYER, Recording

log = logging.getLogger("midihub.record")

Done = Callable[[Recording, smf.Info | None], None]


class Writer:
    def __init__(
        self,
        directory: Path,
        interval: float,
        loop: asyncio.AbstractEventLoop,
        on_done: Done,
    ) -> None:
        self.directory = directory
        self.interval = interval
        self._loop = loop
        self._on_done = on_done  # called on the loop: finished (with Info) or failed (None)
        self._recordings: list[Recording] = []
        self._journals: dict[str, journal.JournalFile] = {}
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="midihub-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, recording: Recording) -> None:
        self._recordings.append(recording)

    def wake(self) -> None:
        self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued (recordings already ended), then stop the thread."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            for recording in list(self._recordings):
                self._service(recording)
            if self._closing:
                return

    def _service(self, recording: Recording) -> None:
        rid = recording.id
        ended = False
        try:
            file = self._journals.get(rid)
            if file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                file = journal.JournalFile(
                    self.directory / (rid + journal.SUFFIX), recording.header
                )
                self._journals[rid] = file
            ended, count = self._drain(recording, file)
            recording.size = file.flush()
            recording.flushed += count
        except OSError as error:
            self._failed(recording, error)
            return
        if ended:
            self._finish(recording, file)

    @staticmethod
    def _drain(recording: Recording, file: journal.JournalFile) -> tuple[bool, int]:
        queue, t0 = recording.queue, recording.t0
        count = 0
        while queue:
            now, kind, track, value = queue.popleft()
            ms = round((now - t0) * 1000)
            if kind == MIDI:
                assert isinstance(value, list)
                for message in value:
                    file.message(ms, track, message)
                count += len(value)
            elif kind == PLAYER:
                file.player(ms, track, str(value))
            elif kind == MARKER:
                file.marker(ms, str(value))
            elif kind == END:
                file.end(ms)
                return True, count
        return False, count

    def _finish(self, recording: Recording, file: journal.JournalFile) -> None:
        file.close()
        del self._journals[recording.id]
        self._recordings.remove(recording)
        try:
            info: smf.Info | None = files.finish(file.path)
        except (OSError, ValueError) as error:
            self._failed(recording, error, closed=True)
            return
        self._loop.call_soon_threadsafe(self._on_done, recording, info)

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
            file = self._journals.pop(recording.id, None)
            if file is not None:
                file.close()
            if recording in self._recordings:
                self._recordings.remove(recording)
        recording.queue.clear()
        self._loop.call_soon_threadsafe(self._on_done, recording, None)
