"""/metrics reports event-loop lag from the hub's own probe: a deliberate stall of
the loop shows up in the histogram and the maximum."""

from __future__ import annotations

import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_ports, serving, wait_for


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

        await wait_for(lambda: probed(3), 10, "three probe runs")  # one every 100 ms
        time.sleep(0.3)  # the loop is blocked: the probe's next run comes >= 0.2 s late
        after: dict[str, float] = {}

        def slow() -> float:
            count = after["midihub_loop_lag_seconds_count"]
            return count - after["midihub_loop_lag_seconds_bucket|0.1"]

        async def seen_late() -> bool:  # the probe has run since
            after.update(await scrape(url))
            return slow() >= 1

        await wait_for(seen_late, 10, "the late probe run in /metrics")
        assert after["midihub_loop_lag_max_seconds"] >= 0.19
        assert after["midihub_loop_lag_seconds_count"] > before["midihub_loop_lag_seconds_count"]
