"""Recordings of a running hub: start and stop (by hand or automatically), the list,
deletion, retention and replay. Lives on the hub's loop; file work goes to the
writer thread or ``asyncio.to_thread``."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from midihub.config import HubConfig, RecordConfig
from midihub.hub import Endpoint, Hub, participant_id
from midihub.hub.panic import Panicked, Released
from midihub.hub.spec import HubSpec
from midihub.record import files, smf, worker
from midihub.record.journal import Header
from midihub.record.names import RECORDING_ID, display_name, file_part
from midihub.record.participant import Participant, loopback_for
from midihub.record.recorder import Recording
from midihub.record.replay import Replay, take
from midihub.record.writer import Writer
from midihub.rtp import Event, MidiReceived, PeerJoined, PeerLeft

log = logging.getLogger("midihub.record")

HOUSEKEEPING = 0.1  # seconds between checks for silence while recording
SHUTDOWN_BUDGET = 1.0  # seconds the process waits at exit for recordings to be finished
RETENTION_EVERY = 3600.0
MAX_REPLAYS = 8
MAX_FAILED_KEPT = 20


class RecordingError(Exception):
    """A request that cannot be done; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def default_directory(config: HubConfig) -> Path:
    """``[record] dir``, else ``recordings/`` beside the database."""
    if config.record.dir:
        return Path(config.record.dir)
    database = config.stats.database
    base = Path(".") if database == ":memory:" else Path(database).parent
    return base / "recordings"


class RecordingManager:
    def __init__(self, hub: Hub, directory: Path, settings: RecordConfig) -> None:
        self.hub = hub
        self.directory = directory
        self.settings = settings
        self.index: dict[str, smf.Info] = {}  # finished recordings on disk
        self.active: dict[str, Recording] = {}  # recording or stopping
        self.failed: dict[str, Recording] = {}  # recent failures, for the API
        self.replays: dict[str, Replay] = {}
        self._by_port: dict[int, Recording] = {}
        self._auto: dict[int, int] = {}  # port → the port its MIDI arrives on
        # Auto ports whose last recording hit its size cap → when they were last played
        # into: no new recording there until they have been quiet for split_after.
        self.held_back: dict[int, float] = {}
        self._seen_spec: HubSpec | None = None
        self._replay_ids = itertools.count(1)
        self._writer: Writer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_retention = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._prepared: asyncio.Task[None] | None = None
        self._closing = False
        self._children = worker.Children()  # finishing journals, reading the directory

    # -- life --------------------------------------------------------------------

    async def start(self) -> None:
        """Listen and start the writer at once (the hub's start is not delayed); the
        directory work (recovering unfinished journals, reading the index, retention)
        runs in the background: ``ready()`` waits for it."""
        loop = asyncio.get_running_loop()
        # Listed before any recording can start: none of them is one of ours.
        left_over = await asyncio.to_thread(files.left_over, self.directory)
        self._writer = Writer(
            self.directory,
            self.settings.flush_interval,
            loop,
            self._ended,
            self._full,
            self._children,
        )
        self._writer.start()
        self.hub.listeners.append(self._on_event)
        self.hub.midi_listeners.append(self._on_midi)
        self._sync_config()
        self._timer = loop.call_later(HOUSEKEEPING, self._housekeep)
        self._prepared = loop.create_task(self._prepare(left_over))

    async def _prepare(self, left_over: list[Path]) -> None:
        try:
            await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
            found, recovered = await asyncio.to_thread(
                self._children.prepare, self.directory, left_over
            )
        except worker.Interrupted:
            return  # shutdown came first: the next start does it
        except OSError as error:
            log.error("recordings directory %s unusable: %s", self.directory, error)
            return
        self.index = found | self.index  # recordings finished meanwhile stay
        for rid in recovered:
            info = found[rid]
            log.info(
                "recovered unfinished recording %s: %d message(s), %.1f s",
                rid,
                info.messages,
                info.duration,
            )
        await self.enforce_retention()
        log.info("recordings in %s (%d kept)", self.directory, len(self.index))

    async def ready(self) -> None:
        if self._prepared is not None:
            await self._prepared

    async def close(self, budget: float = SHUTDOWN_BUDGET) -> None:
        """Stop replays and recordings: every journal gets its end record and is made
        durable, then the SMFs are written for up to ``budget`` seconds. What is not
        finished by then stays a journal, finished at the next start (as after a
        crash): a large recording never holds up the process's exit."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        if self._timer is not None:
            self._timer.cancel()
        for listeners, hook in (
            (self.hub.listeners, self._on_event),
            (self.hub.midi_listeners, self._on_midi),
        ):
            if hook in listeners:
                listeners.remove(hook)
        for replay in list(self.replays.values()):
            replay.stop()
        for recording in list(self.active.values()):
            self._end(recording)
        finished = True
        if self._prepared is not None:
            await asyncio.wait([self._prepared], timeout=budget)
            finished = self._prepared.done()
        if self._writer is not None:
            left = max(deadline - loop.time(), 0.0) if finished else 0.0
            finished = await asyncio.to_thread(self._writer.close, left) and finished
        if not finished:
            self._children.stop()  # what they were doing waits for the next start
        if self._prepared is not None:
            await asyncio.gather(self._prepared, return_exceptions=True)
        await asyncio.sleep(0)  # the writer's last callbacks run first
        for recording in list(self.active.values()):
            log.warning(
                "recording %s is not finished yet: its journal is finished at the next start",
                recording.id,
            )
            if recording.done is not None and not recording.done.done():
                recording.done.set_result(None)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- hub listeners (the packet loop) -------------------------------------------

    def _on_midi(self, endpoint: Endpoint, event: Event) -> None:
        port = endpoint.port
        recording = self._by_port.get(port)
        if recording is None:
            midi_port = self._auto.get(port)
            if midi_port != port or not isinstance(event, MidiReceived):
                return
            if not any(message[0] <= 0xF0 for _, message in event.commands):
                return  # clock alone does not start a recording
            if port in self.held_back:
                now = time.monotonic()
                if now - self.held_back[port] < self.settings.split_after * 60:
                    self.held_back[port] = now  # still playing since the cap
                    return
                del self.held_back[port]
            try:
                recording = self.start_recording(port, auto=True)
            except RecordingError:
                return
        if recording.midi_port == port and isinstance(event, MidiReceived):
            who = event.who
            player = participant_id(endpoint, who)
            at = self.hub.heard_at  # when its datagram arrived, not when heard after the batch
            recording.midi(player, who.name, event.commands, time.monotonic() if at is None else at)

    def _on_event(self, endpoint: Endpoint, event: Event) -> None:
        """Joins and leaves become markers; what the hub sent for a player who left or
        at shutdown (its release) goes in that player's track, and a panic to everyone
        ends the notes every track still holds, both at the time the hub sent them."""
        port = endpoint.port
        recording = self._by_port.get(port)
        if recording is None:
            return
        at = self.hub.heard_at
        now = time.monotonic() if at is None else at
        if isinstance(event, PeerJoined):
            recording.marker(f"joined: {display_name(event.who.name)}", now)
        elif isinstance(event, Released):
            if port == recording.midi_port:
                who = event.who
                recording.midi(participant_id(endpoint, who), who.name, event.commands, now)
        elif isinstance(event, PeerLeft) and event.joined:
            recording.marker(f"left: {display_name(event.who.name)} ({event.reason})", now)
        elif isinstance(event, Panicked):
            recording.marker(f"panic on port {port}", now)
            if event.everyone:
                recording.panic(event.note_range, event.channels, now)

    # -- recordings ----------------------------------------------------------------

    def _ports_of(self, port: int) -> tuple[tuple[int, ...], int, str]:
        """The ports a recording of ``port`` covers, where its MIDI arrives, its name."""
        endpoint = self.hub.endpoints.get(port)
        if endpoint is None:
            valid = ", ".join(str(p) for p in sorted(self.hub.endpoints))
            raise RecordingError(400, f"unknown port {port!r}; valid ports: {valid}")
        spec = endpoint.spec
        if spec.role == "room":
            return (port,), port, spec.owner
        group = self.hub.spec.group_ports(spec.owner)
        if group is None:
            return (port,), port, spec.owner
        return group, group[0], spec.owner

    def start_recording(self, port: int, *, auto: bool = False) -> Recording:
        """Begin recording the room or group of ``port`` (cheap: no file work here)."""
        if self._writer is None:
            raise RecordingError(503, "recordings are not available (not started)")
        ports, midi_port, owner = self._ports_of(port)
        for covered in ports:
            existing = self._by_port.get(covered)
            if existing is not None:
                raise RecordingError(409, f"port {port} is already being recorded: {existing.id}")
        wall, now = time.time(), time.monotonic()
        stamp = datetime.fromtimestamp(wall, UTC)
        base = f"{file_part(owner)}_{stamp:%Y%m%dT%H%M%SZ}"
        rid, suffix = base, 2
        while rid in self.index or rid in self.active or rid in self.failed:
            rid, suffix = f"{base}-{suffix}", suffix + 1
        name = f"{display_name(owner, 40)} {stamp:%Y-%m-%d %H:%M} UTC"
        header = Header(id=rid, port=midi_port, label=display_name(owner), start=wall, name=name)
        recording = Recording(
            header,
            ports=ports,
            midi_port=midi_port,
            t0=now,
            limit=self.settings.buffer_limit,
            max_tracks=self.settings.max_tracks,
            max_bytes=int(self.settings.max_recording_mb * 1_000_000),
            auto=auto,
        )
        for covered in ports:
            endpoint = self.hub.endpoints.get(covered)
            self._by_port[covered] = recording
            if endpoint is not None:
                for participant in endpoint.participants:
                    recording.marker(f"present: {display_name(participant.name)}", now)
        self.active[rid] = recording
        self._writer.add(recording)
        log.info(
            "recording %s started%s: port %d (%s)",
            rid,
            " (auto)" if auto else "",
            midi_port,
            header.label,
        )
        return recording

    async def stop_recording(self, rid: str) -> Recording:
        recording = self.active.get(rid)
        if recording is None:
            if rid in self.index or rid in self.failed:
                raise RecordingError(409, f"recording {rid} is not running")
            raise RecordingError(404, f"no recording {rid!r}")
        await self._stop(recording)
        return recording

    async def _stop(self, recording: Recording) -> None:
        done = self._end(recording)
        await asyncio.wait_for(asyncio.shield(done), 30)

    def _end(self, recording: Recording) -> asyncio.Future[None]:
        """No more input: the writer finishes the file; the future says when."""
        if recording.done is None:
            recording.done = asyncio.get_running_loop().create_future()
            self._release_ports(recording)
            recording.end(time.monotonic())
            if self._writer is not None:
                self._writer.wake()
        return recording.done

    def _release_ports(self, recording: Recording) -> None:
        for port in recording.ports:
            if self._by_port.get(port) is recording:
                del self._by_port[port]

    def _full(self, recording: Recording) -> None:
        """From the writer thread (via the loop): the journal reached its cap."""
        log.warning(
            "recording %s: %.0f MB, the most one recording may hold "
            "([record] max_recording_mb): stopped",
            recording.id,
            self.settings.max_recording_mb,
        )
        if recording.auto:
            self.held_back[recording.midi_port] = time.monotonic()
        if recording.active:
            self._background(self._stop(recording))

    def _ended(self, recording: Recording, info: smf.Info | None) -> None:
        """From the writer thread (via the loop): finished with ``info``, or failed."""
        self._release_ports(recording)
        self.active.pop(recording.id, None)
        if info is not None:
            recording.state = "done"
            self.index[recording.id] = info
            log.info(
                "recording %s saved: %d message(s) from %d player(s), %.1f s, %d bytes",
                recording.id,
                info.messages,
                len(info.players),
                info.duration,
                info.size,
            )
            if not self._closing:
                self._background(self.enforce_retention())
        else:
            self.failed[recording.id] = recording
            while len(self.failed) > MAX_FAILED_KEPT:
                self.failed.pop(next(iter(self.failed)))
        if recording.done is None:
            recording.done = asyncio.get_running_loop().create_future()
        if not recording.done.done():
            recording.done.set_result(None)

    def path_of(self, rid: str) -> Path | None:
        if not RECORDING_ID.match(rid) or rid not in self.index:
            return None
        return self.directory / (rid + smf.SUFFIX)

    async def delete(self, rid: str) -> None:
        if rid in self.active:
            raise RecordingError(409, f"recording {rid} is running; stop it first")
        if rid not in self.index:
            self.failed.pop(rid, None)
            raise RecordingError(404, f"no recording {rid!r}")
        del self.index[rid]
        await asyncio.to_thread(files.delete, self.directory, rid)
        log.info("recording %s deleted", rid)

    async def enforce_retention(self) -> list[str]:
        doomed = files.expired(
            self.index,
            retention_days=self.settings.retention_days,
            max_bytes=self.settings.max_total_mb * 1_000_000,
        )
        for rid in doomed:
            self.index.pop(rid, None)
            await asyncio.to_thread(files.delete, self.directory, rid)
            log.info("recording %s deleted by retention", rid)
        self._last_retention = time.monotonic()
        return doomed

    # -- replay ----------------------------------------------------------------------

    async def play(self, rid: str, port: int) -> Replay:
        path = self.path_of(rid)
        if path is None:
            raise RecordingError(404, f"no recording {rid!r}")
        if port not in self.hub.endpoints:
            valid = ", ".join(str(p) for p in sorted(self.hub.endpoints))
            raise RecordingError(400, f"unknown port {port!r}; valid ports: {valid}")
        playing = [r for r in self.replays.values() if r.state in ("connecting", "playing")]
        if len(playing) >= MAX_REPLAYS:
            raise RecordingError(429, f"{MAX_REPLAYS} replays are already playing")
        source = smf.timed_messages(path)
        try:
            first = await asyncio.to_thread(take, source)
        except (OSError, ValueError) as error:
            source.close()
            raise RecordingError(500, f"cannot read {rid}: {error}") from None
        info = self.index[rid]
        host = loopback_for(self.hub.spec.bind)
        participant = Participant(info.header.name, host)
        replay = Replay(
            str(next(self._replay_ids)),
            rid,
            port,
            first,
            source,
            info.duration,
            participant,
            self._replay_ended,
        )
        self.replays[replay.id] = replay
        try:
            await replay.start((host, port))
        except (TimeoutError, ConnectionError) as error:
            raise RecordingError(502, f"replay could not join port {port}: {error}") from None
        log.info("replay %s of %s into port %d started", replay.id, rid, port)
        return replay

    def stop_replay(self, replay_id: str) -> Replay:
        replay = self.replays.get(replay_id)
        if replay is None:
            raise RecordingError(404, f"no replay {replay_id!r}")
        replay.stop()
        return replay

    def _replay_ended(self, replay: Replay) -> None:
        log.info("replay %s of %s %s", replay.id, replay.recording, replay.state)
        finished = [r for r in self.replays.values() if r.state not in ("connecting", "playing")]
        for old in finished[: max(len(finished) - MAX_REPLAYS, 0)]:
            self.replays.pop(old.id, None)

    # -- housekeeping ------------------------------------------------------------------

    def _housekeep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._sync_config()
            now = time.monotonic()
            split = self.settings.split_after * 60
            for recording in list(self.active.values()):
                if not recording.active:
                    continue
                if recording.auto and now - recording.last_sound > split:
                    log.info("recording %s: %.0f s of silence, split", recording.id, split)
                    self._background(self._stop(recording))
            for port, last in list(self.held_back.items()):
                if now - last >= split or port not in self._auto:
                    del self.held_back[port]  # quiet since its cap: auto may start again
            if now - self._last_retention > RETENTION_EVERY:
                self._background(self.enforce_retention())
        finally:
            self._timer = loop.call_later(HOUSEKEEPING, self._housekeep)

    def _sync_config(self) -> None:
        """Follow reloads: auto ports, and recordings of ports that went away end."""
        spec = self.hub.spec
        if spec is self._seen_spec:
            return
        self._seen_spec = spec
        auto: dict[int, int] = {}
        for endpoint in spec.endpoints:
            if endpoint.record == "auto":
                group = spec.group_ports(endpoint.owner)
                auto[endpoint.port] = endpoint.port if group is None else group[0]
        self._auto = auto
        for recording in list(self.active.values()):
            if recording.active and recording.midi_port not in self.hub.endpoints:
                self._background(self._stop(recording))

    def _background(self, job: Any) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- views ---------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        """Every recording, newest first: running, failed, and those on disk."""
        now = time.monotonic()
        rows: dict[str, dict[str, Any]] = {}
        for rid, info in self.index.items():
            rows[rid] = _row(info.header, "done", info.duration, info.players, info.size)
            rows[rid]["messages"] = info.messages
        for recording in [*self.failed.values(), *self.active.values()]:
            end = recording.stopped_at if recording.stopped_at is not None else now
            row = _row(
                recording.header,
                recording.state,
                end - recording.t0,
                list(recording.players),
                recording.size,
            )
            if recording.id in rows:  # failed, but what was flushed was saved
                row["size"] = rows[recording.id]["size"]
                row["file"] = rows[recording.id]["file"]
            else:
                row["file"] = None
            row |= {
                "messages": recording.messages,
                "flushed": recording.flushed,
                "dropped": recording.dropped + recording.refused,
                "auto": recording.auto,
                "error": recording.error,
            }
            rows[recording.id] = row
        return sorted(rows.values(), key=lambda row: row["startEpoch"], reverse=True)

    def describe_replays(self) -> list[dict[str, Any]]:
        return [
            {
                "id": r.id,
                "recording": r.recording,
                "port": r.port,
                "state": r.state,
                "error": r.error,
                "sent": r.sent,
                "position": round(r.position, 1),
                "duration": round(r.duration, 1),
            }
            for r in self.replays.values()
        ]


def _row(
    header: Header, state: str, duration: float, players: list[str], size: int
) -> dict[str, Any]:
    return {
        "id": header.id,
        "name": header.name,
        "port": header.port,
        "label": header.label,
        "start": datetime.fromtimestamp(header.start, UTC).isoformat(timespec="seconds"),
        "startEpoch": header.start,
        "duration": round(max(duration, 0.0), 1),
        "players": players,
        "size": size,
        "state": state,
        "file": f"/api/recordings/{header.id}/file",
    }
