"""The hub's web side: JSON API (and dashboard), served from the hub's own loop.

Its names load on first use (PEP 562): importing ``midihub.web.errors`` (``serve``
catches ``WebError``) must not load aiohttp and prometheus-client, 13.6 MiB of idle
RSS that a hub with ``[web] listen = ""`` never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from midihub.web.api import Api, openapi_document
    from midihub.web.server import WebServer

__all__ = ["Api", "WebServer", "openapi_document"]

_HOMES = {
    "Api": "midihub.web.api",
    "openapi_document": "midihub.web.api",
    "WebServer": "midihub.web.server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
