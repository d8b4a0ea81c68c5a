"""Play from a browser: the ``/play`` page and its WebSocket, a participant like any other.

A ``Browser`` is a hub ``Guest``: the hub routes MIDI to it through ``deliver_from``
(queued, never awaited: a browser that stops reading is dropped, its notes released)
and it plays into the hub with ``Hub.play`` followed by a flush, so what it plays
leaves on the RTP sockets at once, not at the next timer. The host opens a room or
group to browsers in the config (``browser = true``, optional ``key``); every cap
(connections per IP, browsers per port, message rate, frame size, queued frames) is
a ``[web]`` option, and every refusal a counter under a fixed reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from midihub.config import WebConfig
from midihub.hub import Endpoint, Guest, Hub, participant_id
from midihub.hub.spec import EndpointSpec
from midihub.rtp import Command, LatencyMeasured, LeaveReason, Peer, PeerJoined, PeerLeft
from midihub.rtp.events import Event
from midihub.rtp.limits import SourceCounts, TokenBucket
from midihub.rtp.limits import source_key as client_key
from midihub.rtp.packets import clean_name
from midihub.web.guard import error
from midihub.web.playwire import (
    GOODBYES,
    HUB_SENDER,
    MAX_SENDER,
    Dropped,
    PlayCounters,
    Refusal,
    encode_frame,
    parse_frame,
)
from midihub.web.proxies import Address, client_of

log = logging.getLogger("midihub.web")

STATIC: Final = Path(__file__).parent / "static"

PING_INTERVAL: Final = 2.0  # seconds between the hub's pings to each browser
MISSED_PINGS: Final = 3  # unanswered pings before a browser counts as gone
HELLO_TIMEOUT: Final = 10.0  # seconds a new connection has to say hello
GOODBYE_TIMEOUT: Final = 1.0  # seconds to tell a browser why and close (shutdown waits)
STRIKE_LIMIT: Final = 20.0  # refused messages (decaying one per second) before a close
MAX_NAME_BYTES: Final = 64
PALETTE: Final = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#0f9fa8",
    "#f032e6",
    "#9a6324",
    "#808000",
    "#000075",
    "#e6a800",
    "#800000",
)


def origin_allowed(origin: str | None, scheme: str, host: str | None) -> bool:
    """A browser names the page that opens a WebSocket in ``Origin``; only our own
    pages may (cross-site WebSocket hijacking). The host must match exactly; an
    ``https`` page reaching us over ``http`` is a TLS proxy in front of the hub."""
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    if parts.netloc.lower() != host.lower() or parts.path not in ("", "/"):
        return False
    return parts.scheme == scheme or (parts.scheme, scheme) == ("https", "http")


def listens(spec: EndpointSpec) -> bool:
    return spec.role in ("room", "out")


def plays(spec: EndpointSpec) -> bool:
    return spec.role in ("room", "in")


class Browser(Guest):
    """One WebSocket connection, once its hello was accepted."""

    transport = "browser"

    def __init__(
        self,
        play: PlayApi,
        ws: web.WebSocketResponse,
        endpoint: Endpoint,
        name: str,
        address: tuple[Any, ...],
        now: float,
    ) -> None:
        super().__init__(name, address, now)
        self.play = play
        self.ws = ws
        self.port = endpoint.port
        self.spec = endpoint.spec
        settings = play.settings
        self.bucket = TokenBucket(settings.browser_rate, settings.browser_burst, now)
        self.limit = settings.browser_queue
        self.outbox: deque[bytes | str] = deque()
        self.wake = asyncio.Event()
        self.index: dict[str, int] = {}  # participant id -> its number in our frames
        self._indexes: set[int] = set()  # the numbers in use (the values of ``index``)
        self._next_index = 1
        self.pings: dict[int, float] = {}  # unanswered: ping number -> hub time sent
        self._ping_number = 0
        self.strikes = 0.0
        self._struck_at = now
        self.ended: Dropped | None = None
        self.dirty = False  # the participant list changed since it was last sent
        self.stale = False  # someone played who is not in the list: resend at the next ping
        self.rtts_sent: dict[Peer, int | None] = {}

    # -- from the hub (must never block) ----------------------------------------

    def deliver(self, commands: Sequence[Command], now: float) -> None:
        self._queue_midi(HUB_SENDER, commands)

    def deliver_from(self, sender: str, commands: Sequence[Command], now: float) -> None:
        index = self.index.get(sender)
        if index is None:
            if self.dirty:  # played before its join reached this page: introduce it first
                self.send_participants()
                index = self.index.get(sender)
            else:  # the list is as new as the joins: refresh it at the next ping, not now
                self.stale = True
        self._queue_midi(HUB_SENDER if index is None else index, commands)

    def close(self, reason: LeaveReason) -> None:
        """The hub has let us go (port removed, shutdown): say so and hang up."""
        stopping = reason is LeaveReason.SHUTDOWN
        self.end(Dropped.STOPPING if stopping else Dropped.GONE, departed=True)

    def _queue_midi(self, sender: int, commands: Sequence[Command]) -> None:
        if self.ended is None:
            self.queue(encode_frame(sender, commands))

    def queue(self, item: bytes | str) -> None:
        if self.ended is not None:
            return
        if len(self.outbox) >= self.limit:
            self.outbox.clear()
            self.end(Dropped.OVERFLOW)
            return
        self.outbox.append(item)
        self.wake.set()

    def end(self, reason: Dropped, *, departed: bool = False) -> None:
        """Disconnect for ``reason`` (``PlayApi.end``: in a task, outside whatever hub
        call we are in, which may be iterating its participants)."""
        if self.ended is not None:
            return
        self.ended = reason
        self.outbox.clear()
        if reason not in GOODBYES:
            self.play.counters.drop(reason)
        self.play.end(self, reason, departed)

    # -- the participant list ------------------------------------------------------

    def _index_for(self, peer: str) -> int:
        """``peer``'s number in our frames. Numbers go round (a departed player's is
        given again only after all the others), so a frame in flight never lands on
        a newcomer; a view holds far fewer participants than numbers, so the search
        for a free one is short."""
        index = self.index.get(peer)
        if index is not None:
            return index
        if len(self._indexes) >= MAX_SENDER:
            return HUB_SENDER  # cannot happen below 65535 participants in view
        index = self._next_index
        while index in self._indexes:
            index = index % MAX_SENDER + 1
        self._next_index = index % MAX_SENDER + 1
        self.index[peer] = index
        self._indexes.add(index)
        return index

    def participants(self) -> list[dict[str, Any]]:
        """Everyone this browser plays with or hears, itself included, in port order."""
        hub = self.play.hub
        seen: list[tuple[Endpoint, Peer]] = []
        for port in self.play.view(self.port):
            endpoint = hub.endpoints.get(port)
            if endpoint is not None:
                seen += [(endpoint, peer) for peer in endpoint.participants]
        present = {participant_id(endpoint, peer) for endpoint, peer in seen}
        for gone in [peer for peer in self.index if peer not in present]:
            self._indexes.discard(self.index.pop(gone))
        rows = []
        self.rtts_sent = {}
        for endpoint, peer in seen:
            rtt = None if peer.rtt is None else round(peer.rtt * 1000, 1)
            self.rtts_sent[peer] = None if rtt is None else round(rtt)
            key = participant_id(endpoint, peer)
            rows.append(
                {
                    "id": key,
                    "index": self._index_for(key),
                    "name": peer.name,
                    "color": self.play.color(key),
                    "rtt": rtt,
                    "transport": peer.transport,
                    "port": endpoint.port,
                    "you": peer is self,
                }
            )
        return rows

    def send_participants(self) -> None:
        self.dirty = self.stale = False
        self.queue(json.dumps({"type": "participants", "participants": self.participants()}))

    def rtts_changed(self) -> bool:
        """Any latency moved by a millisecond or more since the list was sent."""
        for peer, sent in self.rtts_sent.items():
            now = None if peer.rtt is None else round(peer.rtt * 1000)
            if now != sent:
                return True
        return False

    # -- from the browser ----------------------------------------------------------

    def strike(self, now: float) -> None:
        """A refused message; many in a short time end the connection."""
        self.strikes = max(0.0, self.strikes - (now - self._struck_at)) + 1
        self._struck_at = now
        if self.strikes > STRIKE_LIMIT:
            self.end(Dropped.FLOOD)


class PlayApi:
    """Routes for ``/play``, the ports list, the WebSocket; the browsers' counters."""

    def __init__(
        self,
        hub: Hub,
        *,
        flush: Callable[[], None] | None = None,
        settings: WebConfig | None = None,
    ) -> None:
        self.hub = hub
        self.flush = flush or (lambda: None)
        self.settings = settings or WebConfig()
        self.counters = PlayCounters()
        self.browsers: set[Browser] = set()
        self._open = SourceCounts()  # WebSocket connections, joined or not, per source
        self._colors: dict[str, int] = {}  # by participant id, while it is here
        self._update_scheduled = False
        self.ping_interval = PING_INTERVAL
        self._closing: set[asyncio.Task[None]] = set()
        hub.listeners.append(self._on_event)

    def configure(self, settings: WebConfig, now: float) -> None:
        """A reload: the browser limits of connections made from now on, and for the
        browsers already here their rate (each keeping what it spent) and queue.
        Lowered caps on browsers turn newcomers away and drop no one; an open
        WebSocket keeps the frame size it was opened with."""
        self.settings = settings
        for browser in self.browsers:
            browser.bucket.configure(settings.browser_rate, settings.browser_burst, now)
            browser.limit = settings.browser_queue

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/play", self.page),
            web.get("/favicon.ico", self.favicon),
            web.get("/api/play/ports", self.ports),
            web.get("/api/play/ws", self.websocket),
        ]

    def collector(self) -> Collector:
        return PlayCollector(self.counters, self._open)

    # -- pages ---------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "play.html")

    async def favicon(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "favicon.svg", headers={"Content-Type": "image/svg+xml"})

    async def ports(self, request: web.Request) -> web.Response:
        """Ports open to browsers: what to show in the picker (never a key)."""
        rows = [
            {
                "port": port,
                "label": endpoint.spec.label,
                "role": endpoint.spec.role,
                "plays": plays(endpoint.spec),
                "listens": listens(endpoint.spec),
                "keyed": endpoint.spec.key is not None,
                "browsers": sum(1 for g in endpoint.guests if isinstance(g, Browser)),
                "participants": len(endpoint.participants),
            }
            for port, endpoint in sorted(self.hub.endpoints.items())
            if endpoint.spec.browser
        ]
        return web.json_response({"ports": rows})

    # -- who sees whom -------------------------------------------------------------

    def view(self, port: int) -> list[int]:
        """The ports whose participants a browser on ``port`` plays with or hears: its
        own and those routed to it (a group's in port, for its out port)."""
        return [port, *(source for source in self.hub.sources_of(port) if source != port)]

    def color(self, peer: str) -> str:
        """The colour participant ``peer`` (its id) plays in, on every page alike."""
        index = self._colors.get(peer)
        if index is None:
            used = [0] * len(PALETTE)
            for taken in self._colors.values():
                used[taken] += 1
            index = self._colors[peer] = used.index(min(used))
        return PALETTE[index]

    def _on_event(self, endpoint: Endpoint, event: Event) -> None:
        if isinstance(event, PeerLeft):  # even with no browser left to tell
            self._colors.pop(participant_id(endpoint, event.who), None)
        if isinstance(event, LatencyMeasured) or not self.browsers:
            return
        if isinstance(event, PeerJoined | PeerLeft):
            for browser in self.browsers:
                if endpoint.port in self.view(browser.port):
                    browser.dirty = True
            if not self._update_scheduled:
                self._update_scheduled = True
                asyncio.get_running_loop().call_soon(self._send_updates)

    def _send_updates(self) -> None:
        self._update_scheduled = False
        for browser in list(self.browsers):
            if browser.dirty and browser.ended is None:
                browser.send_participants()

    # -- the WebSocket -------------------------------------------------------------

    def refuse(self, reason: Refusal, status: int) -> web.Response:
        self.counters.refuse(reason)
        return error(status, reason.message)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if not origin_allowed(request.headers.get("Origin"), request.scheme, request.host):
            return self.refuse(Refusal.ORIGIN, 403)
        client = client_of(request)
        key = client_key(client[0])
        if self._open.of(key) >= self.settings.browser_per_ip:
            return self.refuse(Refusal.PER_IP, 429)
        ws = web.WebSocketResponse(
            heartbeat=None, autoping=True, max_msg_size=self.settings.browser_max_frame
        )
        await ws.prepare(request)
        self._open.add(key)
        try:
            browser = await self._hello(ws, client)
            if browser is not None:
                await self._serve(browser)
        finally:
            self._open.remove(key)
        return ws

    async def _refuse_joining(self, ws: web.WebSocketResponse, reason: Refusal) -> None:
        self.counters.refuse(reason)
        text = {"type": "error", "reason": reason.label, "message": reason.message}
        with contextlib.suppress(Exception):
            await ws.send_str(json.dumps(text))
        await ws.close(code=reason.code, message=reason.message.encode()[:120])

    async def _hello(self, ws: web.WebSocketResponse, address: Address) -> Browser | None:
        """The first message names the player and the port; anything else is refused."""
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                message = await ws.receive()
        except TimeoutError:
            await self._refuse_joining(ws, Refusal.HELLO)
            return None
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None
        if message.type == WSMsgType.ERROR:
            self._frame_error(message.data)
            return None
        hello = _json(message.data) if message.type == WSMsgType.TEXT else None
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            await self._refuse_joining(ws, Refusal.HELLO)
            return None
        port, name, key = hello.get("port"), hello.get("name"), hello.get("key")
        if not isinstance(port, int) or isinstance(port, bool) or not isinstance(name, str):
            await self._refuse_joining(ws, Refusal.HELLO)
            return None
        name = clean_name(name, MAX_NAME_BYTES) or "browser"
        endpoint = self.hub.endpoints.get(port)
        if endpoint is None or not endpoint.spec.browser:
            await self._refuse_joining(ws, Refusal.NOT_OPEN)
            return None
        wanted = endpoint.spec.key
        if wanted is not None and not (
            isinstance(key, str)
            and hmac.compare_digest(key.encode(errors="replace"), wanted.encode())
        ):
            await self._refuse_joining(ws, Refusal.KEY)
            return None
        here = sum(1 for guest in endpoint.guests if isinstance(guest, Browser))
        if here >= self.settings.max_browser_per_port:
            await self._refuse_joining(ws, Refusal.FULL)
            return None
        loop = asyncio.get_running_loop()
        browser = Browser(self, ws, endpoint, name, address, loop.time())
        self.browsers.add(browser)
        refusal = self.hub.admit(port, browser, loop.time())
        if refusal is not None:
            self.browsers.discard(browser)
            await self._refuse_joining(ws, Refusal.FULL)
            return None
        self.counters.joined += 1
        spec = endpoint.spec
        me: dict[str, Any] = {"id": participant_id(endpoint, browser), "name": name}
        me |= {"index": browser._index_for(me["id"]), "color": self.color(me["id"])}
        welcome = {
            "type": "welcome",
            "id": me["id"],
            "port": port,
            "label": spec.label,
            "role": spec.role,
            "plays": plays(spec),
            "listens": listens(spec),
            "you": me,
            "participants": browser.participants(),
            "limits": {
                "rate": self.settings.browser_rate,
                "burst": self.settings.browser_burst,
                "frame": self.settings.browser_max_frame,
            },
        }
        browser.queue(json.dumps(welcome))
        browser.dirty = False
        self.flush()  # the release of anything the admission caused
        return browser

    async def _serve(self, browser: Browser) -> None:
        ws = browser.ws
        writer = asyncio.create_task(self._write(browser))
        pinger = asyncio.create_task(self._ping(browser))
        loop = asyncio.get_running_loop()
        reason = LeaveReason.CLOSED
        try:
            async for message in ws:
                if browser.ended is not None:
                    break
                now = loop.time()
                if message.type == WSMsgType.BINARY:
                    self._midi(browser, message.data, now)
                elif message.type == WSMsgType.TEXT:
                    self._text(browser, message.data, now)
                elif message.type == WSMsgType.ERROR:
                    if self._frame_error(message.data):
                        reason = LeaveReason.LIMIT
                    break
        finally:
            if browser.ended is None:
                self._depart(browser, reason)
            writer.cancel()
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    def _frame_error(self, problem: object) -> bool:
        """aiohttp closes the connection with 1009 for a message over ``max_msg_size``."""
        if getattr(problem, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
            self.counters.drop(Dropped.FRAME_SIZE)
            return True
        return False

    def _depart(self, browser: Browser, reason: LeaveReason) -> None:
        if browser in self.browsers:
            self.browsers.discard(browser)
            self.counters.joined -= 1
            self.hub.depart(browser, reason, asyncio.get_running_loop().time())
            self.flush()

    def end(self, browser: Browser, reason: Dropped, departed: bool) -> None:
        """Release what ``browser`` held (unless the hub already let it go), then say
        why and close: in a task, which starts after whatever hub call asked for it
        (the hub may be iterating its participants), kept until done and awaited by
        ``aclose``."""
        if departed and browser in self.browsers:
            self.browsers.discard(browser)
            self.counters.joined -= 1
        task = asyncio.get_running_loop().create_task(self._end(browser, reason, departed))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _end(self, browser: Browser, reason: Dropped, departed: bool) -> None:
        if not departed:
            leave = {
                Dropped.TIMEOUT: LeaveReason.TIMEOUT,
                Dropped.OVERFLOW: LeaveReason.OVERFLOW,
                Dropped.GONE: LeaveReason.REMOVED,
            }.get(reason, LeaveReason.LIMIT)
            self._depart(browser, leave)
        ws = browser.ws
        text = {"type": "error", "reason": reason.label, "message": reason.message}
        with contextlib.suppress(Exception):
            async with asyncio.timeout(GOODBYE_TIMEOUT):  # a browser that stopped reading
                await ws.send_str(json.dumps(text))
                await ws.close(code=reason.code, message=reason.message.encode()[:120])

    async def _write(self, browser: Browser) -> None:
        """Sends what the hub queued, in order; the only place that awaits the browser."""
        ws, outbox, wake = browser.ws, browser.outbox, browser.wake
        while True:
            if not outbox:
                wake.clear()
                await wake.wait()
                continue
            item = outbox.popleft()
            try:
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_str(item)
            except ConnectionError:  # it hung up: the reader sees the end and departs
                return

    async def _ping(self, browser: Browser) -> None:
        loop = asyncio.get_running_loop()
        while browser.ended is None:
            endpoint = self.hub.endpoints.get(browser.port)
            spec = endpoint.spec if endpoint is not None else None
            if spec is None or not spec.browser or spec.key != browser.spec.key:
                browser.end(Dropped.GONE)  # a reload closed the port to browsers
                return
            if len(browser.pings) >= MISSED_PINGS:
                browser.end(Dropped.TIMEOUT)
                return
            browser._ping_number += 1
            browser.pings[browser._ping_number] = loop.time()
            browser.queue(json.dumps({"type": "ping", "t": browser._ping_number}))
            if browser.dirty or browser.stale or browser.rtts_changed():
                browser.send_participants()
            await asyncio.sleep(self.ping_interval)

    def _midi(self, browser: Browser, data: bytes, now: float) -> None:
        messages = parse_frame(data)
        if messages is None:
            self.counters.drop(Dropped.MALFORMED)
            browser.strike(now)
            return
        if not plays(browser.spec):
            self.counters.drop(Dropped.LISTEN_ONLY)
            return
        if not browser.bucket.take(len(messages), now):
            self.counters.drop(Dropped.RATE)
            browser.strike(now)
            return
        self.hub.play(browser, [(0, message) for message in messages], now)
        self.flush()

    def _text(self, browser: Browser, data: str, now: float) -> None:
        message = _json(data)
        if not isinstance(message, dict) or message.get("type") != "pong":
            self.counters.drop(Dropped.MALFORMED)
            browser.strike(now)
            return
        number = message.get("t")
        sent = browser.pings.get(number) if isinstance(number, int) else None
        if sent is None or not isinstance(number, int):
            browser.strike(now)
            return
        for older in [n for n in browser.pings if n <= number]:
            del browser.pings[older]
        self.hub.measured(browser, now - sent, now)

    async def aclose(self) -> None:
        """The hub is stopping: ``Hub.close`` has told every browser (``STOPPING``);
        each goodbye (at most ``GOODBYE_TIMEOUT``) is awaited here, before the web
        server stops."""
        if self._on_event in self.hub.listeners:
            self.hub.listeners.remove(self._on_event)
        while pending := [task for task in self._closing if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)


def _json(data: str) -> Any:
    try:
        return json.loads(data, parse_constant=lambda name: None)
    except (ValueError, RecursionError):
        return None


class PlayCollector(Collector):
    """``/metrics`` for browsers: connections, and refusals and drops by reason."""

    def __init__(self, counters: PlayCounters, connections: SourceCounts) -> None:
        self.counters = counters
        self.connections = connections

    def collect(self) -> Iterator[Metric]:
        counters = self.counters
        yield GaugeMetricFamily(
            "midihub_browser_connections",
            "Open /play WebSocket connections.",
            value=self.connections.total,
        )
        yield GaugeMetricFamily(
            "midihub_browser_participants", "Browsers joined to a port.", value=counters.joined
        )
        refused = CounterMetricFamily(
            "midihub_browser_refused",
            "Browser connections refused, by reason (origin, per_ip, hello, not_open, key, full).",
            labels=["reason"],
        )
        for reason in Refusal:
            refused.add_metric([reason.label], counters.refused.get(reason, 0))
        yield refused
        dropped = CounterMetricFamily(
            "midihub_browser_dropped",
            "Browser messages dropped or connections ended, by reason.",
            labels=["reason"],
        )
        for drop in Dropped:
            if drop not in GOODBYES:
                dropped.add_metric([drop.label], counters.dropped.get(drop, 0))
        yield dropped
