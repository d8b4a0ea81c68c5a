"""Playing a recording back into a hub port, as a participant named after it.

Playback starts at the first message; each message is scheduled at its absolute
time from the start (``call_at``), so timing never drifts the way chained sleeps
do; messages due together leave in one packet. The file is read a batch at a time
on a worker thread, ahead of the playing (memory does not grow with the recording).
Stopping releases what the replay holds (NoteOffs, pedals up, bend centred) before
saying BY.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator

from midihub.midi.held import NoteState
from midihub.record.participant import Participant

log = logging.getLogger("midihub.record")

LEAD = 0.05  # seconds between joining and the first message, so the hub knows us
SAME_PACKET = 0.0005  # messages this close together leave in one packet
BATCH = 2048  # messages read from the file at a time
LOW = BATCH // 2  # fewer than this waiting: the next batch is read

Timed = tuple[float, bytes]


def take(source: Iterator[Timed], count: int = BATCH) -> list[Timed]:
    """The next ``count`` messages of ``source`` (blocking file reads: a worker thread)."""
    return list(itertools.islice(source, count))


class Replay:
    """One playback. ``state``: connecting, playing, done, stopped, failed.

    ``first``: the first batch of ``source``, already read; ``length``: the
    recording's length in seconds (what ``duration`` counts from the first message)."""

    def __init__(
        self,
        rid: str,
        recording: str,
        port: int,
        first: list[Timed],
        source: Generator[Timed, None, None],
        length: float,
        participant: Participant,
        on_end: Callable[[Replay], None],
    ) -> None:
        self.id = rid
        self.recording = recording
        self.port = port
        self.state = "connecting"
        self.error: str | None = None
        self.started = time.time()
        self.sent = 0
        self._start = first[0][0] if first else 0.0  # leading silence is skipped
        self.duration = max(length - self._start, 0.0)
        self._waiting: deque[Timed] = deque((at - self._start, m) for at, m in first)
        self._source = source
        self._exhausted = len(first) < BATCH
        self._reading: asyncio.Task[None] | None = None
        self._participant = participant
        self._held = NoteState()
        self._loop = asyncio.get_running_loop()
        self._origin = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._on_end = on_end

    @property
    def position(self) -> float:
        if self.state != "playing":
            return 0.0
        return max(self._loop.time() - self._origin, 0.0)

    async def start(self, addr: tuple[str, int]) -> None:
        try:
            await self._participant.connect(addr)
        except (TimeoutError, ConnectionError) as error:
            self._participant.close()
            self.state, self.error = "failed", f"could not join port {self.port}: {error}"
            self._close_source()
            self._on_end(self)
            raise
        self.state = "playing"
        self._origin = self._loop.time() + LEAD
        self._schedule()

    def _schedule(self) -> None:
        if self.state != "playing":
            return
        if len(self._waiting) < LOW and not self._exhausted and self._reading is None:
            self._reading = self._loop.create_task(self._read())
        if not self._waiting:
            if self._reading is None:
                self._finish("done")
            return  # the batch being read schedules what comes next
        due = self._origin + self._waiting[0][0]
        self._timer = self._loop.call_at(due, self._play)

    async def _read(self) -> None:
        try:
            batch = await asyncio.to_thread(take, self._source)
        except (OSError, ValueError) as error:
            batch, self.error = [], f"cannot read {self.recording}: {error}"
            log.error("replay %s: %s", self.id, self.error)
        self._reading = None
        if len(batch) < BATCH:
            self._exhausted = True
        if self.state != "playing":
            self._close_source()
            return
        start = self._start
        self._waiting.extend((at - start, message) for at, message in batch)
        if self.error is not None:
            self._finish("failed")
        elif self._timer is None:
            self._schedule()

    def _play(self) -> None:
        self._timer = None
        if self._participant.left is not None:  # the hub dropped us (port removed)
            self._finish("stopped", release=False)
            return
        limit = self._loop.time() - self._origin + SAME_PACKET
        batch: list[tuple[int, bytes]] = []
        waiting = self._waiting
        while waiting and waiting[0][0] <= limit:
            batch.append((0, waiting.popleft()[1]))
        if batch:
            self._held.update(batch)
            self._participant.send(batch)
            self.sent += len(batch)
        self._schedule()

    def stop(self) -> None:
        if self.state in ("connecting", "playing"):
            self._finish("stopped")

    def _close_source(self) -> None:
        """Close the file, unless a worker thread is reading it (then ``_read`` does)."""
        if self._reading is None:
            self._source.close()

    def _finish(self, state: str, *, release: bool = True) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if release:
            held = self._held.release()
            if held:
                self._participant.send(held)
        self._participant.close()
        self.state = state
        self._waiting.clear()
        self._close_source()
        self._on_end(self)
