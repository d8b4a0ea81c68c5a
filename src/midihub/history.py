"""Latency history: per participant and minute, min/avg/max/count, in SQLite.

``record`` runs on the packet path, so it only touches an in-memory bucket; a
background task writes the buckets in one transaction every few seconds. Every
statement runs on one worker thread, never on the event loop, and every answer is an
SQL aggregate whose cost follows the participants and the span asked for, not the
size of the table:

* ``latency_minutes`` (the raw minutes, unchanged since the first release) is indexed
  by minute, so the retention purge and ``since`` reads are range scans;
* ``latency_hours`` rolls the minutes up per participant and hour, kept in step on
  every write and rebuilt on start when it disagrees with the minutes (an older
  database, or rows written by another program), so a 7-day summary reads 168 rows
  per participant instead of 10,080;
* the summary is cached until the next write, and unflushed buckets are merged into
  every answer so it is always live.

A series is keyed by the participant's session name and address, which the remote
chooses: a peer rejoining under a new name (or from a new port) each time would start a
new series each time, kept for the whole retention. So each hub port keeps at most
``max_keys_per_port`` series over the retention; samples of any further one go to the
port's ``(others)`` series (counted in ``overflowed``), and a series whose minutes have
all been purged frees its place.

SQLAlchemy Core keeps the SQL readable; SQLite specifics (the upsert, and taking a
bare column from the row that holds a ``min()``/``max()``) are marked where used.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    case,
    create_engine,
    delete,
    event,
    exists,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import StaticPool

log = logging.getLogger("midihub.history")

T = TypeVar("T")

HOUR = 3600
MAX_POINTS = 500
"""At most this many points per series in one history answer."""
MAX_KEYS_PER_PORT = 500
"""Distinct (name, address) series a hub port keeps over the retention."""
OVERFLOW_NAME = "(others)"
"""The series of a port's samples past its ``MAX_KEYS_PER_PORT``; its address is empty,
which no participant's is, so no participant's series can merge into it."""
STEPS = (60, 120, 300, 600, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
"""Bucket widths for downsampled history; from an hour up they read the hourly roll-up."""

metadata = MetaData()
participants = Table(
    "participants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, nullable=False),
    Column("address", String, nullable=False),
    Column("hub_port", Integer, nullable=False),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    UniqueConstraint("name", "address", "hub_port"),
)


BUCKET_COLUMNS = ("count", "sum_ms", "min_ms", "min_at", "max_ms", "max_at", "last_ms", "last_at")


def _bucket_table(name: str, period: str) -> Table:
    """Per participant and period: how many samples, their sum, and the min, max and
    last with when each happened (``count`` is an integer, the rest floats)."""
    return Table(
        name,
        metadata,
        Column("participant_id", ForeignKey("participants.id"), primary_key=True),
        Column(period, Integer, primary_key=True),  # UTC epoch seconds, start of the period
        *(
            Column(column, Integer if column == "count" else Float, nullable=False)
            for column in BUCKET_COLUMNS
        ),
    )


minutes = _bucket_table("latency_minutes", "minute")
hours = _bucket_table("latency_hours", "hour")
Index("ix_latency_minutes_minute", minutes.c.minute)
Index("ix_latency_hours_hour", hours.c.hour)

Key = tuple[str, str, int]  # session name, address, hub port
Buckets = dict[Key, dict[int, "Bucket"]]


@dataclass(slots=True)
class Bucket:
    """``first_at`` (when the earliest sample was taken) is not stored per minute: it
    sets the participant's ``first_seen``, and is unknown (inf) for a stored bucket."""

    count: int
    sum_ms: float
    min_ms: float
    min_at: float
    max_ms: float
    max_at: float
    last_ms: float
    last_at: float
    first_at: float = math.inf

    @classmethod
    def first(cls, value: float, at: float) -> Bucket:
        return cls(1, value, value, at, value, at, value, at, at)

    def add(self, value: float, at: float) -> None:
        """One sample (a CK exchange, about every 10 s per participant)."""
        self.merge(Bucket.first(value, at))

    def merge(self, other: Bucket) -> None:
        self.count += other.count
        self.sum_ms += other.sum_ms
        if other.min_ms < self.min_ms:
            self.min_ms, self.min_at = other.min_ms, other.min_at
        if other.max_ms > self.max_ms:
            self.max_ms, self.max_at = other.max_ms, other.max_at
        if other.last_at >= self.last_at:
            self.last_ms, self.last_at = other.last_ms, other.last_at
        self.first_at = min(self.first_at, other.first_at)

    def copy(self) -> Bucket:
        return replace(self)


@dataclass(frozen=True, slots=True)
class Summary:
    """One participant and hub port over the retained history."""

    name: str
    address: str
    hub_port: int
    count: int
    avg_ms: float
    min_ms: float
    min_at: float
    max_ms: float
    max_at: float
    last_ms: float
    last_at: float


@dataclass(frozen=True, slots=True)
class MinuteRow:
    """One point of a series: ``minute`` starts a bucket ``step`` seconds wide."""

    name: str
    address: str
    hub_port: int
    minute: float
    count: int
    min_ms: float
    avg_ms: float
    max_ms: float
    step: int = 60


@dataclass(frozen=True, slots=True)
class _Unwritten:
    """Buckets not in the database yet, tagged with the flush that will write them."""

    seq: int
    buckets: Buckets


@dataclass(frozen=True, slots=True)
class _Stored:
    """A read's answer with the database state it saw."""

    generation: int
    written_seq: int
    totals: dict[Key, Bucket]


def choose_step(span: float, points: int = MAX_POINTS) -> int:
    """The narrowest bucket width giving at most ``points`` buckets over ``span``."""
    points = max(1, min(points, MAX_POINTS))
    for step in STEPS:
        if span / step <= points:
            return step
    return STEPS[-1]


class LatencyStore:
    def __init__(
        self,
        path: str,
        *,
        retention: float = 7 * 86400,
        flush_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        max_series: int = 64,
        max_summary: int = 1000,
        max_keys_per_port: int = MAX_KEYS_PER_PORT,
    ) -> None:
        self.path = path
        self.retention = retention
        self.flush_interval = flush_interval
        self.max_series = max_series  # series per history answer
        self.max_summary = max_summary  # rows per summary (most recently seen first)
        self.max_keys_per_port = max_keys_per_port
        self._keys: dict[int, set[Key]] = {}  # per hub port: the series it keeps
        self._clock = clock
        self._pending: Buckets = {}
        self._flushing: list[_Unwritten] = []
        self._next_seq = 1
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._summary: _Stored | None = None
        self._summary_job: asyncio.Future[_Stored] | None = None
        self._purged_to = -math.inf
        # Written by the worker thread only (plain ints: reads elsewhere are atomic).
        self._generation = 0  # bumps on every commit that changed rows
        self._written_seq = 0  # the last flush committed
        self.flushes = 0
        self.rollup_rebuilds = 0
        self.overflowed = 0  # samples recorded in a port's (others) series

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Open (and migrate) the database off the loop, then start the writer."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="midihub-history")
        await self._run(self._open)
        await self.purge()
        for key in await self._run(self._stored_keys):
            if key[:2] != (OVERFLOW_NAME, ""):  # (others) takes no place of its own
                self._keys.setdefault(key[2], set()).add(key)
        self._task = asyncio.create_task(self._flush_forever(), name="latency-store")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._summary_job is not None:  # on the worker thread: let it finish
            await asyncio.gather(self._summary_job, return_exceptions=True)
        if self._engine is not None:
            try:
                await self.flush()
            finally:
                await self._run(self._dispose)
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True)
            self._executor = None

    async def _run(self, job: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None, "the store is not started"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(job, *args))

    def _open(self) -> None:
        if self.path == ":memory:":
            engine = create_engine(
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine("sqlite:///" + self.path)
            event.listen(engine, "connect", _sqlite_pragmas)
        self._engine = engine
        with engine.begin() as connection:
            metadata.create_all(connection)  # new tables and indexes; old ones untouched
            if not _rollup_matches(connection):
                started = time.perf_counter()
                _rebuild_hours(connection)
                self.rollup_rebuilds += 1
                log.info(
                    "latency history: hourly roll-up rebuilt in %.2f s",
                    time.perf_counter() - started,
                )
        self._generation += 1

    def _dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- the packet path ----------------------------------------------------------

    def record(self, name: str, address: str, hub_port: int, rtt_ms: float, at: float) -> None:
        """O(1), never waits: the sample joins its minute's bucket in memory."""
        value = round(rtt_ms, 1)
        key = (name, address, hub_port)
        kept = self._keys.get(hub_port)
        if kept is None:
            kept = self._keys[hub_port] = set()
        if key not in kept:
            if len(kept) < self.max_keys_per_port:
                kept.add(key)
            else:
                key = (OVERFLOW_NAME, "", hub_port)
                self.overflowed += 1
        buckets = self._pending.get(key)
        if buckets is None:
            buckets = self._pending[key] = {}
        minute = int(at // 60 * 60)
        bucket = buckets.get(minute)
        if bucket is None:
            buckets[minute] = Bucket.first(value, at)
        else:
            bucket.add(value, at)

    # -- writing ------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
                await self.purge()
            except Exception:  # a full or broken disk must not stop the hub
                log.exception("latency history: write failed; will retry")

    async def flush(self) -> None:
        """Write the pending buckets in one transaction, merging with stored minutes."""
        async with self._lock:
            if not self._pending:
                return
            unwritten = _Unwritten(self._next_seq, self._pending)
            self._next_seq += 1
            self._pending = {}
            self._flushing.append(unwritten)
            try:
                await self._run(self._write, unwritten)
            except Exception:
                for key, buckets in unwritten.buckets.items():  # keep them for the next try
                    mine = self._pending.setdefault(key, {})
                    for minute, bucket in buckets.items():
                        if minute in mine:
                            bucket.merge(mine[minute])
                        mine[minute] = bucket
                raise
            finally:
                self._flushing.remove(unwritten)
            self.flushes += 1

    def _write(self, unwritten: _Unwritten) -> None:
        assert self._engine is not None
        with self._engine.begin() as connection:
            minute_rows: list[dict[str, Any]] = []
            hour_rows: dict[tuple[int, int], Bucket] = {}
            for (name, address, hub_port), buckets in unwritten.buckets.items():
                if not buckets:
                    continue
                pid = _participant_id(connection, name, address, hub_port, buckets.values())
                for minute, b in buckets.items():
                    minute_rows.append({"participant_id": pid, "minute": minute, **_values(b)})
                    hour = minute // HOUR * HOUR
                    rolled = hour_rows.get((pid, hour))
                    if rolled is None:
                        hour_rows[(pid, hour)] = b.copy()
                    else:
                        rolled.merge(b)
            if minute_rows:
                connection.execute(_merge_upsert(minutes, "minute"), minute_rows)
                connection.execute(
                    _merge_upsert(hours, "hour"),
                    [
                        {"participant_id": pid, "hour": hour, **_values(b)}
                        for (pid, hour), b in hour_rows.items()
                    ],
                )
        self._written_seq = unwritten.seq
        self._generation += 1

    async def purge(self) -> int:
        """Forget minutes older than the retention, and participants left with none
        (their series free their places in their port's ``max_keys_per_port``)."""
        cutoff = int((self._clock() - self.retention) // 60 * 60)
        for buckets in self._pending.values():
            for minute in [m for m in buckets if m < cutoff]:
                del buckets[minute]
        if cutoff <= self._purged_to:  # moves once a minute: nothing new to forget
            return 0
        async with self._lock:  # no flush in between: what it deletes stays deleted
            removed, gone = await self._run(self._purge, cutoff)
        for key in gone:
            kept = self._keys.get(key[2])
            if kept is not None and key not in self._pending:  # not recorded meanwhile
                kept.discard(key)
        self._purged_to = cutoff
        return removed

    def _purge(self, cutoff: int) -> tuple[int, list[Key]]:
        assert self._engine is not None
        gone: list[Key] = []
        with self._engine.begin() as connection:
            result = connection.execute(delete(minutes).where(minutes.c.minute < cutoff))
            removed = int(result.rowcount or 0)
            if removed:
                edge = cutoff // HOUR * HOUR
                connection.execute(delete(hours).where(hours.c.hour < edge))
                if edge < cutoff:  # the hour the cutoff falls in lost some minutes
                    _rebuild_hours(connection, edge, edge + HOUR)
                used = exists().where(minutes.c.participant_id == participants.c.id)
                p = participants.c
                unused = select(p.name, p.address, p.hub_port).where(~used)
                gone = [(row.name, row.address, row.hub_port) for row in connection.execute(unused)]
                connection.execute(delete(participants).where(~used))
        if removed:
            self._generation += 1
        return removed, gone

    def _stored_keys(self) -> list[Key]:
        assert self._engine is not None
        p = participants.c
        with self._engine.connect() as connection:
            rows = connection.execute(select(p.name, p.address, p.hub_port))
            return [(row.name, row.address, row.hub_port) for row in rows]

    # -- reading ------------------------------------------------------------------

    def _unwritten(self, keep: Callable[[Key], bool] = lambda key: True) -> list[_Unwritten]:
        """Copies of what is not in the database yet (the worker must not see buckets
        that ``record`` is still changing)."""
        found = [
            _Unwritten(u.seq, {k: _copy(b) for k, b in u.buckets.items() if keep(k)})
            for u in self._flushing
        ]
        pending = {k: _copy(b) for k, b in self._pending.items() if keep(k)}
        found.append(_Unwritten(self._next_seq, pending))
        return found

    async def summary(self) -> list[Summary]:
        """Per participant over the retention: the cached SQL totals plus what is not
        written yet."""
        stored = self._summary
        if stored is None or stored.generation != self._generation:
            if self._summary_job is None or self._summary_job.done():
                self._summary_job = asyncio.ensure_future(self._run(self._stored_summary))
            stored = await asyncio.shield(self._summary_job)
            self._summary = stored
        totals = {key: bucket.copy() for key, bucket in stored.totals.items()}
        for unwritten in self._unwritten():
            if unwritten.seq <= stored.written_seq:
                continue
            for key, buckets in unwritten.buckets.items():
                for bucket in buckets.values():
                    if key in totals:
                        totals[key].merge(bucket)
                    else:
                        totals[key] = bucket.copy()
        return [
            Summary(
                *key,
                t.count,
                t.sum_ms / t.count,
                t.min_ms,
                t.min_at,
                t.max_ms,
                t.max_at,
                t.last_ms,
                t.last_at,
            )
            for key, t in sorted(totals.items())
            if t.count
        ]

    def _stored_summary(self) -> _Stored:
        assert self._engine is not None
        generation, written = self._generation, self._written_seq
        h = hours.c
        chosen = (
            select(participants.c.id)
            .order_by(participants.c.last_seen.desc())
            .limit(self.max_summary)
            .scalar_subquery()
        )
        pid = h.participant_id
        # SQLite: with a single min()/max() in a query, bare columns come from its row.
        low = select(pid, func.sum(h.count), func.sum(h.sum_ms), func.min(h.min_ms), h.min_at)
        high = select(pid, func.max(h.max_ms), h.max_at)
        last = select(pid, func.max(h.last_at), h.last_ms)
        totals: dict[Key, Bucket] = {}
        with self._engine.connect() as connection:
            names = {
                row.id: (row.name, row.address, row.hub_port)
                for row in connection.execute(
                    select(
                        participants.c.id,
                        participants.c.name,
                        participants.c.address,
                        participants.c.hub_port,
                    ).where(participants.c.id.in_(chosen))
                )
            }
            by_id: dict[int, Bucket] = {}
            for row in connection.execute(low.where(pid.in_(chosen)).group_by(pid)):
                by_id[row[0]] = Bucket(int(row[1]), float(row[2]), row[3], row[4], 0, 0, 0, 0)
            for high_row in connection.execute(high.where(pid.in_(chosen)).group_by(pid)):
                if high_row[0] in by_id:
                    by_id[high_row[0]].max_ms, by_id[high_row[0]].max_at = high_row[1:3]
            for last_row in connection.execute(last.where(pid.in_(chosen)).group_by(pid)):
                if last_row[0] in by_id:
                    by_id[last_row[0]].last_at, by_id[last_row[0]].last_ms = last_row[1:3]
        for participant, bucket in by_id.items():
            if participant in names and bucket.count:
                totals[names[participant]] = bucket
        return _Stored(generation, written, totals)

    async def history(
        self,
        participant: str | None = None,
        since: float | None = None,
        *,
        points: int = MAX_POINTS,
    ) -> list[MinuteRow]:
        """Series per participant, oldest first, at most ``points`` buckets each over
        the span asked for (minutes while they fit, wider buckets beyond);
        ``participant`` matches a name or an address."""
        now = self._clock()
        low = now - self.retention
        if since is not None:
            low = max(low, since)
        low_minute = int(low // 60 * 60)

        def keep(key: Key) -> bool:
            return participant is None or participant in (key[0], key[1])

        unwritten = self._unwritten(keep)
        first_unwritten = min(
            (m for u in unwritten for b in u.buckets.values() for m in b if m >= low_minute),
            default=None,
        )
        return await self._run(
            self._history,
            participant,
            low_minute,
            since is None,
            now,
            max(1, min(points, MAX_POINTS)),
            unwritten,
            first_unwritten,
        )

    def _history(
        self,
        participant: str | None,
        low_minute: int,
        from_first: bool,
        now: float,
        points: int,
        unwritten: list[_Unwritten],
        first_unwritten: int | None,
    ) -> list[MinuteRow]:
        assert self._engine is not None
        p = participants.c
        who = select(p.id, p.name, p.address, p.hub_port)
        if participant is not None:
            who = who.where(or_(p.name == participant, p.address == participant))
        who = who.order_by(p.name, p.address, p.hub_port).limit(self.max_series)
        with self._engine.connect() as connection:
            written = self._written_seq
            names: dict[int, Key] = {
                row.id: (row.name, row.address, row.hub_port) for row in connection.execute(who)
            }
            start = low_minute
            if from_first:  # no span asked for: as much as there is
                firsts = [
                    connection.execute(
                        select(func.min(minutes.c.minute)).where(
                            minutes.c.participant_id == pid, minutes.c.minute >= low_minute
                        )
                    ).scalar()
                    for pid in names
                ]
                known = [f for f in (*firsts, first_unwritten) if f is not None]
                start = int(min(known)) if known else low_minute
            step = choose_step(max(60.0, now - start), points)
            rolled = step % HOUR == 0
            table, period = (hours, hours.c.hour) if rolled else (minutes, minutes.c.minute)
            floor = start // HOUR * HOUR if rolled else start
            bucket = (period // step * step).label("bucket")
            c = table.c
            query = (
                select(
                    c.participant_id,
                    bucket,
                    func.sum(c.count),
                    func.sum(c.sum_ms),
                    func.min(c.min_ms),
                    func.max(c.max_ms),
                )
                .where(c.participant_id.in_(list(names)), period >= floor)
                .group_by(c.participant_id, bucket)
            )
            series: dict[tuple[Key, int], list[float]] = {}
            for row in connection.execute(query) if names else ():
                series[(names[row[0]], int(row[1]))] = [row[2], row[3], row[4], row[5]]
        allowed = set(names.values())
        for u in unwritten:
            if u.seq <= written:
                continue
            for key, buckets in u.buckets.items():
                if key not in allowed and len(allowed) >= self.max_series:
                    continue
                allowed.add(key)
                for minute, b in buckets.items():
                    if minute < start:
                        continue
                    found = series.get((key, minute // step * step))
                    if found is None:
                        series[(key, minute // step * step)] = [
                            b.count,
                            b.sum_ms,
                            b.min_ms,
                            b.max_ms,
                        ]
                    else:
                        found[0] += b.count
                        found[1] += b.sum_ms
                        found[2] = min(found[2], b.min_ms)
                        found[3] = max(found[3], b.max_ms)
        rows = [
            MinuteRow(*key, at, int(v[0]), v[2], v[1] / v[0], v[3], step)
            for (key, at), v in series.items()
            if v[0]
        ]
        rows.sort(key=lambda r: (r.minute, r.name, r.hub_port, r.address))
        return rows


def _copy(buckets: dict[int, Bucket]) -> dict[int, Bucket]:
    return {minute: bucket.copy() for minute, bucket in buckets.items()}


def _values(b: Bucket) -> dict[str, Any]:
    return {name: getattr(b, name) for name in BUCKET_COLUMNS}


def _participant_id(
    connection: Connection, name: str, address: str, hub_port: int, buckets: Iterable[Bucket]
) -> int:
    listed = list(buckets)
    seen = max(b.last_at for b in listed)
    first = min(b.first_at for b in listed)
    upsert = sqlite_insert(participants).values(
        name=name, address=address, hub_port=hub_port, first_seen=first, last_seen=seen
    )
    connection.execute(
        upsert.on_conflict_do_update(
            index_elements=["name", "address", "hub_port"],
            set_={
                "first_seen": func.min(participants.c.first_seen, first),
                "last_seen": func.max(participants.c.last_seen, seen),
            },
        )
    )
    return int(
        connection.execute(
            select(participants.c.id).where(
                participants.c.name == name,
                participants.c.address == address,
                participants.c.hub_port == hub_port,
            )
        ).scalar_one()
    )


@functools.cache
def _merge_upsert(table: Table, period: str) -> Any:
    """INSERT, or merge into the stored bucket: the SQL twin of ``Bucket.merge``."""
    row = sqlite_insert(table)
    new = row.excluded
    c = table.c
    return row.on_conflict_do_update(
        index_elements=["participant_id", period],
        set_={
            "count": c.count + new.count,
            "sum_ms": c.sum_ms + new.sum_ms,
            "min_at": case((new.min_ms < c.min_ms, new.min_at), else_=c.min_at),
            "min_ms": case((new.min_ms < c.min_ms, new.min_ms), else_=c.min_ms),
            "max_at": case((new.max_ms > c.max_ms, new.max_at), else_=c.max_at),
            "max_ms": case((new.max_ms > c.max_ms, new.max_ms), else_=c.max_ms),
            "last_ms": case((new.last_at >= c.last_at, new.last_ms), else_=c.last_ms),
            "last_at": case((new.last_at >= c.last_at, new.last_at), else_=c.last_at),
        },
    )


def _rollup_matches(connection: Connection) -> bool:
    """Whether the hourly roll-up holds exactly the samples of the minutes (one pass
    over each table, at start only)."""
    in_minutes = connection.execute(
        select(func.count(), func.total(minutes.c.count), func.total(minutes.c.sum_ms))
    ).one()
    in_hours = connection.execute(
        select(func.total(hours.c.count), func.total(hours.c.sum_ms))
    ).one()
    if in_minutes[1] != in_hours[0]:
        return False
    return math.isclose(in_minutes[2], in_hours[1], rel_tol=1e-9, abs_tol=1e-6)


_REBUILD = """
INSERT INTO latency_hours
    (participant_id, hour, count, sum_ms, min_ms, min_at, max_ms, max_at, last_ms, last_at)
SELECT participant_id, minute / 3600 * 3600, sum(count), sum(sum_ms), min(min_ms), min_at,
       0, 0, 0, 0
FROM latency_minutes WHERE minute >= :low AND minute < :high
GROUP BY participant_id, minute / 3600 * 3600
"""
# SQLite: the bare columns (min_at, max_at, last_ms) come from the row holding the
# single min()/max() of their query; the UPDATEs read a 60-row primary-key range each.
_REBUILD_HIGH = """
UPDATE latency_hours SET (max_ms, max_at) = (
    SELECT max(m.max_ms), m.max_at FROM latency_minutes AS m
    WHERE m.participant_id = latency_hours.participant_id
      AND m.minute >= latency_hours.hour AND m.minute < latency_hours.hour + 3600)
WHERE hour >= :low AND hour < :high
"""
_REBUILD_LAST = """
UPDATE latency_hours SET (last_at, last_ms) = (
    SELECT max(m.last_at), m.last_ms FROM latency_minutes AS m
    WHERE m.participant_id = latency_hours.participant_id
      AND m.minute >= latency_hours.hour AND m.minute < latency_hours.hour + 3600)
WHERE hour >= :low AND hour < :high
"""


def _rebuild_hours(connection: Connection, low: int = -(2**62), high: int = 2**62) -> None:
    """Recompute the hourly rows in [low, high) (whole hours) from the minutes."""
    bounds = {"low": low, "high": high}
    connection.execute(delete(hours).where(hours.c.hour >= low, hours.c.hour < high))
    for statement in (_REBUILD, _REBUILD_HIGH, _REBUILD_LAST):
        connection.execute(text(statement), bounds)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
