"""The latency history on a fleet's PostgreSQL database (tests/pg.py): the same SQL
answers as SQLite's (tests/test_store_sql.py's check, against plain Python), per hub
and across hubs, the roll-up repaired, and writes buffered while the database is away."""

from __future__ import annotations

import asyncio
import math

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from midihub.history import LatencyStore
from midihub.web.metrics import HistoryCollector
from tests.pg import PgCluster
from tests.support import wait_for
from tests.test_store_sql import DAY, KEYS, T0, Clock, Sample, check, samples_strategy


@given(samples=samples_strategy, others=samples_strategy, cut=st.floats(0, 1))
@settings(max_examples=8, deadline=None)
def test_each_hub_gets_the_sql_answers_of_its_own_samples(
    pg: PgCluster, samples: list[Sample], others: list[Sample], cut: float
) -> None:
    """Hub a and hub b write series under the same names into one database: a's
    answers are exactly a's samples (written and in memory), and the fleet-wide
    summary has both, each under its hub."""
    url = pg.new_database()
    first = int(cut * len(samples))

    async def run() -> None:
        clock = Clock(T0 + 3 * DAY + 60)
        a = LatencyStore(url, hub="a", clock=clock, retention=30 * DAY, flush_interval=3600)
        b = LatencyStore(url, hub="b", clock=clock, retention=30 * DAY, flush_interval=3600)
        await a.start()
        await b.start()
        try:
            assert a.postgres and a.rollup_rebuilds == 0
            for key, offset, value in others:
                b.record(*KEYS[key], value, T0 + offset)
            await b.flush()
            for key, offset, value in samples[:first]:
                a.record(*KEYS[key], value, T0 + offset)
            await a.flush()
            for key, offset, value in samples[first:]:
                a.record(*KEYS[key], value, T0 + offset)
            await check(a, samples, clock.now)
            await a.flush()
            await check(a, samples, clock.now)
            await check(b, others, clock.now)
            fleet = await a.fleet_summary()
            counts: dict[str, int] = {}
            for row in fleet:
                counts[row.hub] = counts.get(row.hub, 0) + row.count
            assert counts == {"a": len(samples), "b": len(others)}
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


async def test_a_roll_up_that_disagrees_is_rebuilt_with_the_same_answers(pg_url: str) -> None:
    clock = Clock(T0 + 2 * DAY)
    store = LatencyStore(pg_url, hub="a", clock=clock, flush_interval=3600)
    await store.start()
    try:
        for n in range(600):  # two days, 3 series
            store.record(*KEYS[n % 3], float(n % 97), T0 + n * 290)
        await store.flush()
        before = await store.summary()
    finally:
        await store.close()
    with psycopg.connect(pg_url) as connection:  # rows lost by another program
        connection.execute("DELETE FROM latency_hours WHERE hour % 7200 = 0")
    store = LatencyStore(pg_url, hub="a", clock=clock, flush_interval=3600)
    await store.start()
    try:
        assert store.rollup_rebuilds == 1
        after = await store.summary()
        assert after == before
        day = await store.history("alice", clock.now - DAY, points=30)
        assert {r.step for r in day} == {3600}
        assert sum(r.count for r in day) == len(
            [n for n in range(0, 600, 3) if T0 + n * 290 >= (clock.now - DAY) // 3600 * 3600]
        )
    finally:
        await store.close()


async def test_writes_wait_while_the_database_is_away_then_are_flushed(
    pg: PgCluster, pg_url: str
) -> None:
    """Stopped (pg_ctl stop -m fast) and started again: what was recorded meanwhile is
    kept within the bound, the rest dropped and counted, and all kept is written."""
    clock = Clock(T0)
    store = LatencyStore(pg_url, hub="a", clock=clock, flush_interval=0.05, max_buffered=5)
    await store.start()
    try:
        store.record("alice", "10.0.0.1:5004", 5004, 10.0, T0)
        await wait_for(lambda: store.flushes >= 1, what="the first flush")
        assert [s.count for s in await store.summary()] == [1]  # read: the last answer
        pg.stop()
        for minute in range(1, 9):  # 8 new minutes; 5 fit
            store.record("alice", "10.0.0.1:5004", 5004, 20.0 + minute, T0 + 60 * minute)
        assert store.buffered == 5 and store.dropped == 3
        exported = {m.name: m.samples[0].value for m in HistoryCollector(store).collect()}
        assert exported["midihub_history_samples_dropped"] == 3
        assert exported["midihub_history_buffered"] == 5
        await wait_for(lambda: store.write_failures >= 2, what="failed writes")
        assert store.buffered == 5  # kept for the next try
        summary = await store.summary()  # still answers: the last read plus the memory
        assert [s.count for s in summary] == [6]
        pg.start()
        await wait_for(lambda: store.buffered == 0, what="the buffer flushed")
    finally:
        await store.close()
    with psycopg.connect(pg_url) as connection:
        row = connection.execute("SELECT sum(count), min(min_ms), max(max_ms) FROM latency_minutes")
        assert row.fetchone() == (6, 10.0, 25.0)


async def test_a_database_down_at_start_is_opened_later(pg: PgCluster, pg_url: str) -> None:
    pg.stop()
    try:
        store = LatencyStore(pg_url, hub="a", clock=Clock(T0), flush_interval=0.05)
        await store.start()  # does not raise: one line, retried by the writer
        store.record("bob", "10.0.0.2:5004", 5004, 7.5, T0)
        assert [s.count for s in await store.summary()] == [1]
        assert [r.count for r in await store.history()] == [1]
        assert store.write_failures >= 1
    finally:
        pg.start()
    try:
        await wait_for(lambda: store.flushes >= 1, what="opened and flushed")
        summary = await store.summary()
        assert [(s.name, s.count) for s in summary] == [("bob", 1)]
        assert math.isclose(summary[0].avg_ms, 7.5)
    finally:
        await store.close()


async def test_a_hub_gone_from_the_fleet_leaves_no_history_for_ever(pg_url: str) -> None:
    """Each hub purges its own series, and any hub those of hubs silent past its cutoff."""
    clock = Clock(T0)
    gone = LatencyStore(pg_url, hub="gone", clock=clock, retention=DAY, flush_interval=3600)
    await gone.start()
    gone.record("alice", "10.0.0.1:5004", 5004, 9.0, T0)
    await gone.close()
    clock.now = T0 + 2 * DAY
    live = LatencyStore(pg_url, hub="live", clock=clock, retention=DAY, flush_interval=3600)
    recent = LatencyStore(pg_url, hub="recent", clock=clock, retention=DAY, flush_interval=3600)
    await recent.start()
    recent.record("bob", "10.0.0.2:5004", 5004, 5.0, clock.now - 60)
    await recent.flush()
    await live.start()  # purges at start
    try:
        with psycopg.connect(pg_url) as connection:
            hubs = connection.execute("SELECT hub FROM latency_participants").fetchall()
            minutes = connection.execute("SELECT count(*) FROM latency_minutes").fetchone()
        assert hubs == [("recent",)] and minutes == (1,)
        assert [(s.hub, s.name) for s in await live.fleet_summary()] == [("recent", "bob")]
    finally:
        await live.close()
        await recent.close()
