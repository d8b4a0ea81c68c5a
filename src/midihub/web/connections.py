"""The web port's connections, bounded as the UDP ports bound their sessions.

aiohttp reads a request head for as long as the client likes and accepts connections
until the process runs out of file descriptors, and then every page, the API and
``/play`` fail. So the ``Gate`` accepts, and each TCP connection passes it before
aiohttp (or, with HTTPS, the TLS handshake) sees it:

- a per-source cap (an IPv4 address, an IPv6 /64) refuses the excess at once. A
  trusted reverse proxy (``[web] trusted_proxies``) is exempt: every browser behind it
  shares its address, so a per-source cap would cap the whole site; the total cap
  still holds its connections, and the request-level per-address limits count the
  clients its headers name (``proxies.py``);
- a total cap, kept below the open-file limit (``connection_cap``), makes room by
  closing the connection that has waited longest for a request head; only when every
  connection is serving a request is a newcomer refused;
- a connection that has not sent a whole request head within ``header_timeout`` of
  connecting, or of its last response (an idle keep-alive), is closed. The TLS
  handshake runs after admission, so it counts against the caps and the timeout too.

A connection is *busy* from the moment aiohttp hands a request to the application (the
``track`` middleware) until that request's task ends, which is after its response has
been written: a long download, an SSE stream or a WebSocket is never cut by the timer.
But one whose client reads nothing of it (the hub's writes wait ``write_timeout``) is
closed, so a busy connection cannot be held by not reading either.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from midihub.config import IPNetwork
from midihub.rtp.limits import SourceCounts, source_key
from midihub.web.guard import Handler
from midihub.web.proxies import trusted

log = logging.getLogger("midihub.web")

HEADER_TIMEOUT = 10.0
WRITE_TIMEOUT = 30.0
PER_SOURCE = 64
CEILING = 4096
FD_RESERVE = 64
"""Descriptors kept for everything but web connections: stdio, the event loop, the
listening socket, SQLite and its journal, DNS-SD, a connection being refused."""
FDS_PER_PORT = 3
"""Per hub port pair: its two UDP sockets and a recording being written."""
LOW_CAP = 64
ACCEPT_RETRY = 0.1


def open_file_limit() -> int:
    """The process's soft RLIMIT_NOFILE (unlimited counts as 2**20)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def connection_cap(ports: int, ceiling: int = CEILING) -> int:
    """How many web connections may be open: half of what the open-file limit leaves
    after the reserve (a connection may hold a second descriptor, the file a static
    page or a recording is sent from), at most ``ceiling``, at least 8."""
    spare = open_file_limit() - FD_RESERVE - FDS_PER_PORT * ports
    return max(8, min(ceiling, spare // 2))


@dataclass(frozen=True)
class ConnectionLimits:
    """The web port's caps (``[web]``); ``ports`` is asked at each new connection, so
    hub ports a reload adds keep their descriptors."""

    per_source: int = PER_SOURCE
    header_timeout: float = HEADER_TIMEOUT
    write_timeout: float = WRITE_TIMEOUT
    """How long the hub's writes may wait for a client that reads nothing."""
    ceiling: int = CEILING
    ports: Callable[[], int] = lambda: 0
    """How many hub port pairs are open now (the total cap leaves descriptors for them)."""
    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Sources exempt from ``per_source`` (``[web] trusted_proxies``)."""

    def total(self) -> int:
        return connection_cap(self.ports(), self.ceiling)


@dataclass
class ConnectionCounters:
    """What the gate refused and closed, for ``/metrics``."""

    refused_per_source: int = 0
    refused_total: int = 0
    header_timeout: int = 0  # sent part of a request head (or TLS handshake), not all in time
    idle: int = 0  # sent nothing (after connecting or after a response) in time
    evicted: int = 0  # waiting for a request head when the total cap needed room
    tls_failed: int = 0  # the TLS handshake failed
    stalled: int = 0  # read nothing of what the hub sent for write_timeout


class Connection(asyncio.Protocol):
    """One accepted TCP connection: timed while it waits for a request head, and
    otherwise a pass-through to aiohttp's protocol (under TLS when serving HTTPS)."""

    def __init__(self, gate: Gate, source: str, sock: socket.socket | None) -> None:
        self.gate = gate
        self.source = source
        self.sock = sock  # until the transport takes it over
        self.task: asyncio.Task[None] | None = None  # making the transport (TLS handshake)
        self.transport: asyncio.Transport | None = None
        self.inner: asyncio.Protocol | None = None
        self.busy = 0  # requests being served
        self.partial = False  # bytes of a request head (or a handshake) came while waiting
        self.timer: asyncio.TimerHandle | None = None
        self.stall: asyncio.TimerHandle | None = None  # writes waiting on the client
        self.admitted = True

    # -- asyncio.Protocol, after any TLS handshake --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if not self.admitted:  # closed while the transport was being made
            self.transport.abort()
            return
        self.partial = False  # the handshake is done; the request head is next
        self.inner = self.gate.handler_for(self)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self.partial = True
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.stall is None and self.admitted:
            self.stall = asyncio.get_running_loop().call_later(
                self.gate.limits.write_timeout, self._stalled
            )
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.release(self)
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.connection_lost(exc)

    # -- the gate's side --

    def wait(self) -> None:
        """Start waiting for a request head: the timer runs, and the gate may evict."""
        self.partial = self.transport is None and self.gate.ssl_context is not None
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(
            self.gate.limits.header_timeout, self._timed_out
        )
        self.gate.waiting[self] = None

    def start_request(self) -> None:
        self.busy += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.gate.waiting.pop(self, None)

    def end_request(self, _: object = None) -> None:
        self.busy -= 1
        if not self.busy and self.admitted:
            self.wait()

    def _timed_out(self) -> None:
        self.timer = None
        if self.partial:
            self.gate.counters.header_timeout += 1
        else:
            self.gate.counters.idle += 1
        self.close()

    def _stalled(self) -> None:
        """A busy connection must not be held by a client that stopped reading."""
        self.stall = None
        self.gate.counters.stalled += 1
        self.close()

    def close(self) -> None:
        """Close at once (the descriptor is free on the next loop turn)."""
        self.gate.release(self)
        if self.transport is not None:
            self.transport.abort()
        elif self.task is not None:
            self.task.cancel()  # the loop closes the transport it was making
        if self.sock is not None:  # never handed over
            self.sock.close()
            self.sock = None


@dataclass
class Gate:
    """Accepts the web port's connections (``serve``), admits, times and closes them,
    and hands the others to aiohttp's protocol (``handler_factory``)."""

    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    ssl_context: ssl.SSLContext | None = None
    handler_factory: Callable[[], asyncio.Protocol] | None = None  # aiohttp's web.Server
    counters: ConnectionCounters = field(default_factory=ConnectionCounters)
    sources: SourceCounts = field(default_factory=SourceCounts)
    live: set[Connection] = field(default_factory=set)
    waiting: dict[Connection, None] = field(default_factory=dict)  # oldest first
    _by_handler: dict[object, Connection] = field(default_factory=dict)
    _accept_failed: bool = False

    async def serve(self, listener: socket.socket) -> None:
        """Accept on ``listener`` until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as error:
                # Out of descriptors or memory should not happen below the caps; wait
                # for some to free rather than spin. A connection reset before it
                # was accepted is nothing.
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if not self._accept_failed:
                        log.warning("the web port cannot accept a connection: %s", error)
                    self._accept_failed = True
                    await asyncio.sleep(ACCEPT_RETRY)
                continue
            self._accept_failed = False
            try:
                self.accept(sock, address)
            except Exception:  # a bug here must not stop the web port accepting
                log.exception("cannot admit a web connection")
                sock.close()

    def accept(self, sock: socket.socket, address: Any) -> None:
        host = address[0] if address else None
        source = source_key(host)
        if not self.admit(source, proxy=trusted(host, self.limits.trusted_proxies)):
            sock.close()
            return
        connection = Connection(self, source, sock)
        self.live.add(connection)
        self.sources.add(source)
        connection.wait()
        connection.task = asyncio.get_running_loop().create_task(self._connect(connection))

    def admit(self, source: str, *, proxy: bool = False) -> bool:
        if not proxy and self.sources.of(source) >= self.limits.per_source:
            self.counters.refused_per_source += 1
            return False
        if self.sources.total >= self.limits.total():
            if not self.waiting:
                self.counters.refused_total += 1
                return False
            self.counters.evicted += 1
            next(iter(self.waiting)).close()  # the one that has waited longest
        return True

    async def _connect(self, connection: Connection) -> None:
        sock, connection.sock = connection.sock, None
        assert sock is not None
        tls = self.ssl_context
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: connection,
                sock,
                ssl=tls,
                # The connection's own timer closes it first; this is a backstop.
                ssl_handshake_timeout=None if tls is None else self.limits.header_timeout + 1,
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # whatever a stranger's handshake did wrong
            if connection.admitted:
                if tls is not None:
                    self.counters.tls_failed += 1
                connection.close()
        finally:
            connection.task = None

    def release(self, connection: Connection) -> None:
        """Forget ``connection`` (once: every way of closing calls this)."""
        if not connection.admitted:
            return
        connection.admitted = False
        self.live.discard(connection)
        self.sources.remove(connection.source)
        self.waiting.pop(connection, None)
        for timer in (connection.timer, connection.stall):
            if timer is not None:
                timer.cancel()
        connection.timer = connection.stall = None
        if connection.inner is not None:
            self._by_handler.pop(connection.inner, None)

    def handler_for(self, connection: Connection) -> asyncio.Protocol:
        assert self.handler_factory is not None, "the gate serves once the runner is set up"
        inner = self.handler_factory()
        self._by_handler[inner] = connection
        return inner

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy until this request's task (which also writes the
        response) is done."""
        connection = self._by_handler.get(request.protocol)
        task = asyncio.current_task()
        if connection is not None and connection.admitted and task is not None:
            connection.start_request()
            task.add_done_callback(connection.end_request)
        return await handler(request)

    def close(self) -> None:
        """Close every connection still open (shutdown, once accepting has stopped)."""
        for connection in list(self.live):
            connection.close()


class ConnectionsCollector(Collector):
    """``/metrics`` for the web port's connections."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
        gate = self.gate
        yield GaugeMetricFamily(
            "midihub_web_connections", "Open connections to the web port.", value=gate.sources.total
        )
        yield GaugeMetricFamily(
            "midihub_web_connections_limit",
            "The total cap on web connections now (from the open-file limit).",
            value=gate.limits.total(),
        )
        counters = gate.counters
        refused = CounterMetricFamily(
            "midihub_web_connections_refused",
            "Web connections refused at once: per_ip (web.connections_per_ip), total (every "
            "connection was serving a request).",
            labels=["reason"],
        )
        refused.add_metric(["per_ip"], counters.refused_per_source)
        refused.add_metric(["total"], counters.refused_total)
        yield refused
        closed = CounterMetricFamily(
            "midihub_web_connections_closed",
            "Web connections the hub closed: header_timeout (part of a request head or "
            "TLS handshake, not all within web.header_timeout), idle (nothing within it), "
            "evicted (waiting for a request head when the total cap needed room), stalled "
            "(read nothing the hub wrote for 30 s), tls_failed.",
            labels=["reason"],
        )
        for reason, value in (
            ("header_timeout", counters.header_timeout),
            ("idle", counters.idle),
            ("evicted", counters.evicted),
            ("stalled", counters.stalled),
            ("tls_failed", counters.tls_failed),
        ):
            closed.add_metric([reason], value)
        yield closed
