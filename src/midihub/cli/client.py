"""Talks to a running hub's JSON API for the client commands (``status``, ``panic``,
``monitor``, ``record``).

Plain ``urllib``: a CLI call is one request, and the hub may be on another machine.
Nothing here imports the server: a client command starts in a fraction of a second.
"""

from __future__ import annotations

import http.client
import json
import os
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_WEB = "127.0.0.1:8080"
# The file `midihub serve` reads when given no --config (midihub.config.SEARCH_PATHS[0]);
# the legacy midiports JSON it also reads names no web address.
CONFIG_FILE = "midihub.toml"
# The file `midihub serve` writes a generated token to (midihub.app.TOKEN_FILE; a test
# holds the two equal): named here so reading it does not import the server.
TOKEN_FILE = "midihub.token"


POINT = "--web HOST:PORT, MIDIHUB_WEB or [web] listen in ./midihub.toml (or --config FILE)"


class HubError(Exception):
    """Talking to the hub failed; :func:`midihub.cli.errors.hub_errors` says why."""


class HubUnreachable(HubError):
    """No hub answers at the address; the message says what to try."""


class HubBadAnswer(HubError):
    """Something answered, but not as a midihub hub does (the body is not JSON)."""


class HubRefused(HubError):
    """The hub answered with an error (HTTP status and its message); ``token`` is the
    one the request carried, for a 401 to say where it came from."""

    def __init__(self, status: int, message: str, token: Token | None = None) -> None:
        self.status = status
        self.token = token
        super().__init__(message)


@dataclass(frozen=True)
class Token:
    """A token and where it was found (``--token``, a file…), for the error that says
    the hub did not take it."""

    value: str
    origin: str


class HubConfigError(HubError):
    """The configuration file that should name the hub's address cannot be used."""


@dataclass(frozen=True)
class Hub:
    """Where a client command finds its hub, and who said so (for the error that says
    nobody answers there)."""

    url: str
    origin: str
    token: Token | None = None  # [web] token of the configuration the address came from


def base_url(web: str) -> str:
    if "://" not in web:
        web = f"http://{web}"
    return web.rstrip("/")


def find_hub(web: str | None = None, config: str | None = None) -> Hub:
    """``--web``, else $MIDIHUB_WEB, else ``[web] listen`` of the configuration
    (``--config``, or ./midihub.toml when there is one: what ``midihub serve`` started
    here would listen on), else the default."""
    if web:
        return Hub(base_url(web), "--web")
    if os.environ.get("MIDIHUB_WEB"):
        return Hub(base_url(os.environ["MIDIHUB_WEB"]), "MIDIHUB_WEB")
    path = Path(config or CONFIG_FILE)
    if config is None and not path.is_file():
        return Hub(base_url(DEFAULT_WEB), "the default (no --web, MIDIHUB_WEB or ./midihub.toml)")
    section = _web_section(path)
    origin = (
        f"[web] listen in {path}"
        if "listen" in section
        else f"the default ({path} sets no [web] listen)"
    )
    listen = section.get("listen", DEFAULT_WEB)
    if not isinstance(listen, str):
        raise HubConfigError(f"{path}: [web] listen must be HOST:PORT, not {listen!r}")
    if not listen:
        raise HubConfigError(
            f'{path}: the hub\'s web port is off ([web] listen = ""); turn it on, or point '
            "at a hub with --web HOST:PORT or MIDIHUB_WEB"
        )
    host, _, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # any: here
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if section.get("tls_cert") else "http"
    token = section.get("token")
    secret = Token(token, f"[web] token in {path}") if isinstance(token, str) and token else None
    return Hub(f"{scheme}://{host}:{port}", origin, secret)


def _web_section(path: Path) -> dict[str, Any]:
    """The ``[web]`` table, read with tomllib alone (the client loads no pydantic)."""
    try:
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("{"):  # the legacy midiports JSON: groups only
            return {}
        data = tomllib.loads(text)
    except OSError as error:
        raise HubConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise HubConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise HubConfigError(
            f"{path}: TOML syntax: {error} (`midihub config check {path}` says more)"
        ) from None
    section = data.get("web", {})
    if not isinstance(section, dict):
        raise HubConfigError(f"{path}: web must be a table ([web])")
    return section


def find_token(
    token: str | None, token_file: str | None = None, hub: Hub | None = None
) -> Token | None:
    """--token, else $MIDIHUB_TOKEN, else --token-file, else the configuration's
    ``[web] token``, else the file a hub writes when it generates one."""
    if token:
        return Token(token, "--token")
    if os.environ.get("MIDIHUB_TOKEN"):
        return Token(os.environ["MIDIHUB_TOKEN"], "MIDIHUB_TOKEN")
    if token_file is None and hub is not None and hub.token:
        return hub.token
    path = Path(token_file or TOKEN_FILE)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Token(value, str(path)) if value else None


def request(
    hub: Hub,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    token: Token | None = None,
    timeout: float = 5.0,
    method: str | None = None,
    raw: bool = False,
) -> Any:
    """JSON in and out (``raw``: the response's bytes); POST when there is a body."""
    url = hub.url + path
    told = f"the address from {hub.origin}"
    data = None if body is None else json.dumps(body).encode()
    method = method or ("GET" if body is None else "POST")
    try:
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token.value}")
        with urllib.request.urlopen(req, timeout=timeout) as response:
            answer = response.read()
    except urllib.error.HTTPError as error:
        try:
            message = json.load(error).get("error", error.reason)
        except (ValueError, AttributeError):
            message = str(error.reason)
        raise HubRefused(error.code, message, token) from None
    except (urllib.error.URLError, OSError, ValueError, http.client.InvalidURL) as error:
        reason = getattr(error, "reason", error)  # ValueError, InvalidURL: a bad --web
        raise HubUnreachable(
            f"no hub answers at {hub.url} ({reason}), {told}; is `midihub serve` running? "
            f"Point at it with {POINT}."
        ) from None
    except http.client.HTTPException as error:  # a status line or body HTTP does not allow
        raise HubBadAnswer(
            f"the answer at {url} is not HTTP ({type(error).__name__}), {told}; is it a "
            f"midihub hub? Point at one with {POINT}."
        ) from None
    if raw:
        return answer
    try:
        return json.loads(answer)
    except ValueError as error:  # not JSON, or not UTF-8
        raise HubBadAnswer(
            f"the answer at {url} is not JSON ({error}), {told}; is it a midihub hub? "
            f"Point at one with {POINT}."
        ) from None
