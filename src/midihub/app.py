"""Wires the hub, the sockets, logging and signals into the ``midihub serve`` process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import secrets
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from midihub import config as config_module
from midihub.bonjour import Advertiser, advertise_addresses
from midihub.config import ConfigError, HubConfig, parse_listen
from midihub.hub import Endpoint, Hub, display_address
from midihub.net import HubServer
from midihub.record.manager import RecordingManager, default_directory
from midihub.rtp import Event, LatencyMeasured, PacketsLost, PeerJoined, PeerLeft, Session
from midihub.store import LatencyStore
from midihub.web import Api, WebServer
from midihub.web.recordings import RecordingsApi
from midihub.web.server import WebError

log = logging.getLogger("midihub")

TOKEN_FILE = "midihub.token"
"""Where a generated control token is kept, next to the database."""


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _who(session: Session) -> str:
    addr = session.control_addr
    host = addr[0].removeprefix("::ffff:") if isinstance(addr[0], str) else addr[0]
    return f"{session.peer_name or '(unnamed)'!r} from {host}:{addr[1]}"


def log_event(endpoint: Endpoint, event: Event) -> None:
    """The admin's view of the hub: every join and leave, with name and address."""
    where = f"{endpoint.label} :{endpoint.port}"
    if isinstance(event, PeerJoined):
        log.info("%s: %s joined", where, _who(event.session))
    elif isinstance(event, PeerLeft):
        if event.session.joined_at is None and event.reason in ("rejected", "no-answer"):
            log.warning(
                "%s: invitation to %s failed (%s)", where, _who(event.session), event.reason
            )
        else:
            log.info("%s: %s left (%s)", where, _who(event.session), event.reason)
    elif isinstance(event, LatencyMeasured):
        log.debug("%s: %s rtt %.1f ms", where, _who(event.session), event.rtt * 1000)
    elif isinstance(event, PacketsLost):
        log.debug("%s: %s lost %d packet(s)", where, _who(event.session), event.count)


class App:
    """One running hub. ``run()`` returns when asked to stop (signal or ``stop()``)."""

    def __init__(
        self,
        config: HubConfig,
        config_path: Path | None = None,
        bind: str | None = None,
        *,
        web: str | None = None,
        db: str | None = None,
    ) -> None:
        self.config = config.with_overrides(web=web, db=db)
        self.config_path = config_path
        self.bind_override = bind
        self.web_override = web
        self.db_override = db
        self.hub = Hub(self.config)
        self.hub.listeners.append(log_event)
        self.server: HubServer | None = None
        self.web: WebServer | None = None
        self.api: Api | None = None
        self.store: LatencyStore | None = None
        self.token = ""
        self.advertiser: Advertiser | None = None
        self.recordings: RecordingManager | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._stop: asyncio.Event | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.server = HubServer(self.hub, loop)
        self.server.start()
        for spec in self.config.endpoints():
            log.info(
                "listening on %s port %d (data %d): %s",
                self.config.bind,
                spec.port,
                spec.port + 1,
                spec.label,
            )
        addresses = advertise_addresses(self.config.bind, self.config.mdns.enabled)
        if addresses:
            self.advertiser = Advertiser(addresses)
            self._in_background(self._advertise(start=True))
        self.store = LatencyStore(
            self.config.stats.database, retention=self.config.stats.retention_days * 86400
        )
        await self.store.start()
        self.hub.listeners.append(self._record_latency)
        self.recordings = RecordingManager(
            self.hub, default_directory(self.config), self.config.record
        )
        try:
            await self._start_web(loop)
        except WebError:
            self.server.close()
            await self.store.close()
            raise
        # Everything made so far lives as long as the process: keep the collector from
        # walking it again and again (full collections were 20 ms pauses under load).
        gc.collect()
        gc.freeze()
        installed = []
        for signum, handler in (
            (signal.SIGINT, self.stop),
            (signal.SIGTERM, self.stop),
            (signal.SIGHUP, self.reload),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, handler)
                installed.append(signum)
        await self.recordings.start()  # its directory work runs in the background
        try:
            await self._stop.wait()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            await self.recordings.close()  # replays say BY, recordings become SMFs
            self.server.close()
            if self.api is not None:
                self.api.close()
            if self.web is not None:
                await self.web.close()
            await self.store.close()
            for task in self._background:
                task.cancel()
            if self.advertiser is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.advertiser.close(), 3)
            log.info("stopped")

    def _in_background(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _advertise(self, *, start: bool = False) -> None:
        """Bonjour, off the hub's critical path: a network without multicast only
        costs a warning."""
        advertiser = self.advertiser
        if advertiser is None:
            return
        try:
            if start:
                await advertiser.start()
            await advertiser.sync({port: e.host.name for port, e in self.hub.endpoints.items()})
        except Exception as error:  # best effort by design
            log.warning("Bonjour advertisement failed: %s", error)
            return
        if start:
            log.info(
                "Bonjour: %d port(s) advertised as _apple-midi._udp on %s",
                len(advertiser.services),
                ", ".join(advertiser.addresses),
            )

    def _record_latency(self, endpoint: Endpoint, event: Event) -> None:
        if isinstance(event, LatencyMeasured) and self.store is not None:
            session = event.session
            self.store.record(
                session.peer_name,
                display_address(session.control_addr),
                endpoint.port,
                event.rtt * 1000,
                time.time(),
            )

    async def _start_web(self, loop: asyncio.AbstractEventLoop) -> None:
        settings = self.config.web
        if not settings.listen:
            return
        host, port = parse_listen(settings.listen)
        self.token = settings.token or self._generated_token()
        self.api = Api(
            self.hub,
            token=self.token,
            public=settings.public,
            store=self.store,
            hub_time=loop.time,
            reload=self.reload,
        )
        if self.server is not None:
            self.server.on_forward = self.api.metrics.observe_forward
        application = self.api.application()
        if self.recordings is not None:
            application.add_routes(RecordingsApi(self.recordings).routes())
        self.web = WebServer(application, host, port)
        await self.web.start()
        log.info("dashboard and API on %s", self.web.url)
        if settings.token is None:
            log.info("control token (panic, reload): %s", self.token)
            if not _is_loopback(host):
                log.warning(
                    "the web port %s is reachable from other machines and no web.token is "
                    "configured: anyone who reads this log can send control actions; set "
                    "web.token in the configuration",
                    settings.listen,
                )

    def _generated_token(self) -> str:
        """A fresh token, also written (0600) beside the database for ``midihub panic``."""
        token = secrets.token_urlsafe(18)
        database = self.config.stats.database
        if database != ":memory:":
            path = Path(database).parent / TOKEN_FILE
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as file:
                    file.write(token + "\n")
        return token

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def reload(self) -> str | None:
        """Re-read the configuration file (SIGHUP, ``POST /api/reload``); a bad file
        changes nothing. Returns why it was refused, or None."""
        if self.server is None:
            return "the hub is not running"
        try:
            new, _ = config_module.load(self.config_path, self.bind_override)
            new = new.with_overrides(web=self.web_override, db=self.db_override)
        except ConfigError as error:
            log.error("reload refused, configuration unchanged: %s", error)
            return f"reload refused, configuration unchanged: {error}"
        for problem in self.server.reconfigure(new):
            log.error("reload: %s", problem)
        self.config = self.hub.config
        if self.advertiser is not None:
            self._in_background(self._advertise())
        log.info(
            "configuration reloaded from %s: ports %s",
            self.config_path or "defaults",
            ", ".join(str(p) for p in sorted(self.hub.endpoints)),
        )
        return None


def install_fast_loop() -> str:
    """Use uvloop where installed; the standard loop otherwise (both are supported)."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
