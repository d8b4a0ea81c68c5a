"""Wires the hub, the sockets, logging and signals into the ``midihub serve`` process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import stat
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from midihub import config as config_module
from midihub.bonjour import Advertiser, advertise_addresses
from midihub.config import ConfigError, HubConfig, is_loopback, parse_listen
from midihub.history import LatencyStore
from midihub.hub import Endpoint, Hub, display_address
from midihub.hub.joinlog import JoinLog
from midihub.net import HubServer
from midihub.record.manager import RecordingManager, default_directory
from midihub.rtp import Event, LatencyMeasured
from midihub.web.errors import WebError

if TYPE_CHECKING:  # the web stack loads in ``_start_web``, only when the web is on
    from midihub.fleet import Fleet
    from midihub.fleet.mesh import Mesh
    from midihub.fleet.records import HubRecord
    from midihub.web import Api, WebServer
    from midihub.web.connections import ConnectionLimits

log = logging.getLogger("midihub")

SWITCH_INTERVAL = 0.001
TOKEN_FILE = "midihub.token"
"""Where a generated control token is kept, next to the database."""


FLEET_COUNTERS: Final = {
    "heartbeats": "Fleet directory renewals the database took.",
    "failures": "Fleet directory connections or renewals that failed (retried with back-off).",
    "reconnects": "Connections to the fleet database made again after one was lost.",
    "refused": "Renewals refused: another live hub holds this hub's fleet name.",
}


class DatabaseError(Exception):
    """The latency database cannot be opened; one line naming the path."""


RESTART_ONLY: Final[dict[str, frozenset[str] | None]] = {
    # The server, its TLS files (read again at each reload), token and host checks.
    "web": frozenset({"listen", "token", "public", "hosts", "tls_cert", "tls_key"}),
    "stats": frozenset({"database"}),
    "mdns": None,  # the advertiser is made (or not) at start
    "record": frozenset({"dir", "flush_interval"}),  # the writer thread's
    "fleet": None,  # joined (or not) at start
}
"""What a reload cannot apply (section → its fields, None: all): it says so and keeps
the running values. ``bind`` is the socket layer's (``HubServer.reconfigure``);
every other setting applies live (README, "What a reload changes")."""


def restart_only_changes(old: HubConfig, new: HubConfig) -> dict[str, list[str]]:
    """The restart-only fields that differ, by section (names only: never a token)."""
    changes: dict[str, list[str]] = {}
    for section, fields in RESTART_ONLY.items():
        before, after = getattr(old, section), getattr(new, section)
        if before is None or after is None:  # an optional table added or removed
            if before != after:
                changes[section] = ["(the table)"]
            continue
        names = [
            name
            for name in type(before).model_fields
            if (fields is None or name in fields) and getattr(before, name) != getattr(after, name)
        ]
        if names:
            changes[section] = names
    return changes


def still_running(old: HubConfig, new: HubConfig) -> HubConfig:
    """``new`` with the restart-only values of ``old``, which stay in force (the next
    reload compares with what runs, and says so again)."""
    update: dict[str, Any] = {}
    for section, fields in RESTART_ONLY.items():
        before = getattr(old, section)
        if fields is not None and before is not None:
            kept = {name: getattr(before, name) for name in fields}
            before = getattr(new, section).model_copy(update=kept)
        update[section] = before
    return new.model_copy(update=update)


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
        self.hub = Hub(self.config.spec())
        # Joins and leaves, rate-limited per source; ``run`` puts it on the loop's clock.
        self.join_log = JoinLog(log, time.monotonic)
        self.hub.listeners.append(self.join_log.listener)
        self.server: HubServer | None = None
        self.web: WebServer | None = None
        self.api: Api | None = None
        self.store: LatencyStore | None = None
        self.token = ""
        self.advertiser: Advertiser | None = None
        self.recordings: RecordingManager | None = None
        self.fleet: Fleet | None = None
        self.mesh: Mesh | None = None  # the fleet's links, planned from the directory
        self._background: set[asyncio.Task[None]] = set()
        self._stop: asyncio.Event | None = None
        self.ready = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.join_log.clock, self.join_log.call_later = loop.time, loop.call_later
        # Signals work from the start: opening the history database may take a while,
        # and a SIGHUP or SIGTERM meanwhile must not kill the process by default action.
        installed = []
        for signum, handler in (
            (signal.SIGINT, self.stop),
            (signal.SIGTERM, self.stop),
            (signal.SIGHUP, self.reload),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, handler)
                installed.append(signum)
        try:
            await self._start(loop)
        except BaseException:
            for signum in installed:
                loop.remove_signal_handler(signum)
            await self._shut_down()  # what did start (store, sockets, tasks) is closed
            raise
        assert self.recordings is not None
        await self.recordings.start()  # its directory work runs in the background
        # Everything made so far lives as long as the process: keep the collector from
        # walking it again and again (full collections were 20 ms pauses under load).
        gc.collect()
        gc.freeze()
        # The history store and big JSON answers run on worker threads; a thread holding
        # the GIL keeps it up to the switch interval whenever the loop wakes (5 ms by
        # default, paid once per system call the loop makes): 1 ms bounds that wait.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        assert self.server is not None and self.store is not None
        self.ready = True  # started, and the start-up collection is behind us
        try:
            await self._stop.wait()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            await self._shut_down()
            self.join_log.close()  # the last "… and N more", after the goodbyes
            log.info("stopped")

    async def _shut_down(self) -> None:
        """Every step runs even when one before it fails (the exit stack unwinds in
        reverse order of these pushes), so the history is always flushed and closed and
        every background task is awaited."""
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._stop_background)
            if self.store is not None:
                stack.push_async_callback(self.store.close)
            if self.fleet is not None:  # leaves the directory once the ports are closed
                stack.push_async_callback(self.fleet.close)
            if self.web is not None:
                stack.push_async_callback(self.web.close)
            if self.api is not None:
                stack.push_async_callback(self.api.aclose)
            # Unwound first to last: every participant gets BY (and the recorder its
            # releases and leave markers), then the recordings end, bounded in time.
            if self.recordings is not None:
                stack.push_async_callback(self.recordings.close)
            if self.server is not None:
                stack.push_async_callback(self.server.aclose)
            if self.mesh is not None:  # first: no fleet link changes once the hub stops
                stack.callback(self.mesh.close)

    async def _stop_background(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        if self.advertiser is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.advertiser.close(), 3)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Database, then UDP ports, then the web: a hub that cannot keep its history
        says so before it opens any UDP port (nobody joins a hub about to exit)."""
        fleet = self.config.fleet_spec()
        self.store = LatencyStore(  # in a fleet, on its database: opened in the background
            fleet.database if fleet is not None else self.config.stats.database,
            retention=self.config.stats.retention_days * 86400,
            hub=fleet.name if fleet is not None else "",
            quiet_outages=fleet is not None,  # the fleet's one line says the database is away
        )
        try:
            await self.store.start()
        except Exception as error:  # OSError, or SQLAlchemy wrapping sqlite3's errors
            with contextlib.suppress(Exception):
                await self.store.close()
            reason = getattr(error, "orig", None) or error
            text = str(getattr(reason, "strerror", None) or reason).splitlines()[0]
            raise DatabaseError(
                f"cannot open the database {self.config.stats.database}: {text}"
            ) from None
        self.server = HubServer(self.hub, loop)
        try:
            self.server.start()
        except BaseException:
            await self.store.close()
            raise
        for spec in self.config.endpoints():
            log.info(
                "listening on %s port %d (data %d): %s",
                self.config.bind,
                spec.port,
                spec.port + 1,
                spec.label,
            )
            if spec.midi2 is not None:
                log.info(
                    "listening on %s port %d: %s over Network MIDI 2.0%s",
                    self.config.bind,
                    spec.midi2,
                    spec.label,
                    " (shared secret)" if spec.key is not None else "",
                )
        await self._join_fleet()
        self._link_fleet()
        addresses = advertise_addresses(self.config.bind, self.config.mdns.enabled)
        if addresses:
            self.advertiser = Advertiser(addresses)
            self._in_background(self._advertise(start=True))
        self.hub.listeners.append(self._record_latency)
        self.recordings = RecordingManager(
            self.hub, default_directory(self.config), self.config.record
        )
        await self._start_web(loop)

    async def _join_fleet(self) -> None:
        """With ``[fleet]``: the directory, renewed in the background. Nothing here stops
        the hub: an unreachable database is one line (``Fleet`` retries), a missing
        driver another."""
        spec = self.config.fleet_spec()
        if spec is None:
            return
        from midihub.fleet import Fleet

        fleet = Fleet.for_hub(spec, self.hub)
        try:
            await fleet.start()
        except ImportError as error:
            log.error(
                "fleet: [fleet] needs the PostgreSQL driver (pip install 'midihub[fleet]'): "
                "%s; the hub runs without the fleet",
                error,
            )
            return
        self.fleet = fleet

    def _link_fleet(self) -> None:
        """Rooms with the same name on several hubs become one: each directory read that
        changed something re-plans this hub's links (``fleet/mesh.py``) and applies the
        plan through ``HubServer.reconfigure``, the reload's own path."""
        if self.fleet is None or self.server is None:
            return
        from midihub.fleet.directory import BACKOFF_MAX
        from midihub.fleet.mesh import Mesh

        fleet = self.fleet
        loop = asyncio.get_running_loop()
        mesh = self.mesh = Mesh(
            fleet.spec.name,
            lambda: self.hub.spec,
            self.server.reconfigure,
            clock=loop.time,
            call_later=loop.call_later,
        )
        # After an outage each hub renews within its heartbeat once its retry back-off
        # has run out: until then, the hubs linked before keep their links.
        hold = fleet.spec.down_after + fleet.spec.heartbeat + BACKOFF_MAX
        failures = fleet.counters.failures

        def changed(hubs: tuple[HubRecord, ...]) -> None:
            nonlocal failures
            if fleet.counters.failures != failures:  # the database was away since
                failures = fleet.counters.failures
                mesh.hold(hold)
            # A hub refused its name (another live hub holds it) links to no one.
            mesh.changed(hubs if fleet.registered else ())

        fleet.listeners.append(changed)
        changed(fleet.hubs())

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
        midi2_ports = self.server.midi2_ports if self.server is not None else {}
        try:
            if start:
                await advertiser.start()
            await advertiser.sync(
                {port: e.table.name for port, e in self.hub.endpoints.items()},
                {
                    number: (port.settings.name, port.settings.product_id)
                    for number, port in midi2_ports.items()
                },
            )
        except Exception as error:  # best effort by design
            log.warning("Bonjour advertisement failed: %s", error)
            return
        if start:
            log.info(
                "Bonjour: %d port(s) advertised as _apple-midi._udp, %d as _midi2._udp on %s",
                len(advertiser.services),
                len(advertiser.midi2_services),
                ", ".join(advertiser.addresses),
            )

    def _record_latency(self, endpoint: Endpoint, event: Event) -> None:
        if isinstance(event, LatencyMeasured) and self.store is not None:
            who = event.who
            self.store.record(
                who.name,
                display_address(who.address),
                endpoint.port,
                event.rtt * 1000,
                time.time(),
            )

    def _connection_limits(self) -> ConnectionLimits:
        """The web port's caps from ``[web]``, at start and at each reload alike."""
        from midihub.web.connections import ConnectionLimits

        settings = self.config.web
        return ConnectionLimits(
            per_source=settings.connections_per_ip,
            header_timeout=settings.header_timeout,
            ceiling=settings.max_connections,
            ports=lambda: len(self.hub.endpoints),
            trusted_proxies=settings.proxy_networks,
        )

    async def _start_web(self, loop: asyncio.AbstractEventLoop) -> None:
        settings = self.config.web
        if not settings.listen:
            return
        from midihub.web import Api, WebServer
        from midihub.web.metrics import CountCollector, Midi2Collector
        from midihub.web.recordings import RecordingsApi

        host, port = parse_listen(settings.listen)
        self.token = settings.token or self._generated_token()
        self.api = Api(
            self.hub,
            token=self.token,
            public=settings.pages_public,
            store=self.store,
            hub_time=loop.time,
            reload=self.reload,
            hosts=settings.hosts,
            bind=host,
            monitor_viewers=settings.monitor_viewers,
            monitor_viewers_per_ip=settings.monitor_viewers_per_ip,
            flush=self.server.flush if self.server is not None else None,
            web_settings=settings,
            fleet=self.fleet,
        )
        if self.server is not None:
            self.server.on_forward = self.api.metrics.observe_forward
        if self.server is not None:
            server = self.server
            self.api.metrics.registry.register(Midi2Collector(lambda: server.midi2_ports))
        if self.fleet is not None:
            fleet = self.fleet
            for name, doc in FLEET_COUNTERS.items():
                self.api.metrics.registry.register(
                    CountCollector(
                        f"midihub_fleet_{name}",
                        doc,
                        lambda name=name: int(getattr(fleet.counters, name)),  # type: ignore[misc]
                    )
                )
        if self.mesh is not None:
            mesh = self.mesh
            self.api.metrics.registry.register(
                CountCollector(
                    "midihub_fleet_link_plans",
                    "Directory changes that changed this hub's fleet links (each link's state"
                    " is in midihub_link_up).",
                    lambda: mesh.applied,
                )
            )
        self.api.metrics.registry.register(
            CountCollector(
                "midihub_log_lines_suppressed",
                "Join and leave log lines held back by the per-source limit (each window's"
                " are summed up in one '… and N more' line).",
                lambda: self.join_log.suppressed,
            )
        )
        application = self.api.application()
        if self.recordings is not None:
            application.add_routes(RecordingsApi(self.recordings).routes())
        web = WebServer(
            application,
            host,
            port,
            tls_cert=settings.tls_cert,
            tls_key=settings.tls_key,
            limits=self._connection_limits(),
            registry=self.api.metrics.registry,
        )
        await web.start()
        self.web = web  # only once it answers: tests and tools wait for this
        log.info("dashboard and API on %s", web.url)
        if not is_loopback(host):
            if not settings.pages_public:
                log.info("the web port is reachable from other machines: pages need the token")
            if not settings.hosts:
                log.warning(
                    "the web port %s is reachable from other machines but answers only to "
                    "loopback names%s: list the names (or IPs) people use in web.hosts",
                    settings.listen,
                    "" if host in ("0.0.0.0", "::") else f" and {host}",
                )
            if settings.tls_cert is None:
                log.warning(
                    "the web port %s serves plain HTTP: the token travels in clear text; "
                    "set web.tls_cert and web.tls_key, or put a TLS proxy in front",
                    settings.listen,
                )
        if settings.token is None:
            log.info("control token (panic, reload): %s", self.token)
            if not is_loopback(host):
                log.warning(
                    "the web port %s is reachable from other machines and no web.token is "
                    "configured: anyone who reads this log can send control actions; set "
                    "web.token in the configuration",
                    settings.listen,
                )

    def _generated_token(self) -> str:
        """The token kept (0600) beside the database for ``midihub panic``, or a new one."""
        database = self.config.stats.database
        if database == ":memory:":
            return secrets.token_urlsafe(18)
        return token_file(Path(database).parent / TOKEN_FILE)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _reload_tls(self) -> None:
        if self.web is None or self.web.ssl_context is None:
            return
        try:
            self.web.reload_tls()
        except WebError as error:
            log.error("reload: %s; the previous certificate stays in use", error)
        else:
            log.info("reload: TLS certificate %s read again", self.web.tls_cert)

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
        spec = new.spec() if self.mesh is None else self.mesh.planned(new.spec())
        for problem in self.server.reconfigure(spec):
            log.error("reload: %s", problem)
        for section, names in restart_only_changes(self.config, new).items():
            log.warning(
                "reload: [%s] changed; those settings take effect only after a restart: %s",
                section,
                ", ".join(names),
            )
        self._reload_tls()
        self.config = still_running(self.config, new).model_copy(update={"bind": self.server.bind})
        if self.store is not None:
            self.store.retention = self.config.stats.retention_days * 86400
        if self.recordings is not None:
            self.recordings.settings = self.config.record
        if self.api is not None:
            self.api.configure(self.config.web, asyncio.get_running_loop().time())
        if self.web is not None:
            self.web.gate.limits = self._connection_limits()  # from the next connection on
        if self.advertiser is not None:
            self._in_background(self._advertise())
        log.info(
            "configuration reloaded from %s: ports %s",
            self.config_path or "defaults",
            ", ".join(str(p) for p in sorted(self.hub.endpoints)),
        )
        return None


def token_file(path: Path) -> str:
    """The token in ``path`` if it is a regular file of ours that only we can read;
    else a new token, written there without following a symlink or trusting what is
    there (a temporary file made exclusively, 0600, then renamed over). Problems are
    warnings: the hub still runs, with a token only its log shows."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as error:
        log.warning("cannot check the token file %s: %s", path, error.strerror or error)
        info = None
    if info is not None:
        trusted = (
            stat.S_ISREG(info.st_mode)
            and info.st_uid == os.getuid()
            and stat.S_IMODE(info.st_mode) == 0o600
        )
        if trusted:
            token = _read_token(path)
            if token is not None:
                return token
        else:
            log.warning(
                "the token file %s is not a private regular file of this user (0600); "
                "writing a new one",
                path,
            )
    token = secrets.token_urlsafe(18)
    try:
        _write_private(path, token + "\n")
    except OSError as error:
        log.warning(
            "cannot write the token file %s: %s; `midihub panic` needs --token",
            path,
            error.strerror or error,
        )
    return token


def _read_token(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "r", encoding="utf-8") as file:
            token = file.read(256).strip()
    except (OSError, UnicodeDecodeError) as error:
        log.warning("cannot read the token file %s: %s; writing a new one", path, error)
        return None
    return token if len(token) >= 8 and token.isprintable() else None


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` atomically as a 0600 file, never through a planted symlink."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            fd = -1
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)  # replaces a symlink itself, never its target
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def fast_loop() -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop where installed, the standard loop otherwise (both are supported): its
    name and a factory for ``asyncio.Runner`` (no deprecated loop policies)."""
    try:
        import uvloop
    except ImportError:
        return "asyncio", asyncio.new_event_loop
    return "uvloop", uvloop.new_event_loop
