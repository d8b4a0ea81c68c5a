"""/metrics reports event-loop lag from the hub's own probe: the probe's arithmetic on
a clock the test drives, and a real stall of the loop showing up in the histogram and
the maximum, bounded by the stall the test measured (not by a fixed duration)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from midihub.web.metrics import LAG_PERIOD, LoopLagProbe
from tests.support import free_ports, serving, wait_for


class DrivenLoop:
    """The two calls the probe makes of its loop, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 50.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> DrivenLoop:
        self.timers.append((when, callback))
        return self  # the handle: the probe only ever cancels it

    def cancel(self) -> None:
        self.timers.clear()

    def run_next(self, late: float) -> None:
        """The next timer runs ``late`` seconds after it was due."""
        when, callback = self.timers.pop(0)
        self.now = when + late
        callback()


def test_the_probe_reports_how_late_each_run_came() -> None:
    loop = DrivenLoop()
    seen: list[float] = []
    probe = LoopLagProbe(seen.append, loop)  # type: ignore[arg-type]
    assert [when for when, _ in loop.timers] == [50.0 + LAG_PERIOD]
    for late in (0.0, 0.25, 0.003, 0.0):
        loop.run_next(late)
    assert seen == pytest.approx([0.0, 0.25, 0.003, 0.0])
    assert probe.max == pytest.approx(0.25)
    # Each run schedules the next a period after it ran, not after it was due.
    assert [when for when, _ in loop.timers] == [loop.now + LAG_PERIOD]
    probe.close()
    assert loop.timers == []


async def scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as client, client.get(url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("midihub_loop_lag"):
            for sample in family.samples:
                key = sample.name + "".join(f"|{v}" for v in sample.labels.values())
                values[key] = sample.value
    return values


async def test_a_stalled_loop_shows_in_the_loop_lag_metrics() -> None:
    (port,) = free_ports(1)
    async with serving(f"[rooms]\nR = {port}") as (_, url):
        before: dict[str, float] = {}

        async def probed(n: float) -> bool:
            before.update(await scrape(url))
            return before.get("midihub_loop_lag_seconds_count", 0) >= n

        await wait_for(lambda: probed(3), 10, "three probe runs")
        loop = asyncio.get_running_loop()
        stalled_at = loop.time()
        time.sleep(3 * LAG_PERIOD)  # the stimulus: the loop is blocked, as by a slow callback
        stalled = loop.time() - stalled_at
        # The probe's next run was due at most a period into the stall, and runs after it.
        at_least = stalled - LAG_PERIOD
        after: dict[str, Any] = {}

        def slow() -> float:
            count = after["midihub_loop_lag_seconds_count"]
            return float(count - after[f"midihub_loop_lag_seconds_bucket|{LAG_PERIOD}"])

        async def seen_late() -> bool:  # the probe has run since
            after.update(await scrape(url))
            return slow() >= 1

        await wait_for(seen_late, 10, "the late probe run in /metrics")
        assert after["midihub_loop_lag_max_seconds"] >= at_least
        assert after["midihub_loop_lag_seconds_count"] > before["midihub_loop_lag_seconds_count"]
