"""Runs the aiohttp application inside the hub's event loop, over HTTPS when given a
certificate."""

from __future__ import annotations

import ssl

from aiohttp import web


class WebError(OSError):
    """The web port could not be opened, or its certificate not read; names which."""


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


class WebServer:
    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.ssl_context: ssl.SSLContext | None = None
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
        site = web.TCPSite(
            self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context
        )
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            raise WebError(
                error.errno, f"cannot open the web port {self.host}:{self.port}: {error.strerror}"
            ) from None
        if self.port == 0:  # tests ask for any free port
            addresses = self._runner.addresses
            if addresses:
                self.port = int(addresses[0][1])

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
        await self._runner.cleanup()
