"""Every async test runs on the standard asyncio loop and, where installed, on uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the dev extra
    uvloop = None


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    # The browser tests drive Chromium: once, on the standard loop, is what they need.
    if uvloop is not None and item.get_closest_marker("browser") is None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories
