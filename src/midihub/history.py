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

In a fleet (``[fleet]``) the history lives in the fleet's PostgreSQL database instead,
in tables of the same shape whose participants carry a ``hub`` column: each hub writes
and reads its own series (``summary``, ``history``), ``fleet_summary`` reads every
hub's. Writes there hold a transaction-level advisory lock, so the hubs' flushes and
roll-up repairs never interleave. While that database is away, the buckets wait in
memory (at most ``max_buffered`` series-minutes; samples past that are dropped and
counted) and are written when it is back; the store opens it in the background, so a
database that is down at start never stops the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
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
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import insert as postgres_insert
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

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
HISTORY_LOCK = 0x6D6964686973  # pg_advisory_xact_lock key of every history write
MAX_BUFFERED = 100_000
"""Series-minutes kept in memory while the database cannot take them."""


@dataclass(frozen=True, slots=True)
class _Schema:
    """The tables of one backend: SQLite's (unchanged since the first release), or the
    fleet's on PostgreSQL (a ``hub`` column, 64-bit periods)."""

    metadata: MetaData
    participants: Table
    minutes: Table
    hours: Table
    postgres: bool

    @property
    def tables(self) -> tuple[Table, Table, Table]:
        return self.participants, self.minutes, self.hours


def _postgres_schema() -> _Schema:
    meta = MetaData()
    people = Table(
        "latency_participants",
        meta,
        Column("id", Integer, primary_key=True),
        Column("hub", String, nullable=False),
        Column("name", String, nullable=False),
        Column("address", String, nullable=False),
        Column("hub_port", Integer, nullable=False),
        Column("first_seen", Float, nullable=False),
        Column("last_seen", Float, nullable=False),
        UniqueConstraint("hub", "name", "address", "hub_port"),
    )

    def buckets(name: str, period: str) -> Table:
        return Table(
            name,
            meta,
            Column("participant_id", ForeignKey("latency_participants.id"), primary_key=True),
            Column(period, BigInteger, primary_key=True),
            *(
                Column(column, Integer if column == "count" else Float, nullable=False)
                for column in BUCKET_COLUMNS
            ),
        )

    by_minute, by_hour = buckets("latency_minutes", "minute"), buckets("latency_hours", "hour")
    Index("ix_latency_minutes_minute", by_minute.c.minute)
    Index("ix_latency_hours_hour", by_hour.c.hour)
    return _Schema(meta, people, by_minute, by_hour, True)


SQLITE = _Schema(metadata, participants, minutes, hours, False)
POSTGRES = _postgres_schema()


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


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
    hub: str = ""  # in a fleet, the hub that measured it


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
        hub: str = "",
        max_buffered: int = MAX_BUFFERED,
        quiet_outages: bool = False,
    ) -> None:
        self.path = path  # a SQLite file, :memory:, or a postgresql:// URL (a fleet's)
        self.hub = hub  # this hub's name in a fleet: its rows' ``hub``
        self._schema = POSTGRES if is_postgres(path) else SQLITE
        self.max_buffered = max_buffered
        # A fleet's hub: its Fleet already says in one line that the database is away.
        self.quiet_outages = quiet_outages
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
        self.dropped = 0  # samples dropped: the buffer was full while the database was away
        self.write_failures = 0  # flushes the database refused (the buckets were kept)
        self._buffered = 0  # series-minutes in ``_pending``
        self._failing = False  # the last flush failed (one log line per outage)

    # -- lifecycle ----------------------------------------------------------------

    @property
    def postgres(self) -> bool:
        return self._schema.postgres

    @property
    def buffered(self) -> int:
        """Series-minutes waiting in memory for the database."""
        return self._buffered

    async def start(self) -> None:
        """Open (and migrate) the database off the loop, then start the writer. A
        fleet's database that cannot be reached is one log line, and opened later by
        the writer (the hub runs on)."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="midihub-history")
        try:
            await self._ready()
        except Exception as error:
            if not self.postgres:
                raise
            self._failed(error)
        self._task = asyncio.create_task(self._flush_forever(), name="latency-store")

    async def _ready(self) -> None:
        """Open the database if it is not yet, and learn the series it keeps."""
        if self._engine is not None:
            return
        try:
            await self._run(self._open)
            await self.purge()
            for key in await self._run(self._stored_keys):
                if key[:2] != (OVERFLOW_NAME, ""):  # (others) takes no place of its own
                    self._keys.setdefault(key[2], set()).add(key)
        except BaseException:
            await self._run(self._dispose)
            raise

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
            except Exception as error:
                if not self.postgres:
                    raise
                log.warning(  # a fleet's database gone at exit: the hub still stops
                    "latency history: %d series-minutes not written at exit: %s",
                    self._buffered,
                    _one_line(error),
                )
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
        if self.postgres:
            url = "postgresql+psycopg://" + self.path.split("://", 1)[1]
            engine = create_engine(
                url,
                pool_pre_ping=True,  # a connection the server dropped is replaced, not used
                connect_args={
                    "connect_timeout": 5,
                    "application_name": f"midihub {self.hub} history"[:63],
                    # Bounded waits: a hub cut off mid-write holds the fleet's
                    # history lock no longer than this.
                    "options": "-c statement_timeout=30000"
                    " -c idle_in_transaction_session_timeout=30000",
                    "tcp_user_timeout": 10_000,
                    "keepalives": 1,
                    "keepalives_idle": 5,
                    "keepalives_interval": 2,
                    "keepalives_count": 3,
                },
            )
        elif self.path == ":memory:":
            engine = create_engine(
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine("sqlite:///" + self.path)
            event.listen(engine, "connect", _sqlite_pragmas)
        self._engine = engine
        with engine.begin() as connection:
            self._lock_fleet(connection)
            # new tables and indexes; old ones untouched
            self._schema.metadata.create_all(connection)
            if not _rollup_matches(connection, self._schema):
                started = time.perf_counter()
                _rebuild_hours(connection, self._schema)
                self.rollup_rebuilds += 1
                log.info(
                    "latency history: hourly roll-up rebuilt in %.2f s",
                    time.perf_counter() - started,
                )
        self._generation += 1

    def _lock_fleet(self, connection: Connection) -> None:
        """PostgreSQL: one history writer at a time in the whole fleet (this
        transaction's)."""
        if self.postgres:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": HISTORY_LOCK})

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
            if self._buffered >= self.max_buffered:  # the database has been away long
                self.dropped += 1
                return
            self._buffered += 1
            buckets[minute] = Bucket.first(value, at)
        else:
            bucket.add(value, at)

    # -- writing ------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self._ready()
                await self.flush()
                await self.purge()
            except Exception as error:  # a full disk or a lost database must not stop the hub
                self._failed(error)
            else:
                if self._failing:
                    log.info("latency history: the database takes writes again")
                self._failing = False

    def _failed(self, error: BaseException) -> None:
        """One line per outage (the first failure), and the count of every one."""
        self.write_failures += 1
        if self._failing:
            log.debug("latency history: still failing: %s", _one_line(error))
            return
        self._failing = True
        log.log(
            logging.DEBUG if self.quiet_outages else logging.WARNING,
            "latency history: cannot write to %s: %s; keeping up to %d series-minutes in "
            "memory and retrying",
            self.where,
            _one_line(error),
            self.max_buffered,
        )

    @property
    def where(self) -> str:
        """The database as logs may show it (never a password)."""
        if not self.postgres:
            return self.path
        from urllib.parse import urlsplit

        parts = urlsplit(self.path)
        return f"{parts.hostname or '(local socket)'}{parts.path}"

    async def flush(self) -> None:
        """Write the pending buckets in one transaction, merging with stored minutes."""
        async with self._lock:
            if not self._pending:
                return
            if self._engine is None:
                raise ConnectionError("the database is not open")
            unwritten = _Unwritten(self._next_seq, self._pending)
            self._next_seq += 1
            self._pending = {}
            self._buffered = 0
            self._flushing.append(unwritten)
            try:
                await self._run(self._write, unwritten)
            except Exception:
                for key, buckets in unwritten.buckets.items():  # keep them for the next try
                    mine = self._pending.setdefault(key, {})
                    for minute, bucket in buckets.items():
                        if minute in mine:
                            bucket.merge(mine[minute])
                        else:
                            self._buffered += 1
                        mine[minute] = bucket
                raise
            finally:
                self._flushing.remove(unwritten)
            self.flushes += 1

    def _write(self, unwritten: _Unwritten) -> None:
        assert self._engine is not None
        _, minutes, hours = self._schema.tables
        with self._engine.begin() as connection:
            self._lock_fleet(connection)
            minute_rows: list[dict[str, Any]] = []
            hour_rows: dict[tuple[int, int], Bucket] = {}
            for (name, address, hub_port), buckets in unwritten.buckets.items():
                if not buckets:
                    continue
                pid = _participant_id(
                    connection, self._schema, (self.hub, name, address, hub_port), buckets.values()
                )
                for minute, b in buckets.items():
                    minute_rows.append({"participant_id": pid, "minute": minute, **_values(b)})
                    hour = minute // HOUR * HOUR
                    rolled = hour_rows.get((pid, hour))
                    if rolled is None:
                        hour_rows[(pid, hour)] = b.copy()
                    else:
                        rolled.merge(b)
            if minute_rows:
                connection.execute(_merge_upsert(minutes, "minute", self.postgres), minute_rows)
                connection.execute(
                    _merge_upsert(hours, "hour", self.postgres),
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
                self._buffered -= 1
        # The cutoff moves once a minute: nothing new to forget before then.
        if cutoff <= self._purged_to or self._engine is None:
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
        """In a fleet, each hub purges its own series (by its own retention), and the
        series of other hubs not seen since the cutoff (a hub taken out of the fleet
        leaves nothing behind for ever)."""
        assert self._engine is not None
        participants, minutes, hours = self._schema.tables
        gone: list[Key] = []
        with self._engine.begin() as connection:
            self._lock_fleet(connection)
            if self.postgres:
                self._purge_silent_hubs(connection, cutoff)
            mine = self._mine(participants)
            old = minutes.c.minute < cutoff
            if self.postgres:
                old &= minutes.c.participant_id.in_(select(participants.c.id).where(mine))
            result = connection.execute(delete(minutes).where(old))
            removed = int(result.rowcount or 0)
            if removed:
                edge = cutoff // HOUR * HOUR
                old_hours = hours.c.hour < edge
                if self.postgres:
                    old_hours &= hours.c.participant_id.in_(select(participants.c.id).where(mine))
                connection.execute(delete(hours).where(old_hours))
                if edge < cutoff:  # the hour the cutoff falls in lost some minutes
                    _rebuild_hours(connection, self._schema, edge, edge + HOUR)
                used = exists().where(minutes.c.participant_id == participants.c.id)
                p = participants.c
                unused = select(p.name, p.address, p.hub_port).where(~used, mine)
                gone = [(row.name, row.address, row.hub_port) for row in connection.execute(unused)]
                connection.execute(delete(participants).where(~used, mine))
        if removed:
            self._generation += 1
        return removed, gone

    def _purge_silent_hubs(self, connection: Connection, cutoff: int) -> None:
        participants, minutes, hours = self._schema.tables
        p = participants.c
        silent = select(p.id).where(p.hub != self.hub, p.last_seen < cutoff)
        connection.execute(delete(minutes).where(minutes.c.participant_id.in_(silent)))
        connection.execute(delete(hours).where(hours.c.participant_id.in_(silent)))
        connection.execute(delete(participants).where(p.id.in_(silent)))

    def _mine(self, participants: Table) -> Any:
        """This hub's rows: all of them in SQLite, those of its ``hub`` in a fleet."""
        return participants.c.hub == self.hub if self.postgres else true()

    def _stored_keys(self) -> list[Key]:
        assert self._engine is not None
        participants = self._schema.participants
        p = participants.c
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(p.name, p.address, p.hub_port).where(self._mine(participants))
            )
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
        if self._engine is None:  # a fleet's database not reached yet: the memory's
            stored = _Stored(self._generation, self._written_seq, {})
        elif stored is None or stored.generation != self._generation:
            if self._summary_job is None or self._summary_job.done():
                self._summary_job = asyncio.ensure_future(self._run(self._stored_summary))
            try:
                stored = await asyncio.shield(self._summary_job)
            except Exception:
                if not self.postgres:
                    raise
                # A fleet's database away: the last answer read, plus the memory's.
                stored = stored or _Stored(self._generation, 0, {})
            else:
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
        participants = self._schema.participants
        p = participants.c
        chosen = (
            select(p.id)
            .where(self._mine(participants))
            .order_by(p.last_seen.desc())
            .limit(self.max_summary)
            .scalar_subquery()
        )
        totals: dict[Key, Bucket] = {}
        with self._engine.connect() as connection:
            names = {
                row.id: (row.name, row.address, row.hub_port)
                for row in connection.execute(
                    select(p.id, p.name, p.address, p.hub_port).where(p.id.in_(chosen))
                )
            }
            by_id = _totals(connection, self._schema, chosen)
        for participant, bucket in by_id.items():
            if participant in names and bucket.count:
                totals[names[participant]] = bucket
        return _Stored(generation, written, totals)

    async def fleet_summary(self) -> list[Summary]:
        """Every hub's participants (a fleet's database; in SQLite, this hub's): what is
        stored, plus this hub's samples not written yet; ``Summary.hub`` names the hub."""
        if self._engine is None:
            stored: dict[tuple[str, str, str, int], Bucket] = {}
        else:
            stored = await self._run(self._stored_fleet_summary)
        for unwritten in self._unwritten():
            for key, buckets in unwritten.buckets.items():
                for bucket in buckets.values():
                    found = stored.get((self.hub, *key))
                    if found is None:
                        stored[(self.hub, *key)] = bucket.copy()
                    else:
                        found.merge(bucket)
        return [
            Summary(
                name,
                address,
                port,
                t.count,
                t.sum_ms / t.count,
                t.min_ms,
                t.min_at,
                t.max_ms,
                t.max_at,
                t.last_ms,
                t.last_at,
                hub,
            )
            for (hub, name, address, port), t in sorted(stored.items())
            if t.count
        ]

    def _stored_fleet_summary(self) -> dict[tuple[str, str, str, int], Bucket]:
        """What is stored, for every hub: rows written and committed so far (this
        hub's unwritten ones are merged by the caller, which may count a flush that
        committed meanwhile twice; a fleet-wide view tolerates that)."""
        assert self._engine is not None
        participants = self._schema.participants
        p = participants.c
        hub = p.hub if self.postgres else text("''")
        chosen = select(p.id).order_by(p.last_seen.desc()).limit(self.max_summary).scalar_subquery()
        with self._engine.connect() as connection:
            names = {
                row[0]: (str(row[1]), row[2], row[3], row[4])
                for row in connection.execute(
                    select(p.id, hub, p.name, p.address, p.hub_port).where(p.id.in_(chosen))
                )
            }
            by_id = _totals(connection, self._schema, chosen)
        return {names[pid]: b for pid, b in by_id.items() if pid in names and b.count}

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
        asked = (participant, low_minute, since is None, now, max(1, min(points, MAX_POINTS)))
        try:
            return await self._run(self._history, *asked, unwritten, first_unwritten)
        except Exception:
            if not self.postgres:
                raise
            # A fleet's database away: the series still in memory.
            return await self._run(self._history, *asked, unwritten, first_unwritten, True)

    def _history(
        self,
        participant: str | None,
        low_minute: int,
        from_first: bool,
        now: float,
        points: int,
        unwritten: list[_Unwritten],
        first_unwritten: int | None,
        offline: bool = False,
    ) -> list[MinuteRow]:
        participants, minutes, hours = self._schema.tables
        p = participants.c
        who = select(p.id, p.name, p.address, p.hub_port).where(self._mine(participants))
        if participant is not None:
            who = who.where(or_(p.name == participant, p.address == participant))
        who = who.order_by(p.name, p.address, p.hub_port).limit(self.max_series)
        # A fleet's database not reached yet: no stored rows, only the memory's.
        engine = None if offline else self._engine
        opened = engine.connect() if engine is not None else _NoDatabase()
        with opened as connection:
            written = self._written_seq if engine is not None else 0
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


class _NoDatabase:
    """Stands in for a connection before a fleet's database was reached: no rows."""

    def __enter__(self) -> _NoDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, *args: Any) -> _NoDatabase:
        return self

    def scalar(self) -> None:
        return None

    def __iter__(self) -> Iterator[Any]:
        return iter(())


def _copy(buckets: dict[int, Bucket]) -> dict[int, Bucket]:
    return {minute: bucket.copy() for minute, bucket in buckets.items()}


def _values(b: Bucket) -> dict[str, Any]:
    return {name: getattr(b, name) for name in BUCKET_COLUMNS}


def _participant_id(
    connection: Connection,
    schema: _Schema,
    key: tuple[str, str, str, int],
    buckets: Iterable[Bucket],
) -> int:
    """The series' row id, made or updated (first and last seen) by an upsert; ``key``
    is (hub, name, address, port), its hub used in a fleet's database only."""
    hub, name, address, hub_port = key
    participants = schema.participants
    listed = list(buckets)
    seen = max(b.last_at for b in listed)
    first = min(b.first_at for b in listed)
    values: dict[str, Any] = {
        "name": name,
        "address": address,
        "hub_port": hub_port,
        "first_seen": first,
        "last_seen": seen,
    }
    match = [
        participants.c.name == name,
        participants.c.address == address,
        participants.c.hub_port == hub_port,
    ]
    if schema.postgres:
        values["hub"] = hub
        match.append(participants.c.hub == hub)
        upsert: Any = postgres_insert(participants).values(**values)
        lower: Any = func.least
        higher: Any = func.greatest
        elements = ["hub", "name", "address", "hub_port"]
    else:
        upsert = sqlite_insert(participants).values(**values)
        lower, higher = func.min, func.max  # SQLite: the two-argument scalar forms
        elements = ["name", "address", "hub_port"]
    connection.execute(
        upsert.on_conflict_do_update(
            index_elements=elements,
            set_={
                "first_seen": lower(participants.c.first_seen, first),
                "last_seen": higher(participants.c.last_seen, seen),
            },
        )
    )
    return int(connection.execute(select(participants.c.id).where(*match)).scalar_one())


@functools.cache
def _merge_upsert(table: Table, period: str, postgres: bool = False) -> Any:
    """INSERT, or merge into the stored bucket: the SQL twin of ``Bucket.merge``."""
    row = postgres_insert(table) if postgres else sqlite_insert(table)
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


def _totals(connection: Connection, schema: _Schema, chosen: Any) -> dict[int, Bucket]:
    """Per participant id in ``chosen``: its whole retained history in one bucket, from
    the hourly roll-up."""
    h = schema.hours.c
    pid = h.participant_id
    by_id: dict[int, Bucket] = {}
    if schema.postgres:  # the value at the row of a min()/max(): an ordered array_agg
        query = (
            select(
                pid,
                func.sum(h.count),
                func.sum(h.sum_ms),
                func.min(h.min_ms),
                literal_column("(array_agg(min_at ORDER BY min_ms))[1]"),
                func.max(h.max_ms),
                literal_column("(array_agg(max_at ORDER BY max_ms DESC))[1]"),
                literal_column("(array_agg(last_ms ORDER BY last_at DESC))[1]"),
                func.max(h.last_at),
            )
            .where(pid.in_(chosen))
            .group_by(pid)
        )
        for row in connection.execute(query):
            by_id[row[0]] = Bucket(int(row[1]), float(row[2]), *row[3:9])
        return by_id
    # SQLite: with a single min()/max() in a query, bare columns come from its row.
    low = select(pid, func.sum(h.count), func.sum(h.sum_ms), func.min(h.min_ms), h.min_at)
    high = select(pid, func.max(h.max_ms), h.max_at)
    last = select(pid, func.max(h.last_at), h.last_ms)
    for row in connection.execute(low.where(pid.in_(chosen)).group_by(pid)):
        by_id[row[0]] = Bucket(int(row[1]), float(row[2]), row[3], row[4], 0, 0, 0, 0)
    for high_row in connection.execute(high.where(pid.in_(chosen)).group_by(pid)):
        if high_row[0] in by_id:
            by_id[high_row[0]].max_ms, by_id[high_row[0]].max_at = high_row[1:3]
    for last_row in connection.execute(last.where(pid.in_(chosen)).group_by(pid)):
        if last_row[0] in by_id:
            by_id[last_row[0]].last_at, by_id[last_row[0]].last_ms = last_row[1:3]
    return by_id


def _rollup_matches(connection: Connection, schema: _Schema) -> bool:
    """Whether the hourly roll-up holds exactly the samples of the minutes (one pass
    over each table, at start only)."""
    minutes, hours = schema.minutes, schema.hours
    total = (  # SQLite's total(): 0.0 for no rows
        (lambda column: func.coalesce(func.sum(column), 0)) if schema.postgres else func.total
    )
    in_minutes = connection.execute(
        select(func.count(), total(minutes.c.count), total(minutes.c.sum_ms))
    ).one()
    in_hours = connection.execute(select(total(hours.c.count), total(hours.c.sum_ms))).one()
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


_REBUILD_POSTGRES = """
INSERT INTO latency_hours
    (participant_id, hour, count, sum_ms, min_ms, min_at, max_ms, max_at, last_ms, last_at)
SELECT participant_id, minute / 3600 * 3600, sum(count), sum(sum_ms),
       min(min_ms), (array_agg(min_at ORDER BY min_ms))[1],
       max(max_ms), (array_agg(max_at ORDER BY max_ms DESC))[1],
       (array_agg(last_ms ORDER BY last_at DESC))[1], max(last_at)
FROM latency_minutes WHERE minute >= :low AND minute < :high
GROUP BY participant_id, minute / 3600 * 3600
"""


def _rebuild_hours(
    connection: Connection, schema: _Schema, low: int = -(2**62), high: int = 2**62
) -> None:
    """Recompute the hourly rows in [low, high) (whole hours) from the minutes."""
    hours = schema.hours
    bounds = {"low": low, "high": high}
    connection.execute(delete(hours).where(hours.c.hour >= low, hours.c.hour < high))
    statements = (
        (_REBUILD_POSTGRES,) if schema.postgres else (_REBUILD, _REBUILD_HIGH, _REBUILD_LAST)
    )
    for statement in statements:
        connection.execute(text(statement), bounds)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _one_line(error: BaseException) -> str:
    """An error as one printable line (a driver's message may span several)."""
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return "".join(c if c.isprintable() else " " for c in line)[:300]
