"""Talks to a running hub's JSON API for the client commands (``status``, ``panic``,
``monitor``, ``record``).

Plain ``urllib``: a CLI call is one request, and the hub may be on another machine.
Nothing here imports the server: a client command starts in a fraction of a second.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_WEB = "127.0.0.1:8080"
# The file `midihub serve` writes a generated token to (midihub.app.TOKEN_FILE; a test
# holds the two equal): named here so reading it does not import the server.
TOKEN_FILE = "midihub.token"


class HubError(Exception):
    """Talking to the hub failed; :func:`midihub.cli.errors.hub_errors` says why."""


class HubUnreachable(HubError):
    """No hub answers at the address; the message says what to try."""


class HubBadAnswer(HubError):
    """Something answered, but not as a midihub hub does (the body is not JSON)."""


class HubRefused(HubError):
    """The hub answered with an error (HTTP status and its message)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def base_url(web: str | None) -> str:
    web = web or os.environ.get("MIDIHUB_WEB") or DEFAULT_WEB
    if "://" not in web:
        web = f"http://{web}"
    return web.rstrip("/")


def find_token(token: str | None, token_file: str | None = None) -> str | None:
    """--token, else $MIDIHUB_TOKEN, else the file a hub writes when it generates one."""
    if token:
        return token
    if os.environ.get("MIDIHUB_TOKEN"):
        return os.environ["MIDIHUB_TOKEN"]
    path = Path(token_file or TOKEN_FILE)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def request(
    web: str | None,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    timeout: float = 5.0,
    method: str | None = None,
    raw: bool = False,
) -> Any:
    """JSON in and out (``raw``: the response's bytes); POST when there is a body."""
    url = base_url(web) + path
    data = None if body is None else json.dumps(body).encode()
    method = method or ("GET" if body is None else "POST")
    try:
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=timeout) as response:
            answer = response.read()
    except urllib.error.HTTPError as error:
        try:
            message = json.load(error).get("error", error.reason)
        except (ValueError, AttributeError):
            message = str(error.reason)
        raise HubRefused(error.code, message) from None
    except (urllib.error.URLError, OSError, ValueError, http.client.InvalidURL) as error:
        reason = getattr(error, "reason", error)  # ValueError, InvalidURL: a bad --web
        raise HubUnreachable(
            f"no hub answers at {base_url(web)} ({reason}); is `midihub serve` running? "
            "Point at it with --web HOST:PORT or MIDIHUB_WEB."
        ) from None
    except http.client.HTTPException as error:  # a status line or body HTTP does not allow
        raise HubBadAnswer(
            f"the answer at {url} is not HTTP ({type(error).__name__}); is it a midihub hub? "
            "Point at one with --web HOST:PORT or MIDIHUB_WEB."
        ) from None
    if raw:
        return answer
    try:
        return json.loads(answer)
    except ValueError as error:  # not JSON, or not UTF-8
        raise HubBadAnswer(
            f"the answer at {url} is not JSON ({error}); is it a midihub hub? "
            "Point at one with --web HOST:PORT or MIDIHUB_WEB."
        ) from None
