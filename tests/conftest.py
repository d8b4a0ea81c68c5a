"""Test-wide settings and fixtures.

- Every async test runs on the standard asyncio loop and, where installed, on uvloop.
- Hypothesis is derandomized (the same examples every run) and has no deadline: a
  busy machine must not fail a test. ``HYPOTHESIS_PROFILE=explore`` searches afresh.
- A failing test's report lists the seeds of the generators it used (tests/seeds.py).
- The harness fixtures (a running hub, peers, proxies) are in tests/fixtures.py.
- ``make test`` runs the suite on pytest-xdist workers (``-n``, ``--dist loadfile``: a
  file's tests on one worker, so a module fixture is made once); each worker is its own
  session: a session-scoped fixture is made once per worker (keep what it makes in
  ``tmp_path_factory`` and on ``tests.ports`` ports, which are disjoint per worker).
- ``@pytest.mark.alone``: a test that measures time across processes runs with no other
  test beside it (the other workers wait); without xdist it changes nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path

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


def _flock(stack: ExitStack, path: Path, mode: int) -> None:
    handle = stack.enter_context(path.open("a"))
    fcntl.flock(handle, mode)  # released when the file closes


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Under xdist, an ``alone`` test holds the run's lock exclusively and every other
    test holds it shared, so an ``alone`` test waits for the tests running beside it and
    none starts until it ends. A gate taken first (and held by the waiting ``alone`` test)
    stops new tests from slipping in while it waits, so it is never starved. Outermost
    (tryfirst), so the wait counts neither in a test's timeout nor in its durations."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return (yield)
    # The run's directory (each worker's basetemp is a directory in it), as xdist finds it.
    shared = item.config._tmp_path_factory.getbasetemp().parent  # type: ignore[attr-defined]
    alone = item.get_closest_marker("alone") is not None
    with ExitStack() as held:
        with ExitStack() as gate:
            _flock(gate, shared / "alone-gate.lock", fcntl.LOCK_EX)
            if not alone:
                gate.close()
            _flock(held, shared / "alone.lock", fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and seeds.used:
        lines = [f"{what or 'rng'}: seed {seed!r}" for what, seed in dict.fromkeys(seeds.used)]
        report.sections.append(("random seeds used", "\n".join(lines)))
    return report
