"""Join and leave lines are rate-limited per source, summed up in "… and N more" when
the window ends, and the tracker stays bounded whatever the address churn."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence

import pytest

from midihub import config as c
from midihub.app import App
from midihub.hub import Guest, Hub
from midihub.hub.joinlog import LINES, MAX_SOURCES, OTHERS, JoinLog
from midihub.rtp import Command, LeaveReason
from tests.support import free_tcp_port, wait_for


class Player(Guest):
    """A participant from ``host`` that joins and leaves (a browser reconnecting)."""

    transport = "test"

    def __init__(self, host: str, name: str = "loop") -> None:
        super().__init__(name, (host, 4242), 0.0)

    def deliver(self, commands: Sequence[Command], now: float) -> None:
        pass

    def close(self, reason: LeaveReason) -> None:
        pass


class Clock:
    """Time by hand, and the timers ``call_later`` armed (fired by ``advance``)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None], Clock.Handle]] = []

    class Handle:
        def __init__(self) -> None:
            self.cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    def call_later(self, delay: float, callback: Callable[[], None]) -> Clock.Handle:
        handle = Clock.Handle()
        self.timers.append((self.now + delay, callback, handle))
        return handle

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t[0] <= self.now]
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, callback, handle in due:
            if not handle.cancelled:
                callback()


ROOM = "[rooms]\nJam = 5060\n"


def cycle(hub: Hub, host: str, now: float, times: int = 1) -> None:
    for _ in range(times):
        player = Player(host)
        assert hub.admit(5060, player, now) is None
        hub.depart(player, LeaveReason.CLOSED, now)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "midihub.test"]


def setup(caplog: pytest.LogCaptureFixture, **options: int) -> tuple[Hub, Clock, JoinLog]:
    caplog.set_level(logging.INFO, logger="midihub.test")
    hub = Hub(c.parse(ROOM).spec())
    clock = Clock()
    log = JoinLog(logging.getLogger("midihub.test"), lambda: clock.now, clock.call_later, **options)
    hub.listeners.append(log.listener)
    return hub, clock, log


def test_a_flooding_source_gets_a_few_lines_then_one_summary_as_its_window_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub, clock, log = setup(caplog)
    cycle(hub, "203.0.113.5", clock.now, 1000)
    cycle(hub, "198.51.100.9", clock.now)  # another source keeps its own budget
    written = lines(caplog)
    assert len(written) == LINES + 2
    assert written[0] == "Jam :5060: 'loop' from 203.0.113.5:4242 joined"
    assert written[1] == "Jam :5060: 'loop' from 203.0.113.5:4242 left (closed)"
    assert written[-1] == "Jam :5060: 'loop' from 198.51.100.9:4242 left (closed)"
    clock.advance(log.window - 0.1)
    assert len(lines(caplog)) == LINES + 2  # not before the window ends
    clock.advance(0.1)  # the timer, with no further event
    assert lines(caplog)[LINES + 2 :] == [
        f"joins and leaves from 203.0.113.5: … and {2000 - LINES} more in 10 s"
    ]
    assert log.tracked == 0  # both windows closed (the quiet one without a summary)
    cycle(hub, "203.0.113.5", clock.now)  # a new window: lines again
    assert lines(caplog)[-1].endswith("left (closed)")


def test_an_ipv6_host_counts_as_one_source_per_64(caplog: pytest.LogCaptureFixture) -> None:
    hub, clock, log = setup(caplog)
    for index in range(100):
        cycle(hub, f"2001:db8:0:1::{index:x}", clock.now)
    assert len(lines(caplog)) == LINES and log.tracked == 1
    log.close()
    assert lines(caplog)[-1] == (
        f"joins and leaves from 2001:db8:0:1::/64: … and {200 - LINES} more in 10 s"
    )


def test_address_churn_shares_one_budget_past_the_tracked_sources(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub, clock, log = setup(caplog, max_sources=MAX_SOURCES)
    for index in range(10_000):  # each a new address, one cycle each
        cycle(hub, f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", clock.now)
    assert log.tracked == MAX_SOURCES + 1  # and OTHERS
    # The first MAX_SOURCES got their lines (2 each: within LINES); everyone else: LINES.
    assert len(lines(caplog)) == 2 * MAX_SOURCES + LINES
    clock.advance(log.window)
    summary = f"joins and leaves from {OTHERS}: … and {2 * (10_000 - MAX_SOURCES) - LINES} more"
    assert lines(caplog)[-1].startswith(summary)
    assert log.tracked == 0


def test_names_with_control_characters_stay_one_inert_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub, clock, _ = setup(caplog)
    player = Player("203.0.113.5", "evil\x1b[2J\nforged")
    assert hub.admit(5060, player, clock.now) is None
    (line,) = lines(caplog)
    assert line.isprintable() and "\\x1b" in line and "\\n" in line


async def test_the_running_hub_logs_a_join_leave_loop_in_a_few_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="midihub")
    web = f"[web]\nlisten = '127.0.0.1:{free_tcp_port()}'\n"
    config = c.parse(web + "[mdns]\nenabled = false\n" + ROOM, "<test>", "127.0.0.1")
    app = App(config, None, "127.0.0.1", db=":memory:")
    app.join_log.window = 0.5
    running = asyncio.create_task(app.run())
    try:
        await wait_for(lambda: app.ready, 10, "the hub")
        loop = asyncio.get_running_loop()
        cycle(app.hub, "203.0.113.5", loop.time(), 1000)
        # The windows follow the loop's clock: on a busy machine the 2000 joins and leaves
        # may span more than one 0.5 s window, each with its LINES lines and its summary.
        counted = re.compile(r"joins and leaves from 203\.0\.113\.5: … and (\d+) more in 0\.5 s")

        def said() -> list[str]:
            return [r.getMessage() for r in caplog.records if "203.0.113.5" in r.getMessage()]

        def suppressed() -> list[int]:
            return [int(m.group(1)) for line in said() if (m := counted.fullmatch(line))]

        def accounted() -> int:  # every join and leave: written, or counted in a summary
            return len(said()) - len(suppressed()) + sum(suppressed())

        await wait_for(lambda: accounted() == 2000, 10, "the summaries")
        windows = len(suppressed())
        assert 1 <= windows < 30  # even at a tenth of the usual speed, a few lines
        # each window: LINES lines and its summary (the last may have no summary)
        assert len(said()) <= (LINES + 1) * (windows + 1)
        assert app.api is not None  # what /metrics serves:
        metrics = app.api.metrics.render().decode()
        assert f"midihub_log_lines_suppressed_total {sum(suppressed())}.0" in metrics
    finally:
        app.stop()
        await asyncio.wait_for(running, 15)
