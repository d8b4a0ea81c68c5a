"""Latency history in SQLite: per-minute aggregates, live summaries, restarts,
retention; and the hub process keeping it across a restart."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import sqlite3
from pathlib import Path

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from midihub.app import App
from midihub.history import MAX_KEYS_PER_PORT, OVERFLOW_NAME, Bucket, LatencyStore
from midihub.web.metrics import HistoryCollector
from tests.support import PyPeer, free_ports, make_config, wait_for

T0 = 1_700_000_040.0  # a whole minute
DAY = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@given(st.lists(st.tuples(st.floats(0, 500), st.floats(0, 59.9)), min_size=1, max_size=50))
@settings(max_examples=60, deadline=None)
def test_bucket_matches_a_plain_computation(samples: list[tuple[float, float]]) -> None:
    bucket = Bucket.first(*samples[0])
    for value, at in samples[1:]:
        bucket.add(value, at)
    values = [v for v, _ in samples]
    assert bucket.count == len(samples)
    assert bucket.min_ms == min(values) and bucket.max_ms == max(values)
    assert abs(bucket.sum_ms / bucket.count - sum(values) / len(values)) < 1e-6
    assert bucket.min_at in [at for v, at in samples if v == min(values)]
    assert bucket.last_at == max(at for _, at in samples)


async def test_minutes_summary_and_history(tmp_path: Path) -> None:
    store = LatencyStore(str(tmp_path / "h.db"), clock=Clock(T0 + 300), flush_interval=3600)
    await store.start()
    try:
        assert inspect.isfunction(LatencyStore.record)  # a plain call on the packet path
        samples = [
            (10.04, T0 + 1),
            (30.0, T0 + 20),
            (20.0, T0 + 59),
            (5.0, T0 + 61),
            (50.0, T0 + 90),
        ]
        for value, at in samples:
            store.record("alice", "10.0.0.1:5004", 5040, value, at)
        store.record("bob", "10.0.0.2:5004", 5042, 42.0, T0 + 10)

        (a, b) = await store.summary()  # live: nothing written yet
        assert store.flushes == 0
        assert (a.name, a.hub_port, a.count) == ("alice", 5040, 5)
        assert (a.min_ms, a.min_at) == (5.0, T0 + 61)
        assert (a.max_ms, a.max_at) == (50.0, T0 + 90)
        assert (a.last_ms, a.last_at) == (50.0, T0 + 90)
        assert abs(a.avg_ms - (10.0 + 30 + 20 + 5 + 50) / 5) < 1e-9  # stored at 0.1 ms
        assert (b.name, b.count, b.avg_ms) == ("bob", 1, 42.0)

        await store.flush()
        rows = await store.history("alice")
        assert [(r.minute, r.count, r.min_ms, r.max_ms) for r in rows] == [
            (T0, 3, 10.0, 30.0),
            (T0 + 60, 2, 5.0, 50.0),
        ]
        assert abs(rows[0].avg_ms - 20.0) < 1e-9
        assert [r.name for r in await store.history("10.0.0.2:5004")] == ["bob"]
        assert [r.minute for r in await store.history(since=T0 + 70)] == [T0 + 60]

        # More samples in a minute already written merge with it.
        store.record("alice", "10.0.0.1:5004", 5040, 1.0, T0 + 30)
        store.record("alice", "10.0.0.1:5004", 5040, 99.0, T0 + 45)
        await store.flush()
        first = (await store.history("alice"))[0]
        assert (first.count, first.min_ms, first.max_ms) == (5, 1.0, 99.0)
        (a, _) = await store.summary()
        assert (a.count, a.min_at, a.max_at, a.last_at) == (7, T0 + 30, T0 + 45, T0 + 90)
    finally:
        await store.close()


async def test_survives_a_restart_and_purges_past_retention(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    clock = Clock(T0)
    store = LatencyStore(path, clock=clock, retention=7 * DAY, flush_interval=3600)
    await store.start()
    store.record("old", "h:1", 5040, 12.0, T0 - 8 * DAY)
    store.record("new", "h:2", 5040, 34.0, T0 - DAY)
    store.record("new", "h:2", 5040, 36.0, T0 - 10)
    await store.close()  # flushes

    store = LatencyStore(path, clock=clock, retention=30 * DAY, flush_interval=3600)
    await store.start()
    try:
        assert [(s.name, s.count) for s in await store.summary()] == [("new", 2), ("old", 1)]
    finally:
        await store.close()

    store = LatencyStore(path, clock=clock, retention=7 * DAY, flush_interval=3600)
    await store.start()  # purges on start
    try:
        (only,) = await store.summary()
        assert (only.name, only.count, only.min_ms, only.max_ms) == ("new", 2, 34.0, 36.0)
        assert {r.name for r in await store.history()} == {"new"}
    finally:
        await store.close()


async def test_memory_database_and_records_during_a_flush_are_kept() -> None:
    store = LatencyStore(":memory:", clock=Clock(T0), flush_interval=3600)
    await store.start()
    try:
        for i in range(1000):
            store.record("p", "h:1", 5040, float(i % 100), T0 + i % 60)
        flushing = asyncio.create_task(store.flush())
        await asyncio.sleep(0)
        for _ in range(500):  # while the transaction is in flight
            store.record("p", "h:1", 5040, 200.0, T0 + 120)
        await flushing
        await store.flush()
        rows = await store.history("p")
        assert [(r.minute, r.count) for r in rows] == [(T0, 1000), (T0 + 120, 500)]
        assert store.flushes == 2
    finally:
        await store.close()


async def test_first_seen_is_the_earliest_samples_time(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = LatencyStore(str(path), clock=Clock(T0 + 300), flush_interval=3600)
    await store.start()
    try:
        # Neither the minimum nor the maximum is the first sample.
        for value, at in ((20.0, T0 + 1), (10.0, T0 + 2), (30.0, T0 + 3), (15.0, T0 + 70)):
            store.record("alice", "10.0.0.1:5004", 5040, value, at)
        await store.flush()
        assert first_and_last_seen(path) == [("alice", T0 + 1, T0 + 70)]
        store.record("alice", "10.0.0.1:5004", 5040, 25.0, T0 + 130)
        store.record("alice", "10.0.0.1:5004", 5040, 25.0, T0 + 0.5)  # a late earlier one
        await store.flush()
        assert first_and_last_seen(path) == [("alice", T0 + 0.5, T0 + 130)]
    finally:
        await store.close()


def first_and_last_seen(path: Path) -> list[tuple[str, float, float]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT name, first_seen, last_seen FROM participants ORDER BY name")
        return [(str(name), float(first), float(last)) for name, first, last in rows]


async def test_name_churn_keeps_the_series_of_a_port_bounded(tmp_path: Path) -> None:
    """10,000 participants, each under a name of its own, on one port: the port keeps
    its first MAX_KEYS_PER_PORT series and puts every later sample in its (others)
    series, counted; another port is not affected, a restart keeps the bound, and a
    series purged with its minutes frees its place."""
    path = tmp_path / "h.db"
    clock = Clock(T0 + 3600)
    store = LatencyStore(str(path), clock=clock, retention=DAY, flush_interval=3600)
    await store.start()
    try:
        store.record("steady", "10.0.0.9:5004", 5040, 9.0, T0)
        for i in range(10_000):
            store.record(f"churn-{i}", f"10.0.{i // 250}.{i % 250}:5004", 5040, 5.0, T0 + i / 10)
            if i % 1000 == 999:
                await store.flush()
        store.record("steady", "10.0.0.9:5004", 5040, 11.0, T0 + 1001)  # still its own
        store.record("other-port", "10.0.0.8:5004", 5050, 7.0, T0 + 1001)
        await store.flush()
        keys = {(s.name, s.address, s.hub_port): s.count for s in await store.summary()}
        at_5040 = {key: n for key, n in keys.items() if key[2] == 5040}
        assert len(at_5040) == MAX_KEYS_PER_PORT + 1  # its series and (others)
        assert keys[("steady", "10.0.0.9:5004", 5040)] == 2
        assert keys[(OVERFLOW_NAME, "", 5040)] == 10_000 - (MAX_KEYS_PER_PORT - 1)
        assert store.overflowed == 10_000 - (MAX_KEYS_PER_PORT - 1)
        assert keys[("other-port", "10.0.0.8:5004", 5050)] == 1
        assert len(first_and_last_seen(path)) == MAX_KEYS_PER_PORT + 2
        (exported,) = [
            m for m in HistoryCollector(store).collect() if m.name.endswith("overflowed")
        ]
        assert exported.samples[0].value == store.overflowed

        await store.close()  # a restart keeps the bound: the kept series are read back
        store = LatencyStore(str(path), clock=clock, retention=DAY, flush_interval=3600)
        await store.start()
        store.record("after-restart", "10.0.9.9:5004", 5040, 4.0, T0 + 1002)
        store.record("steady", "10.0.0.9:5004", 5040, 10.0, T0 + 1003)
        await store.flush()
        assert store.overflowed == 1
        keys = {(s.name, s.address, s.hub_port): s.count for s in await store.summary()}
        assert keys[(OVERFLOW_NAME, "", 5040)] == 10_000 - (MAX_KEYS_PER_PORT - 1) + 1
        assert keys[("steady", "10.0.0.9:5004", 5040)] == 3
        assert len(first_and_last_seen(path)) == MAX_KEYS_PER_PORT + 2

        clock.now += 2 * DAY  # past the retention: every series purged, places free
        await store.purge()
        assert first_and_last_seen(path) == []
        store.record("newcomer", "10.0.1.1:5004", 5040, 3.0, clock.now)
        await store.flush()
        assert [(s.name, s.count) for s in await store.summary()] == [("newcomer", 1)]
        assert store.overflowed == 1
    finally:
        await store.close()


async def test_hub_keeps_latency_history_across_a_restart(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        web_port = probe.getsockname()[1]
    db = str(tmp_path / "hub.db")
    config = make_config(f"[rooms]\nJam = {port}")
    url = f"http://127.0.0.1:{web_port}"

    async def latency() -> list[dict[str, object]]:
        async with aiohttp.ClientSession() as client, client.get(url + "/api/latency") as r:
            rows: list[dict[str, object]] = await r.json()
            return rows

    app = App(config, web=f"127.0.0.1:{web_port}", db=db)
    running = asyncio.create_task(app.run())
    peer = PyPeer("pianist")
    try:
        await wait_for(lambda: app.web is not None, 5, "the web port")
        await peer.connect(port)
        endpoints = app.hub.endpoints.values()
        await wait_for(lambda: any(s.samples >= 2 for e in endpoints for s in e.stats.values()), 10)
        (live,) = await latency()
        assert live["connected"] is True and live["name"] == "pianist"
        samples = live["samples"]
    finally:
        peer.close()
        app.stop()
        await asyncio.wait_for(running, 5)

    app = App(config, web=f"127.0.0.1:{web_port}", db=db)
    running = asyncio.create_task(app.run())
    try:
        await wait_for(lambda: app.web is not None, 5, "the web port")
        (stored,) = await latency()
        assert stored["connected"] is False and stored["clientName"] == "pianist"
        assert stored["samples"] == samples and stored["clientPort"] == port
        assert stored["minLatency"] is not None and stored["lastLatencyTime"] is not None
        async with (
            aiohttp.ClientSession() as client,
            client.get(url + "/api/latency/history?participant=pianist&since=1h") as r,
        ):
            history = await r.json()
        assert sum(row["count"] for row in history) == samples
    finally:
        app.stop()
        await asyncio.wait_for(running, 5)
