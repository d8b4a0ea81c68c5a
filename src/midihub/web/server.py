"""Runs the aiohttp application inside the hub's event loop, over HTTPS when given a
certificate, behind the connection gate (``connections.py``)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from midihub.web.connections import LOW_CAP, ConnectionLimits, ConnectionsCollector, Gate
from midihub.web.errors import WebError

log = logging.getLogger("midihub.web")
BACKLOG = 128


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context holding ``cert``/``key`` (PEM); ``reload_tls`` refreshes it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_chain(context, cert, key)
    return context


def load_chain(context: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or error
        raise WebError(
            getattr(error, "errno", None) or 0,
            f"cannot use the TLS certificate {cert} with key {key}: {reason}",
        ) from None


async def listen(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets for ``host``, one per address it names (SO_REUSEADDR;
    IPv6 ones v6-only, as asyncio's ``create_server`` made them)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, _, _, _, address in dict.fromkeys(infos):
            sock = socket.create_server(address, family=family, backlog=BACKLOG)
            sockets.append(sock)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class WebServer:
    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        limits: ConnectionLimits | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.ssl_context: ssl.SSLContext | None = None
        self.gate = Gate(limits or ConnectionLimits())
        app.middlewares.insert(0, self.gate.track)
        if registry is not None:
            registry.register(ConnectionsCollector(self.gate))
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        # handler_cancellation: a viewer that hangs up ends its stream at once (and
        # frees its place under the viewer caps), not at the next write.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            handler_cancellation=True,
        )

    async def start(self) -> None:
        if self.tls_cert is not None and self.tls_key is not None:
            self.ssl_context = tls_context(self.tls_cert, self.tls_key)
        await self._runner.setup()
        # The gate, not aiohttp, accepts: it admits or refuses each connection (and runs
        # the TLS handshake) before handing it to aiohttp's protocol.
        self.gate.ssl_context = self.ssl_context
        self.gate.handler_factory = self._runner.server
        loop = asyncio.get_running_loop()
        try:
            self._listeners = await listen(self.host, self.port)
        except OSError as error:
            await self._runner.cleanup()
            raise WebError(
                error.errno or 0,
                f"cannot open the web port {self.host}:{self.port}: {error.strerror or error}",
            ) from None
        if self.port == 0:  # tests ask for any free port
            self.port = int(self._listeners[0].getsockname()[1])
        self._accepting = [loop.create_task(self.gate.serve(s)) for s in self._listeners]
        cap = self.gate.limits.total()
        if cap < LOW_CAP:
            log.warning(
                "the web port can hold only %d connections at this open-file limit; raise "
                "it (ulimit -n, systemd LimitNOFILE)",
                cap,
            )

    def reload_tls(self) -> None:
        """Read the certificate and key again into the live context: connections made
        from now on get the renewed certificate, open ones keep theirs. WebError (and
        the old certificate stays) when the files cannot be used."""
        if self.ssl_context is None or self.tls_cert is None or self.tls_key is None:
            return
        tls_context(self.tls_cert, self.tls_key)  # a mismatched pair must not half-load
        load_chain(self.ssl_context, self.tls_cert, self.tls_key)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}/"

    async def close(self) -> None:
        for task in self._accepting:  # accept no more
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        await self._runner.cleanup()  # ends aiohttp's connections (requests get 1 s)
        self.gate.close()  # and whatever is left: handshakes, slow readers
