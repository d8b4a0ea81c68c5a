"""``GET /api/events``: the dashboard's live feed (Server-Sent Events).

Joins, leaves and new latency figures mark what changed; at most every ``interval``
one task builds each changed document once, serialises it once, and hands the same
bytes to every viewer. A viewer that falls behind simply gets the newest version
(there is no queue to grow), so a thousand open dashboards cost one serialisation
per change, and no dashboard polls while nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from midihub.hub import Endpoint, Hub
from midihub.rtp import Event, LatencyMeasured, PacketsLost, PeerJoined, PeerLeft
from midihub.rtp.limits import SourceCounts, source_key
from midihub.web.guard import event_stream
from midihub.web.proxies import client_of

INTERVAL = 0.5
KEEPALIVE = 15.0
MAX_VIEWERS = 256
MAX_PER_SOURCE = 8  # live dashboards from one IPv4 address or IPv6 /64
KINDS = ("participants", "latency")

Builder = Callable[[str], Awaitable[Any]]


def frame(kind: str, version: int, document: Any) -> bytes:
    payload = json.dumps(document, separators=(",", ":"))
    return f"id: {version}\nevent: {kind}\ndata: {payload}\n\n".encode()


class LiveEvents:
    """Coalesces hub changes into shared, pre-serialised SSE frames."""

    def __init__(
        self,
        hub: Hub,
        build: Builder,
        *,
        interval: float = INTERVAL,
        max_viewers: int = MAX_VIEWERS,
        per_source: int = MAX_PER_SOURCE,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self._build = build  # kind -> JSON-ready document
        self.interval = interval
        self.max_viewers = max_viewers
        self.per_source = per_source
        self._sources = SourceCounts()
        self.keepalive = keepalive
        self._viewers: set[asyncio.Event] = set()
        self._latest: dict[str, tuple[int, bytes]] = {}
        self._dirty: set[str] = set()
        self._version = 0
        self._last_publish = -float("inf")
        self._publisher: asyncio.Task[None] | None = None
        self._closed = False
        self.refused = 0  # viewers turned away at the global cap
        self.refused_per_source = 0  # ... at one source's cap
        hub.listeners.append(self.on_event)

    @property
    def viewers(self) -> int:
        """Streams admitted, counted from the check on (before their first await), so
        that streams opened at the same moment cannot pass the caps together."""
        return self._sources.total

    def on_event(self, endpoint: Endpoint, event: Event) -> None:
        if isinstance(event, PeerJoined | PeerLeft):
            self.changed("participants", "latency")
        elif isinstance(event, LatencyMeasured | PacketsLost):
            self.changed("latency")

    def changed(self, *kinds: str) -> None:
        """O(1) on the packet path: remember what changed, publish later."""
        if not self._viewers or self._closed:
            return  # the first viewer gets fresh documents anyway
        self._dirty.update(kinds)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(self._publish())

    async def _publish(self) -> None:
        loop = asyncio.get_running_loop()
        while self._dirty and not self._closed:
            wait = self._last_publish + self.interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            kinds, self._dirty = self._dirty, set()
            self._last_publish = loop.time()
            await self._refresh(sorted(kinds))
            for wake in self._viewers:
                wake.set()

    async def _refresh(self, kinds: list[str]) -> None:
        documents = [await self._build(kind) for kind in kinds]
        self._version += 1
        version = self._version
        frames = await asyncio.to_thread(
            lambda: [frame(k, version, d) for k, d in zip(kinds, documents, strict=True)]
        )
        for kind, data in zip(kinds, frames, strict=True):
            self._latest[kind] = (version, data)

    def close(self) -> None:
        """End every stream (shutdown must not wait for viewers to leave)."""
        self._closed = True
        for wake in self._viewers:
            wake.set()
        if self._publisher is not None:
            self._publisher.cancel()

    async def aclose(self) -> None:
        """``close``, then wait until the publisher it cancelled has ended."""
        publisher = self._publisher
        self.close()
        if publisher is not None:
            await asyncio.gather(publisher, return_exceptions=True)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if self._sources.total >= self.max_viewers:
            self.refused += 1
            return web.json_response(
                {"error": f"too many live viewers (at most {self.max_viewers}); poll instead"},
                status=503,
                headers={"Retry-After": "10"},
            )
        source = source_key(client_of(request)[0])
        if self._sources.of(source) >= self.per_source:
            self.refused_per_source += 1
            return web.json_response(
                {"error": f"at most {self.per_source} live dashboards per address; poll instead"},
                status=429,
                headers={"Retry-After": "10"},
            )
        self._sources.add(source)
        try:
            return await self._serve(request)
        finally:
            self._sources.remove(source)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        response = await event_stream(request)
        wake = asyncio.Event()
        if not self._viewers:  # nothing was tracked while no one watched
            await self._refresh(list(KINDS))
        self._viewers.add(wake)
        seen = dict.fromkeys(KINDS, 0)
        try:
            await response.write(b"retry: 2000\n\n")
            while not self._closed:
                for kind in KINDS:
                    version, data = self._latest.get(kind, (0, b""))
                    if version > seen[kind]:
                        seen[kind] = version
                        await response.write(data)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.keepalive)
                    wake.clear()
                    continue
                await response.write(b": keepalive\n\n")
        except ConnectionResetError:
            pass  # the viewer went away
        finally:
            self._viewers.discard(wake)
        return response


class EventsCollector(Collector):
    """``/metrics`` for the dashboards' live feed: open streams and refusals."""

    def __init__(self, events: LiveEvents) -> None:
        self.events = events

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "midihub_dashboard_streams", "Open /api/events streams.", value=self.events.viewers
        )
        refused = CounterMetricFamily(
            "midihub_dashboard_streams_refused",
            "/api/events streams refused by the caps (all viewers, one source).",
            labels=["reason"],
        )
        refused.add_metric(["total"], self.events.refused)
        refused.add_metric(["per_ip"], self.events.refused_per_source)
        yield refused
