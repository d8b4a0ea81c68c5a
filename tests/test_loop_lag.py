"""/metrics reports event-loop lag from the hub's own probe: a deliberate stall of
the loop shows up in the histogram and the maximum."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_ports, serving


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

        deadline = asyncio.get_running_loop().time() + 10
        while not await probed(3):  # the probe runs every 100 ms
            assert asyncio.get_running_loop().time() < deadline, before
            await asyncio.sleep(0.05)
        time.sleep(0.3)  # the loop is blocked: the probe's next run comes >= 0.2 s late
        after: dict[str, float] = {}

        def slow() -> float:
            count = after["midihub_loop_lag_seconds_count"]
            return count - after["midihub_loop_lag_seconds_bucket|0.1"]

        while not slow() if after else True:  # until the probe has run since
            assert asyncio.get_running_loop().time() < deadline + 10, after
            await asyncio.sleep(0.05)
            after = await scrape(url)
        assert slow() >= 1, after
        assert after["midihub_loop_lag_max_seconds"] >= 0.19
        assert after["midihub_loop_lag_seconds_count"] > before["midihub_loop_lag_seconds_count"]
