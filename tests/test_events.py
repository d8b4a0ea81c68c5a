"""GET /api/events: joins and latency pushed to every viewer as the same frames,
coalesced; bounded history parameters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.attacks.web_support import web_hub
from tests.support import PyPeer, free_ports, serving, wait_for


async def next_event(response: aiohttp.ClientResponse) -> tuple[str, str, Any]:
    """(id, event, data) of the next SSE frame."""
    fields: dict[str, str] = {}
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if not line:
            if "event" in fields:
                return fields.get("id", ""), fields["event"], json.loads(fields["data"])
            fields = {}
            continue
        if not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


async def test_three_viewers_get_the_same_join_frame_and_coalesced_latency() -> None:
    (port,) = free_ports(1)
    async with serving(f"[rooms]\nJam = {port}") as (_, url), aiohttp.ClientSession() as client:
        streams = [await client.get(url + "/api/events") for _ in range(3)]
        try:
            for stream in streams:
                assert stream.headers["Content-Type"] == "text/event-stream"
                kinds = {(await next_event(stream))[1] for _ in range(2)}
                assert kinds == {"participants", "latency"}
            dana = PyPeer("dana")
            try:
                await dana.connect(port)
                seen = []
                for stream in streams:
                    while True:
                        ident, kind, data = await asyncio.wait_for(next_event(stream), 5)
                        names = [
                            p["name"] for d in data.get("ports", []) for p in d["participants"]
                        ]
                        if kind == "participants" and names == ["dana"]:
                            seen.append(ident)
                            break
                assert len(set(seen)) == 1  # one frame, shared by every viewer
                loop = asyncio.get_running_loop()
                started, frames = loop.time(), 0
                while loop.time() - started < 2.0:  # clock syncs keep changing latency
                    try:
                        await asyncio.wait_for(next_event(streams[0]), 2.1)
                    except TimeoutError:
                        break
                    frames += 1
                assert frames <= 2 * (2.0 / 0.5 + 1)  # at most 2 kinds per 0.5 s
            finally:
                dana.close()
        finally:
            for stream in streams:
                stream.close()


async def test_history_points_are_bounded() -> None:
    (port,) = free_ports(1)
    async with serving(f"[rooms]\nJam = {port}") as (_, url), aiohttp.ClientSession() as client:
        for bad in ("0", "501", "abc", "-3"):
            async with client.get(url + f"/api/latency/history?points={bad}") as response:
                assert response.status == 400
                assert "points" in (await response.json())["error"]
        async with client.get(url + "/api/latency/history?points=20") as response:
            assert response.status == 200 and await response.json() == []


async def test_live_dashboards_are_capped_per_source_and_counted() -> None:
    """One address (or IPv6 /64) cannot take every live slot: the ninth stream from it
    is refused with 429, counted in /metrics, and a slot frees when a stream ends."""
    (port,) = free_ports(1)
    async with serving(f"[rooms]\nR = {port}") as (_, url), aiohttp.ClientSession() as client:
        streams = []
        try:
            for _ in range(8):
                response = await client.get(url + "/api/events")
                assert response.status == 200
                await response.content.readuntil(b"\n\n")  # the stream is live
                streams.append(response)
            async with client.get(url + "/api/events") as refused:
                assert refused.status == 429
                assert "per address" in (await refused.json())["error"]
            async with client.get(url + "/metrics") as metrics:
                text = await metrics.text()
            assert 'midihub_dashboard_streams_refused_total{reason="per_ip"} 1.0' in text
            assert "midihub_dashboard_streams 8.0" in text
            streams.pop().close()

            async def admitted() -> bool:  # the hub notices the closed stream on a write
                async with client.get(url + "/api/events") as again:
                    return again.status == 200

            await wait_for(admitted, 10, "a ninth stream once one closed")
        finally:
            for response in streams:
                response.close()


async def test_streams_opened_together_cannot_pass_the_viewer_cap_together() -> None:
    """The cap is taken before the first await: of eight streams opened at once with
    room for three, exactly three are admitted and five refused with 503."""
    (port,) = free_ports(1)
    async with (
        web_hub(f"[rooms]\nR = {port}") as (_, api, server),
        aiohttp.ClientSession() as client,
    ):
        api.events.max_viewers = 3
        url = server.url.rstrip("/")
        responses = await asyncio.gather(*(client.get(url + "/api/events") for _ in range(8)))
        try:
            statuses = sorted(response.status for response in responses)
            assert statuses == [200] * 3 + [503] * 5
            assert api.events.viewers == 3
            async with client.get(url + "/metrics") as metrics:
                text = await metrics.text()
            assert 'midihub_dashboard_streams_refused_total{reason="total"} 5.0' in text
        finally:
            for response in responses:
                response.close()
        await wait_for(lambda: api.events.viewers == 0, 10, "the closed streams to be let go")
