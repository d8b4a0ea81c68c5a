"""The store's SQL aggregates (hourly roll-up, cached summary, downsampled series,
retention purge) against a plain Python computation over the same samples, with
part of them written and part still in memory."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections import defaultdict
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from midihub.history import MAX_POINTS, LatencyStore, choose_step
from tests.history_seed import seed

T0 = 1_700_002_800.0  # a whole hour
DAY = 86400.0
KEYS = [("alice", "10.0.0.1:5004", 5004), ("bob", "10.0.0.2:5004", 5004), ("bob", "h:9", 5006)]

Sample = tuple[int, float, float]  # key index, seconds after T0, rtt ms

samples_strategy = st.lists(
    st.tuples(
        st.integers(0, len(KEYS) - 1),
        st.one_of(st.floats(0, 3 * 3600), st.floats(0, 3 * DAY)),
        st.floats(0, 400).map(lambda v: round(v, 1)),
    ),
    min_size=1,
    max_size=80,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def expected_summary(samples: list[Sample]) -> dict[int, list[tuple[float, float]]]:
    by_key: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for key, offset, value in samples:
        by_key[key].append((value, T0 + offset))
    return by_key


async def check(store: LatencyStore, samples: list[Sample], now: float) -> None:
    live = [s for s in samples if T0 + s[1] >= (now - store.retention) // 60 * 60]
    by_key = expected_summary(live)
    summary = {(s.name, s.address, s.hub_port): s for s in await store.summary()}
    assert set(summary) == {KEYS[k] for k in by_key}
    for k, values in by_key.items():
        got = summary[KEYS[k]]
        numbers = [v for v, _ in values]
        assert got.count == len(values)
        assert math.isclose(got.avg_ms, sum(numbers) / len(numbers), abs_tol=1e-6)
        assert (got.min_ms, got.max_ms) == (min(numbers), max(numbers))
        assert got.min_at in {at for v, at in values if v == got.min_ms}
        assert got.max_at in {at for v, at in values if v == got.max_ms}
        assert got.last_at == max(at for _, at in values)
        assert got.last_ms in {v for v, at in values if at == got.last_at}

    for participant, since in (("bob", None), (None, now - DAY), ("10.0.0.1:5004", None)):
        rows = await store.history(participant, since)
        chosen = [
            i
            for i, key in enumerate(KEYS)
            if participant is None or participant in (key[0], key[1])
        ]
        mine = [s for s in live if s[0] in chosen]
        low = max(now - store.retention, since if since is not None else -math.inf)
        mine = [s for s in mine if T0 + s[1] >= low // 60 * 60]
        if not mine:
            assert rows == []
            continue
        first = min(int((T0 + s[1]) // 60 * 60) for s in mine)
        start = first if since is None else int(low // 60 * 60)
        step = choose_step(max(60.0, now - start))
        assert {r.step for r in rows} == {step}
        floor = start // 3600 * 3600 if step % 3600 == 0 else start
        buckets: dict[tuple[tuple[str, str, int], int], list[float]] = defaultdict(list)
        for key, offset, value in mine:
            minute = int((T0 + offset) // 60 * 60)
            if minute >= floor:
                buckets[(KEYS[key], minute // step * step)].append(value)
        got = {((r.name, r.address, r.hub_port), int(r.minute)): r for r in rows}
        assert set(got) == set(buckets)
        for where, values in buckets.items():
            row = got[where]
            assert row.count == len(values)
            assert (row.min_ms, row.max_ms) == (min(values), max(values))
            assert math.isclose(row.avg_ms, sum(values) / len(values), abs_tol=1e-6)
        assert [(r.minute, r.name, r.hub_port) for r in rows] == sorted(
            (r.minute, r.name, r.hub_port) for r in rows
        )
        per_series: dict[tuple[str, str, int], int] = defaultdict(int)
        for r in rows:
            per_series[(r.name, r.address, r.hub_port)] += 1
        assert max(per_series.values()) <= MAX_POINTS


@given(
    samples=samples_strategy,
    cuts=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    forget=st.tuples(st.integers(0, 1000), st.floats(0, 1800)),
)
@settings(max_examples=40, deadline=None)
def test_sql_aggregates_match_python_with_unflushed_minutes(
    samples: list[Sample], cuts: tuple[float, float], forget: tuple[int, float]
) -> None:
    """Two flushed parts, one still in memory; then the retention drops what came
    before a moment just after one of the samples (cutting an hour of the roll-up in
    two) and all is checked again."""
    first, second = sorted(int(c * len(samples)) for c in cuts)
    which, after = forget
    cutoff = T0 + samples[which % len(samples)][1] + after

    async def run() -> None:
        clock = Clock(T0 + 3 * DAY + 60)
        store = LatencyStore(":memory:", clock=clock, retention=30 * DAY, flush_interval=3600)
        await store.start()
        try:
            for part in (samples[:first], samples[first:second]):
                for key, offset, value in part:
                    store.record(*KEYS[key], value, T0 + offset)
                await store.flush()
            for key, offset, value in samples[second:]:
                store.record(*KEYS[key], value, T0 + offset)
            await check(store, samples, clock.now)

            store.retention = clock.now - cutoff
            await store.purge()
            await check(store, samples, clock.now)
            await store.flush()  # the rest written: the same answers from SQL alone
            await check(store, samples, clock.now)
        finally:
            await store.close()

    asyncio.run(run())


async def test_an_old_database_gets_its_roll_up_and_the_same_answers(tmp_path: Path) -> None:
    """A first-release database (minutes only) opens, gets the hourly roll-up built
    once, and answers exactly as a plain aggregate over its minutes says."""
    db = tmp_path / "old.db"
    now = T0 + 2 * DAY
    rows = seed(db, days=2, participants=4, now=now)
    with sqlite3.connect(db) as connection:
        plain = {
            name: (count, total, low, high)
            for name, count, total, low, high in connection.execute(
                "SELECT p.name, sum(m.count), sum(m.sum_ms), min(m.min_ms), max(m.max_ms)"
                " FROM latency_minutes m JOIN participants p ON p.id = m.participant_id"
                " GROUP BY p.name"
            )
        }
    for opening in (1, 2):
        store = LatencyStore(str(db), clock=Clock(now), flush_interval=3600)
        await store.start()
        try:
            assert store.rollup_rebuilds == (1 if opening == 1 else 0)
            summary = {s.name: s for s in await store.summary()}
            assert sum(s.count for s in summary.values()) == rows * 6
            for name, (count, total, low, high) in plain.items():
                got = summary[name]
                assert (got.count, got.min_ms, got.max_ms) == (count, low, high)
                assert math.isclose(got.avg_ms, total / count)
            week = await store.history("p01", now - 2 * DAY, points=100)
            assert {r.step for r in week} == {3600} and 48 <= len(week) <= 49
            assert sum(r.count for r in week) == plain["p01"][0]
        finally:
            await store.close()
    with sqlite3.connect(db) as connection:  # rows another program adds are noticed
        connection.execute("DELETE FROM latency_hours WHERE hour % 7200 = 0")
    store = LatencyStore(str(db), clock=Clock(now), flush_interval=3600)
    await store.start()
    try:
        assert store.rollup_rebuilds == 1
        assert sum(s.count for s in await store.summary()) == rows * 6
    finally:
        await store.close()
