"""``Fleet``: this hub's membership of the fleet directory, kept on a worker thread.

Every ``heartbeat`` seconds the hub renews its row with its rooms and participants, and
reads the whole directory back in the same round (one connection, on one worker thread:
never on the event loop). ``hubs()`` answers from that last read without any IO, and
the listeners hear about it on the loop when something other than the heartbeat times
changed. A database that cannot be reached is one log line per outage, never an
exception out of ``start``: the hub serves MIDI regardless, and the fleet retries with
back-off (and re-reads the directory as soon as it is back).

The name rule: each ``Fleet`` draws a random instance id. A name belongs to the instance
that renews it; another instance may take it only once the holder has stopped renewing
for its own ``down_after`` (by the server's clock), or at once after the holder stopped
cleanly (``close`` deletes its rows). A second live hub with the same name is refused,
with one line naming where the holder is; it keeps trying, and takes the name over if
the holder dies. So a restart after a clean stop registers at once, and after a crash
(kill -9) within ``down_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from midihub import __version__
from midihub.fleet.records import HubRecord, ParticipantRecord, RoomRecord
from midihub.hub import Hub, participant_id
from midihub.hub.spec import FleetSpec

if TYPE_CHECKING:  # psycopg loads in ``start``, only for a hub with [fleet]
    from midihub.fleet.store import Connection, Refused

log = logging.getLogger("midihub.fleet")

T = TypeVar("T")
Snapshot = tuple[tuple[RoomRecord, ...], tuple[ParticipantRecord, ...]]
Listener = Callable[[tuple[HubRecord, ...]], None]

BACKOFF_FIRST = 0.25  # seconds before the first retry after a failure; doubles per failure
BACKOFF_MAX = 5.0
CLOSE_BUDGET = 3.0  # seconds a stop waits to take this hub out of the directory
MAX_PARTICIPANTS = 4096  # per hub in the directory (the rest are counted, not listed)


@dataclass(slots=True)
class FleetCounters:
    heartbeats: int = 0  # renewals the database took
    failures: int = 0  # connections or heartbeats that failed
    reconnects: int = 0  # connections made again after one was lost
    refused: int = 0  # heartbeats refused: another live hub holds the name
    unlisted: int = 0  # participants left out of a heartbeat past MAX_PARTICIPANTS


def hub_snapshot(hub: Hub) -> Snapshot:
    """The hub's rooms, groups and players as the directory lists them (on the loop:
    plain reads, no IO). Hub-to-hub link sessions are not players and are left out."""
    rooms: list[RoomRecord] = []
    groups: dict[str, dict[str, int]] = {}
    participants: list[ParticipantRecord] = []
    for port, endpoint in sorted(hub.endpoints.items()):
        spec = endpoint.spec
        if spec.role == "room":
            rooms.append(RoomRecord(spec.owner, "room", (port,)))
        else:
            groups.setdefault(spec.owner, {})[spec.role] = port
        for peer in endpoint.participants:
            if peer.public_id in endpoint.hub_links:
                continue
            rtt = peer.rtt
            participants.append(
                ParticipantRecord(
                    participant_id(endpoint, peer),
                    peer.name,
                    port,
                    peer.transport,
                    None if rtt is None else round(rtt * 1000, 3),
                )
            )
    for name, ports in groups.items():
        if "in" in ports and "out" in ports:
            rooms.append(RoomRecord(name, "group", (ports["in"], ports["out"])))
    rooms.sort(key=lambda r: r.name)
    return tuple(rooms), tuple(participants)


def _changed(old: tuple[HubRecord, ...], new: tuple[HubRecord, ...]) -> bool:
    """Anything but the heartbeat times (which move at every read)."""
    if len(old) != len(new):
        return True
    return any(replace(a, last_seen=b.last_seen) != b for a, b in zip(old, new, strict=True))


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return "".join(c if c.isprintable() else " " for c in line)[:300]


class Fleet:
    """One per hub process with ``[fleet]``: ``start``, ``hubs()``, ``listeners``, ``close``."""

    def __init__(
        self,
        spec: FleetSpec,
        snapshot: Callable[[], Snapshot] = lambda: ((), ()),
        *,
        version: str = __version__,
    ) -> None:
        self.spec = spec
        self.snapshot = snapshot
        self.version = version
        self.instance = secrets.token_hex(8)
        self.listeners: list[Listener] = []
        self.connected = False  # the last heartbeat reached the database
        self.registered = False  # ... and this hub holds its name there
        self.error: str | None = None  # why the last attempt failed (one line), or None
        self.counters = FleetCounters()
        self._hubs: tuple[HubRecord, ...] = ()
        self._connection: Connection | None = None
        self._ever_connected = False
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_hub(cls, spec: FleetSpec, hub: Hub) -> Fleet:
        return cls(spec, functools.partial(hub_snapshot, hub))

    def __repr__(self) -> str:
        return f"Fleet({self.spec!r}, connected={self.connected})"

    # -- what the rest of the hub reads --------------------------------------------

    def hubs(self) -> tuple[HubRecord, ...]:
        """The directory as last read (every hub, this one included): no IO."""
        return self._hubs

    def hub(self, name: str) -> HubRecord | None:
        return next((h for h in self._hubs if h.name == name), None)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Load the driver and start renewing in the background. Never raises for the
        database: an unreachable one is logged (one line) and retried."""
        from midihub.fleet import store  # psycopg, only now

        self._store = store
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="midihub-fleet")
        self._task = asyncio.create_task(self._renew_forever(), name="fleet")

    async def close(self) -> None:
        """Stop renewing and leave the directory (a clean stop frees the name at once)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._executor is not None:
            try:
                await asyncio.wait_for(self._run(self._leave), CLOSE_BUDGET)
            except (TimeoutError, Exception) as error:
                log.warning("fleet: could not leave the directory cleanly: %s", _one_line(error))
            self._executor.shutdown(wait=False)
            self._executor = None
        self.connected = self.registered = False

    async def refresh(self) -> None:
        """One heartbeat and directory read now (raises when the database fails)."""
        await self._beat()

    # -- the background work -------------------------------------------------------

    async def _run(self, job: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None, "the fleet is not started"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(job, *args))

    async def _renew_forever(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database's trouble never stops the hub
                self._failed(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_FIRST
            await asyncio.sleep(self.spec.heartbeat)

    async def _beat(self) -> None:
        rooms, participants = self.snapshot()
        if len(participants) > MAX_PARTICIPANTS:
            self.counters.unlisted += len(participants) - MAX_PARTICIPANTS
            participants = participants[:MAX_PARTICIPANTS]
        fresh, refused, hubs = await self._run(self._beat_on_worker, rooms, participants)
        if fresh:
            if self._ever_connected:
                self.counters.reconnects += 1
            if not self.connected:
                log.info(
                    "fleet: %s the database %s as %r",
                    "back on" if self._ever_connected else "joined",
                    self.spec.display,
                    self.spec.name,
                )
            self._ever_connected = True
        self.connected = True
        self.error = None
        if refused is not None:
            self.counters.refused += 1
            if self.registered or fresh or self.counters.refused == 1:
                log.error(
                    "fleet: the name %r is held by another live hub (at %s, renewed %.1f s "
                    "ago): this hub stays out of the directory until that one stops",
                    self.spec.name,
                    refused.address,
                    refused.seconds_ago,
                )
            self.registered = False
        else:
            if not self.registered and self.counters.refused:
                log.info("fleet: the name %r is ours now", self.spec.name)
            self.registered = True
            self.counters.heartbeats += 1
        old, self._hubs = self._hubs, hubs
        if _changed(old, hubs):
            for listener in list(self.listeners):
                try:
                    listener(hubs)
                except Exception:
                    log.exception("fleet: a directory listener failed")

    def _beat_on_worker(
        self, rooms: tuple[RoomRecord, ...], participants: tuple[ParticipantRecord, ...]
    ) -> tuple[bool, Refused | None, tuple[HubRecord, ...]]:
        store = self._store
        fresh = False
        if self._connection is None or self._connection.closed:
            self._connection = store.connect(self.spec)
            fresh = True
        try:
            if fresh:
                store.create_schema(self._connection)
            refused = store.heartbeat(
                self._connection, self.spec, self.instance, self.version, rooms, participants
            )
            return fresh, refused, store.read(self._connection)
        except BaseException:
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def _leave(self) -> None:
        """Delete this hub's rows; once more on a new connection when the one held
        was lost (the database restarted since the last heartbeat)."""
        if not self.registered:
            self._drop_connection()
            return
        try:
            if self._connection is not None and not self._connection.closed:
                try:
                    self._store.deregister(self._connection, self.spec.name, self.instance)
                    return
                except self._store.LostConnection:
                    pass
            self._drop_connection()
            self._connection = self._store.connect(self.spec)
            self._store.deregister(self._connection, self.spec.name, self.instance)
        finally:
            self._drop_connection()

    def _failed(self, error: Exception) -> None:
        self.counters.failures += 1
        text = _one_line(error)
        first = self.error is None
        self.connected = False
        self.error = text
        if not first:
            log.debug("fleet: still no database: %s", text)
        elif self._ever_connected:
            log.warning(
                "fleet: lost the database %s: %s; MIDI goes on, retrying in the background",
                self.spec.display,
                text,
            )
        else:
            log.warning(
                "fleet: cannot reach the database %s: %s; the hub runs on without the "
                "fleet and keeps retrying in the background",
                self.spec.display,
                text,
            )
