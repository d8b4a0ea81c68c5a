"""Latency history: per participant and minute, min/avg/max/count, in SQLite.

``record`` runs on the packet path, so it only touches an in-memory bucket; a
background task writes the buckets in one transaction every few seconds, so a slow
disk delays nothing but the next flush. SQLAlchemy Core keeps the SQL portable
(PostgreSQL would be a URL away); the one dialect-specific piece is the upsert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    case,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger("midihub.store")

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
minutes = Table(
    "latency_minutes",
    metadata,
    Column("participant_id", ForeignKey("participants.id"), primary_key=True),
    Column("minute", Integer, primary_key=True),  # UTC epoch seconds, whole minutes
    Column("count", Integer, nullable=False),
    Column("sum_ms", Float, nullable=False),
    Column("min_ms", Float, nullable=False),
    Column("min_at", Float, nullable=False),
    Column("max_ms", Float, nullable=False),
    Column("max_at", Float, nullable=False),
    Column("last_ms", Float, nullable=False),
    Column("last_at", Float, nullable=False),
)

Key = tuple[str, str, int]  # session name, address, hub port
BUCKET_COLUMNS = ("count", "sum_ms", "min_ms", "min_at", "max_ms", "max_at", "last_ms", "last_at")


@dataclass(slots=True)
class Bucket:
    count: int
    sum_ms: float
    min_ms: float
    min_at: float
    max_ms: float
    max_at: float
    last_ms: float
    last_at: float

    @classmethod
    def first(cls, value: float, at: float) -> Bucket:
        return cls(1, value, value, at, value, at, value, at)

    def add(self, value: float, at: float) -> None:
        self.count += 1
        self.sum_ms += value
        if value < self.min_ms:
            self.min_ms, self.min_at = value, at
        if value > self.max_ms:
            self.max_ms, self.max_at = value, at
        if at >= self.last_at:
            self.last_ms, self.last_at = value, at

    def merge(self, other: Bucket) -> None:
        self.count += other.count
        self.sum_ms += other.sum_ms
        if other.min_ms < self.min_ms:
            self.min_ms, self.min_at = other.min_ms, other.min_at
        if other.max_ms > self.max_ms:
            self.max_ms, self.max_at = other.max_ms, other.max_at
        if other.last_at >= self.last_at:
            self.last_ms, self.last_at = other.last_ms, other.last_at


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
    name: str
    address: str
    hub_port: int
    minute: float
    count: int
    min_ms: float
    avg_ms: float
    max_ms: float


class LatencyStore:
    def __init__(
        self,
        path: str,
        *,
        retention: float = 7 * 86400,
        flush_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.retention = retention
        self.flush_interval = flush_interval
        self._clock = clock
        self._pending: dict[Key, dict[int, Bucket]] = {}
        self._engine: AsyncEngine | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.flushes = 0

    async def start(self) -> None:
        url = "sqlite+aiosqlite:///" + (":memory:" if self.path == ":memory:" else self.path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._engine = create_async_engine(url)
        if self.path != ":memory:":
            event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
        async with self._engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        await self.purge()
        self._task = asyncio.create_task(self._flush_forever(), name="latency-store")

    def record(self, name: str, address: str, hub_port: int, rtt_ms: float, at: float) -> None:
        """O(1), never waits: the sample joins its minute's bucket in memory."""
        value = round(rtt_ms, 1)
        buckets = self._pending.get((name, address, hub_port))
        if buckets is None:
            buckets = self._pending[(name, address, hub_port)] = {}
        minute = int(at // 60 * 60)
        bucket = buckets.get(minute)
        if bucket is None:
            buckets[minute] = Bucket.first(value, at)
        else:
            bucket.add(value, at)

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
            pending, self._pending = self._pending, {}
            if not pending:
                return
            try:
                await self._write(pending)
            except Exception:
                for key, buckets in pending.items():  # keep them for the next try
                    for minute, bucket in buckets.items():
                        mine = self._pending.setdefault(key, {}).get(minute)
                        if mine is None:
                            self._pending[key][minute] = bucket
                        else:
                            bucket.merge(mine)
                            self._pending[key][minute] = bucket
                raise
            self.flushes += 1

    async def _write(self, pending: dict[Key, dict[int, Bucket]]) -> None:
        assert self._engine is not None
        async with self._engine.begin() as connection:
            for (name, address, hub_port), buckets in pending.items():
                seen = max(b.last_at for b in buckets.values())
                first = min(min(b.min_at, b.max_at) for b in buckets.values())
                upsert = sqlite_insert(participants).values(
                    name=name, address=address, hub_port=hub_port, first_seen=first, last_seen=seen
                )
                await connection.execute(
                    upsert.on_conflict_do_update(
                        index_elements=["name", "address", "hub_port"],
                        set_={"last_seen": func.max(participants.c.last_seen, seen)},
                    )
                )
                pid = (
                    await connection.execute(
                        select(participants.c.id).where(
                            participants.c.name == name,
                            participants.c.address == address,
                            participants.c.hub_port == hub_port,
                        )
                    )
                ).scalar_one()
                for minute, b in buckets.items():
                    row = sqlite_insert(minutes).values(
                        participant_id=pid,
                        minute=minute,
                        count=b.count,
                        sum_ms=b.sum_ms,
                        min_ms=b.min_ms,
                        min_at=b.min_at,
                        max_ms=b.max_ms,
                        max_at=b.max_at,
                        last_ms=b.last_ms,
                        last_at=b.last_at,
                    )
                    new = row.excluded
                    c = minutes.c
                    await connection.execute(
                        row.on_conflict_do_update(
                            index_elements=["participant_id", "minute"],
                            set_={
                                "count": c.count + new.count,
                                "sum_ms": c.sum_ms + new.sum_ms,
                                "min_at": case((new.min_ms < c.min_ms, new.min_at), else_=c.min_at),
                                "min_ms": case((new.min_ms < c.min_ms, new.min_ms), else_=c.min_ms),
                                "max_at": case((new.max_ms > c.max_ms, new.max_at), else_=c.max_at),
                                "max_ms": case((new.max_ms > c.max_ms, new.max_ms), else_=c.max_ms),
                                "last_ms": case(
                                    (new.last_at >= c.last_at, new.last_ms), else_=c.last_ms
                                ),
                                "last_at": case(
                                    (new.last_at >= c.last_at, new.last_at), else_=c.last_at
                                ),
                            },
                        )
                    )

    async def purge(self) -> int:
        """Forget minutes older than the retention, and participants left with none."""
        assert self._engine is not None
        cutoff = int((self._clock() - self.retention) // 60 * 60)
        async with self._engine.begin() as connection:
            result = await connection.execute(delete(minutes).where(minutes.c.minute < cutoff))
            used = select(minutes.c.participant_id).distinct()
            await connection.execute(delete(participants).where(participants.c.id.not_in(used)))
        for buckets in self._pending.values():
            for minute in [m for m in buckets if m < cutoff]:
                del buckets[minute]
        return int(result.rowcount or 0)

    async def _stored(self) -> dict[Key, dict[int, Bucket]]:
        assert self._engine is not None
        query = select(
            participants.c.name, participants.c.address, participants.c.hub_port, minutes
        ).join(minutes, minutes.c.participant_id == participants.c.id)
        found: dict[Key, dict[int, Bucket]] = {}
        async with self._engine.connect() as connection:
            for row in await connection.execute(query):
                r = row._mapping
                found.setdefault((r["name"], r["address"], r["hub_port"]), {})[r["minute"]] = (
                    Bucket(*(r[name] for name in BUCKET_COLUMNS))
                )
        return found

    async def _everything(self) -> dict[Key, dict[int, Bucket]]:
        """Stored minutes merged with those not written yet: answers are always live."""
        merged = await self._stored()
        for key, buckets in self._pending.items():
            target = merged.setdefault(key, {})
            for minute, bucket in buckets.items():
                copy = Bucket(*_fields(bucket))
                if minute in target:
                    target[minute].merge(copy)
                else:
                    target[minute] = copy
        return merged

    async def summary(self) -> list[Summary]:
        rows: list[Summary] = []
        for (name, address, port), buckets in sorted((await self._everything()).items()):
            if not buckets:
                continue
            total = Bucket(*_fields(next(iter(buckets.values()))))
            for bucket in list(buckets.values())[1:]:
                total.merge(bucket)
            rows.append(
                Summary(
                    name,
                    address,
                    port,
                    total.count,
                    total.sum_ms / total.count,
                    total.min_ms,
                    total.min_at,
                    total.max_ms,
                    total.max_at,
                    total.last_ms,
                    total.last_at,
                )
            )
        return rows

    async def history(
        self, participant: str | None = None, since: float | None = None
    ) -> list[MinuteRow]:
        """Per-minute rows, oldest first; ``participant`` matches a name or an address."""
        rows: list[MinuteRow] = []
        for (name, address, port), buckets in (await self._everything()).items():
            if participant is not None and participant not in (name, address):
                continue
            for minute, b in buckets.items():
                if since is not None and minute + 60 <= since:
                    continue
                rows.append(
                    MinuteRow(
                        name, address, port, minute, b.count, b.min_ms, b.sum_ms / b.count, b.max_ms
                    )
                )
        rows.sort(key=lambda r: (r.minute, r.name, r.hub_port))
        return rows

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._engine is not None:
            try:
                await self.flush()
            finally:
                await self._engine.dispose()
                self._engine = None


def _fields(bucket: Bucket) -> tuple[Any, ...]:
    return (
        bucket.count,
        bucket.sum_ms,
        bucket.min_ms,
        bucket.min_at,
        bucket.max_ms,
        bucket.max_at,
        bucket.last_ms,
        bucket.last_at,
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
