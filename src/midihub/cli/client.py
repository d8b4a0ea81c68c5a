"""Talks to a running hub's JSON API for the ``status`` and ``panic`` commands.

Plain ``urllib``: a CLI call is one request, and the hub may be on another machine.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_WEB = "127.0.0.1:8080"


class HubUnreachable(Exception):
    """No hub answers at the address; the message says what to try."""


class HubRefused(Exception):
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
    from midihub.app import TOKEN_FILE

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
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.read() if raw else json.load(response)
    except urllib.error.HTTPError as error:
        try:
            message = json.load(error).get("error", error.reason)
        except (ValueError, AttributeError):
            message = str(error.reason)
        raise HubRefused(error.code, message) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise HubUnreachable(
            f"no hub answers at {base_url(web)} ({reason}); is `midihub serve` running? "
            "Point at it with --web HOST:PORT or MIDIHUB_WEB."
        ) from None
