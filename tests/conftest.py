"""Test-wide settings and fixtures.

- Every async test runs on the standard asyncio loop and, where installed, on uvloop.
- Hypothesis is derandomized (the same examples every run) and has no deadline: a
  busy machine must not fail a test. ``HYPOTHESIS_PROFILE=explore`` searches afresh.
- A failing test's report lists the seeds of the generators it used (tests/seeds.py).
- The harness fixtures (a running hub, peers, proxies) are in tests/fixtures.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Generator, Iterator, Mapping

import pytest
from hypothesis import settings

from tests import seeds

pytest_plugins = ["tests.fixtures", "tests.pg"]

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the dev extra
    uvloop = None

settings.register_profile("repeatable", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


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


@pytest.fixture(autouse=True)
def _seeds_of_this_test() -> Iterator[None]:
    seeds.used.clear()
    yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and seeds.used:
        lines = [f"{what or 'rng'}: seed {seed!r}" for what, seed in dict.fromkeys(seeds.used)]
        report.sections.append(("random seeds used", "\n".join(lines)))
    return report
