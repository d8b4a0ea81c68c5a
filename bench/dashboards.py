"""Dashboard and monitor viewers for the "dashboards open" scenario.

``python bench/dashboards.py SPEC_JSON`` opens, against the hub's web port:

- ``dashboards`` latency pages, each doing what the page's script does: every
  ``interval`` (1 s, a timer that does not wait for the previous refresh) GET
  ``/api/latency`` then ``/api/latency/history?participant=NAME&since=SPAN``, at most
  ``IN_FLIGHT`` refreshes at a time (a browser would send up to 6 per host; fewer bound
  the work a slow hub keeps doing after the viewers leave, as aiohttp does not cancel the
  handler of a request whose client went away). Spans differ per dashboard (1h, 1d, 7d)
  and so do the participants charted (seeded ones, whose history is long). When the
  hub's OpenAPI document lists a Server-Sent Events stream other than the monitor (the
  dashboard's live updates), each dashboard also keeps it open, as the page would.
- ``monitors`` viewers of ``/api/monitor?port=PORT`` (SSE), reading every event.

It prints one JSON line ``{"ready": ...}`` once every stream has answered, then runs until
SIGTERM or SIGINT and prints its figures as a last JSON line: requests per path with
their latency (p50, max), failures, and events and bytes per stream kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from common import percentile

BROWSER_CONNECTIONS = 6
IN_FLIGHT = 2
SPANS = ("1h", "1d", "7d")


@dataclass
class Figures:
    """What one kind of request or stream saw."""

    seconds: list[float] = field(default_factory=list)
    asked: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    events: int = 0
    bytes: int = 0
    streams: int = 0
    skipped: int = 0  # refresh ticks dropped because IN_FLIGHT were already under way

    def fail(self, text: str) -> None:
        self.failures += 1
        if len(self.errors) < 3:
            self.errors.append(text[:200])

    def summary(self) -> dict[str, Any]:
        ms = sorted(1000 * s for s in self.seconds)
        out: dict[str, Any] = {"failures": self.failures}
        if self.asked:
            out |= {"asked": self.asked, "requests": len(ms)}
        if ms:
            out |= {"p50_ms": percentile(ms, 0.5), "max_ms": ms[-1]}
        if self.streams:
            out |= {"streams": self.streams, "events": self.events, "bytes": self.bytes}
        if self.skipped:
            out["skipped_refreshes"] = self.skipped
        if self.errors:
            out["errors"] = self.errors
        return out


class Viewers:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.base = spec["web"].rstrip("/")
        self.spec = spec
        self.figures: dict[str, Figures] = {}
        self.stop = asyncio.Event()
        self.connected = 0
        self.all_connected = asyncio.Event()
        self.expected_streams = 0

    def fig(self, name: str) -> Figures:
        return self.figures.setdefault(name, Figures())

    async def get(self, session: aiohttp.ClientSession, path: str, name: str) -> Any:
        self.fig(name).asked += 1
        started = time.perf_counter()
        try:
            async with session.get(self.base + path) as response:
                body = await response.read()
                if response.status != 200:
                    self.fig(name).fail(f"HTTP {response.status}: {body[:100]!r}")
                    return None
        except (aiohttp.ClientError, OSError) as error:
            self.fig(name).fail(repr(error))
            return None
        self.fig(name).seconds.append(time.perf_counter() - started)
        return json.loads(body)

    async def stream(self, session: aiohttp.ClientSession, path: str, name: str) -> None:
        figures = self.fig(name)
        try:
            async with session.get(
                self.base + path, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)
            ) as response:
                if response.status != 200:
                    figures.fail(f"HTTP {response.status}")
                    self._connected()
                    return
                figures.streams += 1
                first = True
                async for line in response.content:
                    figures.bytes += len(line)
                    if line.startswith(b"event:"):
                        figures.events += 1
                        if first:
                            first = False
                            self._connected()
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError) as error:
            figures.fail(repr(error))
            self._connected()

    def _connected(self) -> None:
        self.connected += 1
        if self.connected >= self.expected_streams:
            self.all_connected.set()

    async def refresh(self, session: aiohttp.ClientSession, participant: str, span: str) -> None:
        """The latency page's refresh: the table, then the chart of one participant."""
        await self.get(session, "/api/latency", "/api/latency")
        query = f"participant={participant}&since={span}"
        await self.get(session, f"/api/latency/history?{query}", f"/api/latency/history {span}")

    async def dashboard(self, index: int, live_stream: str | None) -> None:
        connector = aiohttp.TCPConnector(limit_per_host=BROWSER_CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks: set[asyncio.Task[None]] = set()
            if live_stream is not None:
                tasks.add(asyncio.create_task(self.stream(session, live_stream, live_stream)))
            participants = self.spec["participants"]
            participant = participants[index % len(participants)]
            span = SPANS[index % len(SPANS)]
            interval = float(self.spec.get("interval", 1.0))
            next_at = time.monotonic() + index * interval / max(1, self.spec["dashboards"])
            while not self.stop.is_set():
                refreshing = [t for t in tasks if t.get_name() == "refresh" and not t.done()]
                if len(refreshing) >= IN_FLIGHT:
                    self.fig("/api/latency").skipped += 1  # the refresh's first request
                else:
                    task = asyncio.create_task(self.refresh(session, participant, span))
                    task.set_name("refresh")
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                next_at += interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), max(0.0, next_at - time.monotonic()))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def monitors(self, count: int, port: int) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            path = f"/api/monitor?port={port}"
            tasks = [
                asyncio.create_task(self.stream(session, path, "/api/monitor"))
                for _ in range(count)
            ]
            await self.stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def live_stream_path(self) -> str | None:
        """A dashboard event stream, if the hub's OpenAPI document lists one (any GET
        path answering ``text/event-stream`` other than the monitor's)."""
        async with aiohttp.ClientSession() as session:
            document = await self.get(session, "/api/openapi.json", "/api/openapi.json")
        if not isinstance(document, dict):
            return None
        for path, operations in sorted(document.get("paths", {}).items()):
            if path == "/api/monitor" or "{" in path:
                continue
            get = operations.get("get", {}) if isinstance(operations, dict) else {}
            for response in get.get("responses", {}).values():
                if "text/event-stream" in response.get("content", {}):
                    return str(path)
        return None

    async def run(self) -> dict[str, Any]:
        live = await self.live_stream_path() if self.spec.get("live_stream", True) else None
        dashboards, monitors = int(self.spec["dashboards"]), int(self.spec["monitors"])
        self.expected_streams = monitors + (dashboards if live else 0)
        if self.expected_streams == 0:
            self.all_connected.set()
        started = time.monotonic()
        tasks = [asyncio.create_task(self.dashboard(i, live)) for i in range(dashboards)]
        tasks.append(asyncio.create_task(self.monitors(monitors, self.spec["monitor_port"])))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_connected.wait(), 30)
        print(
            json.dumps(
                {
                    "ready": self.all_connected.is_set(),
                    "live_stream": live,
                    "connect_s": round(time.monotonic() - started, 2),
                }
            ),
            flush=True,
        )
        await self.stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        return {
            "dashboards": dashboards,
            "monitors": monitors,
            "live_stream": live,
            "seconds": round(time.monotonic() - started, 2),
            "figures": {name: f.summary() for name, f in sorted(self.figures.items())},
        }


async def main_async(spec: dict[str, Any]) -> dict[str, Any]:
    viewers = Viewers(spec)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, viewers.stop.set)
    return await viewers.run()


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    cpu = spec.get("cpu")
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {int(cpu)})
    print(json.dumps(asyncio.run(main_async(spec))), flush=True)


if __name__ == "__main__":
    main()
