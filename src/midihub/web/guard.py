"""What every web request passes before a handler sees it: the Host check against DNS
rebinding, security headers on every response, and no traceback ever reaching a
stranger (an unexpected error is a generic JSON 500, logged here). The guard also holds
the trusted proxies (``proxies.py``) that ``client_of`` asks whom a request is from."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from midihub.config import IPNetwork, is_loopback
from midihub.web.proxies import PROXIES, TrustedProxies

log = logging.getLogger("midihub.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
HSTS = "max-age=31536000"
"""Sent over HTTPS only: browsers that saw it use https:// for the hub's name for a year."""
MAX_BODY = 64 * 1024
"""Largest request body read (a panic request is a few dozen bytes)."""
HOST_CHARS = re.compile(r"[a-z0-9._:%-]{1,253}")
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})


@dataclass
class WebCounters:
    """Requests the web side refused or failed, for ``/metrics``."""

    refused_host: int = 0
    refused_token: int = 0
    bad_request: int = 0
    internal_error: int = 0


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def event_stream(request: web.Request) -> web.StreamResponse:
    """A prepared Server-Sent Events response (no proxy buffering, no caching)."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx would hold the events back otherwise
        }
    )
    await response.prepare(request)
    return response


def host_name(header: str) -> str | None:
    """The name in a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lower
    case without a trailing dot; None when it cannot be a host."""
    header = header.strip().lower()
    if header.startswith("["):
        name, sep, rest = header[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, _, port = header.partition(":")
        if port and not (port.isascii() and port.isdigit()):
            return None
    name = name.rstrip(".")
    return name if HOST_CHARS.fullmatch(name) else None


class Guard:
    """The middlewares and the response hook, sharing one set of counters."""

    def __init__(
        self,
        hosts: Iterable[str] = (),
        bind: str = "127.0.0.1",
        trusted_proxies: Iterable[IPNetwork] = (),
    ) -> None:
        self.counters = WebCounters()
        self.proxies = TrustedProxies(tuple(trusted_proxies))
        allowed = {h.lower().strip("[]").rstrip(".") for h in hosts}
        bind = bind.lower().strip("[]")
        if bind not in WILDCARD_BINDS:
            allowed.add(bind)  # a specific bind address is reached by that address
        self.hosts = frozenset(allowed)

    def install(self, app: web.Application) -> None:
        app[PROXIES] = self.proxies
        app.middlewares.append(self.errors)
        app.middlewares.append(self.host_check)
        app.on_response_prepare.append(self._headers)

    def host_allowed(self, header: str | None) -> bool:
        name = host_name(header) if header else None
        return name is not None and (is_loopback(name) or name in self.hosts)

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as http:
            if http.status >= 500:
                raise
            if http.status in (400, 413, 415):
                self.counters.bad_request += 1
            raise
        except (ConnectionResetError, web.RequestPayloadError):
            raise
        except Exception:
            self.counters.internal_error += 1
            log.exception("unexpected error answering %s %s", request.method, request.rel_url)
            return error(500, "internal error; the hub's log has the details")
        if response.status == 400:
            self.counters.bad_request += 1
        return response

    @web.middleware
    async def host_check(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.host_allowed(request.headers.get("Host")):
            self.counters.refused_host += 1
            return error(
                421,
                "this hub does not answer to that Host name; its admin can add the name "
                "to [web] hosts",
            )
        return await handler(request)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.secure:
            response.headers.setdefault("Strict-Transport-Security", HSTS)


def loads(body: bytes) -> Any:
    """A request body as JSON, or ValueError saying plainly what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8 text") from None

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except RecursionError:
        raise ValueError("the JSON body is nested too deeply") from None
    except json.JSONDecodeError as problem:
        raise ValueError(f"the body is not JSON ({problem.msg} at {problem.pos})") from None


def parse_number(text: str, digits: int) -> int | None:
    """A whole number of at most ``digits`` ASCII digits (no sign, no other scripts'
    digits, nothing huge to convert), else None."""
    if not 0 < len(text) <= digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def parse_port(text: str) -> int | None:
    """A port number from ASCII digits, else None."""
    return parse_number(text, 5)


def shorten(value: object, limit: int = 40) -> str:
    """``repr`` of something a stranger sent, cut short for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; ValueError (a 400) or HTTPException otherwise."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps(
                {"error": "control actions take a JSON body (Content-Type: application/json)"}
            ),
            content_type="application/json",
        )
    data = loads(await request.read())
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data
