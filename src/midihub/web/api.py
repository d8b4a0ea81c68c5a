"""The JSON API: who is connected, latency, stuck-note repair.

It reads the hub's live state in the hub's own process and event loop, so an answer
is always current and nothing on the packet path waits for the web. Times the hub
keeps on its monotonic clock are converted to wall-clock UTC here.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from midihub import __version__
from midihub.config import WebConfig
from midihub.fleet.view import fleet_document, participant_count
from midihub.hub import Endpoint, Hub, display_address, participant_id
from midihub.midi.notes import NoteRange
from midihub.rtp import Peer
from midihub.web.events import EventsCollector, LiveEvents
from midihub.web.guard import (
    MAX_BODY,
    Guard,
    Handler,
    error,
    json_object,
    parse_number,
    parse_port,
    shorten,
)
from midihub.web.guide import guide_page
from midihub.web.metrics import CONTENT_TYPE, HistoryCollector, Metrics
from midihub.web.monitor import Monitor, panic_text
from midihub.web.play import PlayApi

if TYPE_CHECKING:
    from midihub.fleet import Fleet

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("midihub.web")
OPEN_PATHS = frozenset(  # no token: the home page, and what musicians joining from a browser use
    {"/", "/api/health", "/api/openapi.json", "/favicon.ico", "/play", "/api/play/ports"}
    | {"/api/play/ws", "/connect"}
)
STREAMS = frozenset({"/api/monitor", "/api/events"})  # EventSource: ?token= allowed
MAX_POINTS = 500  # per series in one history answer
OFF_LOOP_ROWS = 200  # answers this long are serialised on a worker thread


class HistoryStore(Protocol):
    """What the API needs from the latency database (``midihub.history``)."""

    flushes: int  # batched writes so far (exported in /metrics)
    rollup_rebuilds: int  # hourly roll-ups rebuilt from the minutes on start
    overflowed: int  # samples kept in a port's (others) series (name churn)
    dropped: int  # samples dropped while the (fleet's) database was away, buffer full
    write_failures: int  # writes the database refused (the buckets were kept)

    @property
    def buffered(self) -> int: ...  # series-minutes waiting for the database

    async def summary(self) -> list[Any]: ...

    async def history(
        self, participant: str | None = None, since: float | None = None, *, points: int = ...
    ) -> list[Any]: ...


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class Api:
    """Routes and their handlers; ``clock`` converts hub time to wall time."""

    def __init__(
        self,
        hub: Hub,
        *,
        token: str,
        public: bool = True,
        store: HistoryStore | None = None,
        hub_time: Callable[[], float],
        wall_time: Callable[[], float] = time.time,
        reload: Callable[[], str | None] | None = None,
        hosts: Iterable[str] = (),
        bind: str = "127.0.0.1",
        monitor_viewers: int = 64,
        monitor_viewers_per_ip: int = 8,
        flush: Callable[[], None] | None = None,
        web_settings: WebConfig | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self._reload = reload  # returns None when done, else why it was refused
        self.hub = hub
        self.token = token
        self.public = public
        self.store = store
        self.fleet = fleet  # the fleet directory (``[fleet]``), or None
        self._hub_time = hub_time
        self._wall_time = wall_time
        self.started = wall_time()
        self.guard = Guard(
            hosts, bind, web_settings.proxy_networks if web_settings is not None else ()
        )
        self.monitor = Monitor(hub, limit=monitor_viewers, per_ip=monitor_viewers_per_ip)
        self.metrics = Metrics(hub, web=self.guard.counters, monitor=self.monitor)
        self.events = LiveEvents(hub, self._live_document)
        self.metrics.registry.register(EventsCollector(self.events))
        if store is not None:
            self.metrics.registry.register(HistoryCollector(store))
        # Browser participants; ``flush`` sends at once what they play (HubServer.flush).
        self.play = PlayApi(hub, flush=flush, settings=web_settings)
        self.metrics.registry.register(self.play.collector())

    def configure(self, settings: WebConfig, now: float) -> None:
        """A reload: the trusted proxies, the viewer and browser caps and the browsers'
        rate limits (the rest of ``[web]`` is set up at start)."""
        self.guard.proxies.networks = settings.proxy_networks
        self.monitor.limit = settings.monitor_viewers
        self.monitor.per_ip = settings.monitor_viewers_per_ip
        self.play.configure(settings, now)

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/api/health", self.health),
            web.get("/api/participants", self.participants),
            web.get("/api/latency", self.latency),
            web.get("/api/latency/history", self.history),
            web.post("/api/panic", self.panic),
            web.post("/api/reload", self.reload),
            web.get("/api/fleet", self.fleet_view),
            web.get("/api/openapi.json", self.openapi),
            web.get("/api/monitor", self.monitor_stream),
            web.get("/api/events", self.events_stream),
            web.get("/metrics", self.prometheus),
            web.get("/", self.index),
            web.get("/connect", self.guide),
            *self.play.routes(),
            web.static("/static", STATIC, append_version=False),
        ]

    async def aclose(self) -> None:
        """End the streams and wait for their tasks; stop the probes and listeners."""
        await self.monitor.aclose()
        await self.events.aclose()
        self.metrics.close()
        await self.play.aclose()

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        self.guard.install(app)
        app.middlewares.append(self._auth)
        app.add_routes(self.routes())
        return app

    # -- access ------------------------------------------------------------------

    def given_token(self, request: web.Request, *, query: bool = False) -> str:
        """The token from a header; from ``?token=`` only when ``query`` (EventSource
        cannot send headers, so the read-only monitor stream may carry it in the URL)."""
        given = request.headers.get("X-Midihub-Token", "")
        bearer = request.headers.get("Authorization", "")
        if bearer[:7].lower() == "bearer ":
            given = bearer[7:].strip()
        if not given and query:
            given = request.query.get("token", "")
        return given

    def authorised(self, request: web.Request, *, query: bool = False) -> bool:
        given = self.given_token(request, query=query)
        return bool(given) and hmac.compare_digest(
            given.encode(errors="replace"), self.token.encode()
        )

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        control = request.method not in ("GET", "HEAD", "OPTIONS")
        open_read = self.public or request.path in OPEN_PATHS or request.path.startswith("/static/")
        if control or not open_read:
            query = not control and request.path in STREAMS
            if not self.authorised(request, query=query):
                self.guard.counters.refused_token += 1
                what = "control actions" if control else "this hub's pages"
                if self.given_token(request, query=query):
                    return error(
                        401,
                        f"wrong token: {what} need this hub's token (its log shows it at "
                        "start, or it is web.token in its configuration)",
                    )
                return error(
                    401,
                    f"{what} need the hub's token in a header "
                    "(Authorization: Bearer TOKEN or X-Midihub-Token)",
                )
        return await handler(request)

    # -- helpers -----------------------------------------------------------------

    def to_wall(self, hub_seconds: float) -> float:
        return hub_seconds + (self._wall_time() - self._hub_time())

    def _person(self, endpoint: Endpoint, participant: Peer) -> dict[str, Any]:
        joined = participant.joined_at if participant.joined_at is not None else participant.created
        return {
            "id": participant_id(endpoint, participant),
            "name": participant.name,
            "address": display_address(participant.address),
            "port": endpoint.port,
            "transport": participant.transport,
            "connectedSince": iso(self.to_wall(joined)),
            "connectedFor": round(self._hub_time() - joined, 1),
        }

    # -- handlers ----------------------------------------------------------------

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "version": __version__,
                "uptime": round(self._wall_time() - self.started, 1),
                "ports": sorted(self.hub.endpoints),
                "participants": sum(len(e.participants) for e in self.hub.endpoints.values()),
            }
        )

    async def participants(self, request: web.Request) -> web.Response:
        return web.json_response(self.participants_document())

    def participants_document(self) -> dict[str, Any]:
        ports = []
        for port, endpoint in sorted(self.hub.endpoints.items()):
            spec = endpoint.spec
            ports.append(
                {
                    "port": port,
                    "dataPort": port + 1,
                    "label": spec.label,
                    "owner": spec.owner,
                    "role": spec.role,
                    "kind": "room" if spec.role == "room" else "group",
                    "halfOpen": endpoint.table.pending,
                    "participants": [
                        self._person(endpoint, participant) for participant in endpoint.participants
                    ],
                }
            )
        return {"ports": ports}

    async def latency(self, request: web.Request) -> web.Response:
        return await json_off_loop(await self.latency_rows())

    async def latency_rows(self) -> list[dict[str, Any]]:
        """Live rows for those connected, then the cached stored summary for the rest."""
        rows: list[dict[str, Any]] = []
        live: set[tuple[str, str, int]] = set()
        for _, endpoint in sorted(self.hub.endpoints.items()):
            for participant in endpoint.participants:
                row = self._live_row(endpoint, participant)
                live.add((row["name"], row["address"], row["port"]))
                rows.append(row)
        if self.store is not None:
            for past in await self.store.summary():
                key = (past.name, past.address, past.hub_port)
                if key not in live:
                    rows.append(self._stored_row(past))
        return rows

    async def _live_document(self, kind: str) -> Any:
        if kind == "participants":
            return self.participants_document()
        return await self.latency_rows()

    async def events_stream(self, request: web.Request) -> web.StreamResponse:
        """Read-only SSE: participants and latency pushed as they change."""
        return await self.events.stream(request)

    def _live_row(self, endpoint: Endpoint, participant: Peer) -> dict[str, Any]:
        stats = endpoint.stats.get(participant.public_id)
        row = self._person(endpoint, participant)
        received, lost = participant.packets_received, participant.packets_lost
        row |= {
            "connected": True,
            "packetsReceived": received,
            "packetsLost": lost,
            "lossPercent": round(100 * lost / (received + lost), 2) if received + lost else 0.0,
            "messagesIn": stats.messages_in if stats else 0,
            "messagesOut": stats.messages_out if stats else 0,
            "samples": stats.samples if stats else 0,
            "jitter": ms(stats.jitter) if stats and stats.samples > 1 else None,
        }
        last_at = stats.last_at if stats and stats.samples else None
        return row | self._latency_fields(
            row["name"],
            endpoint.port,
            average=stats.average if stats else None,
            last=(stats.last, last_at) if stats and stats.samples else None,
            low=(stats.min, stats.min_at) if stats and stats.samples else None,
            high=(stats.max, stats.max_at) if stats and stats.samples else None,
            convert=True,
        )

    def _stored_row(self, past: Any) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": None,
            "name": past.name,
            "address": past.address,
            "port": past.hub_port,
            "connected": False,
            "samples": past.count,
        }
        return row | self._latency_fields(
            past.name,
            past.hub_port,
            average=past.avg_ms / 1000,
            last=(past.last_ms / 1000, past.last_at),
            low=(past.min_ms / 1000, past.min_at),
            high=(past.max_ms / 1000, past.max_at),
            convert=False,
        )

    def _latency_fields(
        self,
        name: str,
        port: int,
        *,
        average: float | None,
        last: tuple[float | None, float | None] | None,
        low: tuple[float | None, float] | None,
        high: tuple[float | None, float] | None,
        convert: bool,
    ) -> dict[str, Any]:
        """The old latency page's field names, so existing scripts keep working."""

        def when(at: float | None) -> str | None:
            if at is None:
                return None
            return iso(self.to_wall(at) if convert else at)

        last_time = when(last[1]) if last else None  # once: the clock offset moves
        return {
            "clientName": name,
            "clientPort": port,
            "timestamp": last_time,
            "averageLatency": ms(average),
            "minLatency": ms(low[0]) if low else None,
            "minLatencyTime": when(low[1]) if low else None,
            "maxLatency": ms(high[0]) if high else None,
            "maxLatencyTime": when(high[1]) if high else None,
            "lastLatency": ms(last[0]) if last else None,
            "lastLatencyTime": last_time,
        }

    async def history(self, request: web.Request) -> web.Response:
        participant = request.query.get("participant") or None
        if participant is not None and len(participant) > 256:
            return error(400, "participant: at most 256 characters")
        since_text = request.query.get("since")
        since: float | None = None
        if since_text:
            try:
                since = parse_time(since_text, self._wall_time())
            except ValueError as exc:
                return error(400, str(exc))
        points_text = request.query.get("points", str(MAX_POINTS))
        points = parse_number(points_text, 3)
        if points is None or not 1 <= points <= MAX_POINTS:
            return error(
                400, f"points={shorten(points_text)}: a whole number from 1 to {MAX_POINTS}"
            )
        if self.store is None:
            return web.json_response([])
        rows = await self.store.history(participant, since, points=points)
        # Thousands of rows: turned into JSON on a worker thread, not on the packet loop.
        body = await asyncio.to_thread(_history_json, rows)
        return web.Response(body=body, content_type="application/json")

    async def panic(self, request: web.Request) -> web.Response:
        try:
            body = await json_object(request)
        except ValueError as exc:
            return error(400, f"{exc}; expected {{port, range, channels?, participant?}}")
        try:
            port, note_range, channels, participant = self._panic_request(body)
        except ValueError as exc:
            return error(400, str(exc))
        targets = self.hub.panic(
            port, note_range, self._hub_time(), channels=channels, participant=participant
        )
        whom = "everyone" if participant is None else repr(participant.name)
        log.info(
            "%s :%d: %s (%d participant(s)), asked from %s",
            self.hub.endpoints[port].label,
            port,
            panic_text(note_range, channels, whom),
            len(targets),
            request.remote,
        )
        return web.json_response(
            {
                "port": port,
                "range": note_range.name.title(),
                "notes": [note_range.low, note_range.high],
                "channels": [c + 1 for c in channels],
                "sentTo": [self._person(self.hub.endpoints[port], s)["id"] for s in targets],
            }
        )

    def _panic_request(self, body: dict[str, Any]) -> tuple[int, NoteRange, list[int], Peer | None]:
        ports = sorted(self.hub.endpoints)
        wanted = body.get("participant")
        participant: Peer | None = None
        port = body.get("port")
        if wanted is not None:
            if not isinstance(wanted, str) or len(wanted) > 256:
                raise ValueError("participant must be an id from /api/participants")
            found = self.hub.participant(wanted)
            if found is None:
                raise ValueError(f"no participant {shorten(wanted)} is connected")
            endpoint, participant = found
            if port is not None and port != endpoint.port:
                raise ValueError(f"participant {shorten(wanted)} is on port {endpoint.port}")
            port = endpoint.port
        if isinstance(port, str):
            port = parse_port(port)
        if not isinstance(port, int) or isinstance(port, bool) or port not in self.hub.endpoints:
            valid = ", ".join(str(p) for p in ports)
            raise ValueError(f"unknown port {shorten(port)}; valid ports: {valid}")
        raw_range = body.get("range", "All")
        if not isinstance(raw_range, str) or len(raw_range) > 16:
            raise ValueError("range must be one of Low, Mid, High, All")
        note_range = NoteRange.parse(raw_range)
        raw_channels = body.get("channels")
        if raw_channels is None:
            channels = list(range(16))
        else:
            if not isinstance(raw_channels, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 16
                for c in raw_channels
            ):
                raise ValueError("channels must be a list of MIDI channels 1..16")
            channels = sorted({c - 1 for c in raw_channels})
        return port, note_range, channels, participant

    async def monitor_stream(self, request: web.Request) -> web.StreamResponse:
        text = request.query.get("port", "")
        port = parse_port(text)
        if port is None or port not in self.hub.endpoints:
            valid = ", ".join(str(p) for p in sorted(self.hub.endpoints))
            return error(400, f"unknown port {shorten(text)}; valid ports: {valid}")
        return await self.monitor.stream(request, port)

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def guide(self, request: web.Request) -> web.Response:
        try:
            page = guide_page()
        except FileNotFoundError as missing:
            return error(404, str(missing))
        headers = {"Cache-Control": "no-cache"}
        return web.Response(text=page, content_type="text/html", headers=headers)

    async def reload(self, request: web.Request) -> web.Response:
        try:
            await json_object(request)
        except ValueError as exc:
            return error(400, f"{exc}; send {{}}")
        if self._reload is None:
            return error(400, "this hub has no configuration file to reload")
        refused = self._reload()
        if refused is not None:
            return error(400, refused)
        return web.json_response({"reloaded": True, "ports": sorted(self.hub.endpoints)})

    async def fleet_view(self, request: web.Request) -> web.Response:
        """Every hub of the fleet, from the directory's last read (no database IO)."""
        document = fleet_document(self.fleet, self.hub)
        if participant_count(document) <= OFF_LOOP_ROWS:
            return web.json_response(document)
        body = await asyncio.to_thread(_fleet_json, document)
        return web.Response(body=body, content_type="application/json")

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())


def openapi_document() -> dict[str, Any]:
    text = resources.files("midihub.web").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    document["info"]["version"] = __version__
    return document


def parse_time(text: str, now: float) -> float:
    """``since`` as epoch seconds, an ISO 8601 time, or a span back from now (``1h``)."""
    text = text.strip()
    problem = ValueError(
        f"since={shorten(text)}: use epoch seconds, an ISO time, or a span like 90m, 1h, 7d"
    )
    if len(text) > 64 or not text.isascii():
        raise problem
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value: float
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        value = now - float(text[:-1]) * units[text[-1]]
    else:
        try:
            value = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                value = parsed.timestamp()
            except (ValueError, OverflowError, OSError):
                raise problem from None
    if not math.isfinite(value):
        raise problem
    return value


def _history_json(rows: list[Any]) -> bytes:
    return _json_array(
        [
            {
                "name": r.name,
                "address": r.address,
                "port": r.hub_port,
                "minute": iso(r.minute),
                "minLatency": round(r.min_ms, 1),
                "avgLatency": round(r.avg_ms, 1),
                "maxLatency": round(r.max_ms, 1),
                "count": r.count,
                "step": getattr(r, "step", 60),
            }
            for r in rows
        ]
    )


def _json_array(items: list[Any], chunk: int = OFF_LOOP_ROWS) -> bytes:
    """``json.dumps`` in slices: the C encoder holds the GIL for a whole call, so one
    call over thousands of rows would stall the packet loop even from another thread."""
    parts = [
        json.dumps(items[i : i + chunk], separators=(",", ":"))[1:-1]
        for i in range(0, len(items), chunk)
    ]
    return ("[" + ",".join(parts) + "]").encode()


def _fleet_json(document: dict[str, Any]) -> bytes:
    """``/api/fleet`` with each hub's players serialised in slices (``_json_array``)."""
    hubs = []
    for hub in document["hubs"]:
        players = _json_array(hub["participants"]).decode()
        text = json.dumps({**hub, "participants": 0}, separators=(",", ":"))
        hubs.append(text.replace('"participants":0', f'"participants":{players}', 1))
    head = json.dumps({**document, "hubs": 0}, separators=(",", ":"))
    return head.replace('"hubs":0', f'"hubs":[{",".join(hubs)}]', 1).encode()


async def json_off_loop(document: list[Any]) -> web.Response:
    """A JSON answer, serialised on a worker thread when it is long."""
    if len(document) <= OFF_LOOP_ROWS:
        return web.json_response(document)
    body = await asyncio.to_thread(_json_array, document)
    return web.Response(body=body, content_type="application/json")
