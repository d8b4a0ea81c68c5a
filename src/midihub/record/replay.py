"""Playing a recording back into a hub port, as a participant named after it.

Playback starts at the first message; each message is scheduled at its absolute
time from the start (``call_at``), so timing never drifts the way chained sleeps
do; messages due together leave in one packet. Stopping releases what the replay
holds (NoteOffs, pedals up, bend centred) before saying BY.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from midihub.midi.held import NoteState
from midihub.record.participant import Participant

log = logging.getLogger("midihub.record")

LEAD = 0.05  # seconds between joining and the first message, so the hub knows us
SAME_PACKET = 0.0005  # messages this close together leave in one packet


class Replay:
    """One playback. ``state``: connecting, playing, done, stopped, failed."""

    def __init__(
        self,
        rid: str,
        recording: str,
        port: int,
        messages: list[tuple[float, bytes]],
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
        first = messages[0][0] if messages else 0.0  # leading silence is skipped
        self._messages = [(at - first, message) for at, message in messages]
        self.duration = self._messages[-1][0] if messages else 0.0
        self._next = 0
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
            self._on_end(self)
            raise
        self.state = "playing"
        self._origin = self._loop.time() + LEAD
        self._schedule()

    def _schedule(self) -> None:
        if self._next >= len(self._messages):
            self._finish("done")
            return
        due = self._origin + self._messages[self._next][0]
        self._timer = self._loop.call_at(due, self._play)

    def _play(self) -> None:
        self._timer = None
        if self._participant.left is not None:  # the hub dropped us (port removed)
            self._finish("stopped", release=False)
            return
        limit = self._loop.time() - self._origin + SAME_PACKET
        batch: list[tuple[int, bytes]] = []
        messages = self._messages
        while self._next < len(messages) and messages[self._next][0] <= limit:
            batch.append((0, messages[self._next][1]))
            self._next += 1
        if batch:
            self._held.update(batch)
            self._participant.send(batch)
            self.sent += len(batch)
        self._schedule()

    def stop(self) -> None:
        if self.state in ("connecting", "playing"):
            self._finish("stopped")

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
        self._on_end(self)
