"""The admin's log of joins and leaves, rate-limited per source.

Every participant's arrival and departure is worth a line, until one source turns
them into a flood (a browser reconnecting in a loop wrote 74 KB/s of log). Each
source (an IPv4 address or IPv6 /64, as the per-source limits count) may write
``lines`` of them per ``window`` seconds; the rest are counted and, when its window
ends, summed up in one "… and N more" line. At most ``max_sources`` sources are
tracked at once (only those active in the last window); beyond them, everyone else
shares one budget, so churning through addresses cannot grow the tracker or the log.
Names are cleaned by the sessions and guests before they reach here; the source is
an address we formatted ourselves.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from midihub.hub.endpoint import Endpoint
from midihub.hub.hub import display_address
from midihub.rtp import (
    Event,
    LatencyMeasured,
    NotesReleased,
    PacketsLost,
    PeerJoined,
    PeerLeft,
    Who,
)
from midihub.rtp.limits import source_key

WINDOW: Final = 10.0  # seconds
LINES: Final = 5  # join/leave lines per source per window
MAX_SOURCES: Final = 256
OTHERS: Final = "other addresses"  # the shared budget past ``max_sources``


class Timer(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Timer]


@dataclass(slots=True)
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


def describe(who: Who) -> str:
    return f"{who.name or '(unnamed)'!r} from {display_address(who.address)}"


class JoinLog:
    """A hub listener (``listener``) writing joins and leaves to ``log``. ``clock`` gives
    the time; with ``call_later`` (the event loop's), a window's summary is written as
    the window ends, else with the next line or at ``close``."""

    def __init__(
        self,
        log: logging.Logger,
        clock: Callable[[], float],
        call_later: CallLater | None = None,
        *,
        window: float = WINDOW,
        lines: int = LINES,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.log = log
        self.clock = clock
        self.call_later = call_later
        self.window = window
        self.lines = lines
        self.max_sources = max_sources
        self.suppressed = 0  # lines not written, all sources, since the start
        # By window start, so the first one ends first (OTHERS may be one more).
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._timer: Timer | None = None

    @property
    def tracked(self) -> int:
        """Sources with an open window (at most ``max_sources`` + 1)."""
        return len(self._windows)

    def listener(self, endpoint: Endpoint, event: Event) -> None:
        where = f"{endpoint.label} :{endpoint.port}"
        if isinstance(event, PeerJoined):
            if self._allowed(event.who):
                self.log.info("%s: %s joined", where, describe(event.who))
        elif isinstance(event, PeerLeft):
            if not self._allowed(event.who):
                return
            if not event.joined:
                self.log.warning(
                    "%s: invitation to %s failed (%s)", where, describe(event.who), event.reason
                )
            else:
                self.log.info("%s: %s left (%s)", where, describe(event.who), event.reason)
        elif isinstance(event, LatencyMeasured):
            self.log.debug("%s: %s rtt %.1f ms", where, describe(event.who), event.rtt * 1000)
        elif isinstance(event, PacketsLost):
            self.log.debug("%s: %s lost %d packet(s)", where, describe(event.who), event.count)
        elif isinstance(event, NotesReleased) and self._allowed(event.who):
            self.log.info(
                "%s: released %d note(s) %s still held since a loss nothing repaired",
                where,
                len(event.release),
                describe(event.who),
            )

    def _allowed(self, who: Who) -> bool:
        now = self.clock()
        self.summarize(now)
        source = source_key(who.address[0] if who.address else "")[:64]
        if not source.isprintable():  # an address we did not parse (a guest's transport)
            source = "?"
        windows = self._windows
        entry = windows.get(source)
        if entry is None:
            if len(windows) >= self.max_sources:
                source = OTHERS
                entry = windows.get(source)
            if entry is None:
                entry = windows[source] = _Window(now)
        if entry.logged < self.lines:
            entry.logged += 1
            return True
        entry.suppressed += 1
        self.suppressed += 1
        self._arm(now)
        return False

    def summarize(self, now: float) -> None:
        """Close the windows that ended by ``now``, writing the summary of each that
        held lines back."""
        windows = self._windows
        while windows:
            source, entry = next(iter(windows.items()))
            if entry.start + self.window > now:
                break
            del windows[source]
            self._summary(source, entry)

    def _summary(self, source: str, entry: _Window) -> None:
        if entry.suppressed:
            self.log.info(
                "joins and leaves from %s: … and %d more in %g s",
                source,
                entry.suppressed,
                self.window,
            )

    def _arm(self, now: float) -> None:
        """One timer, for the end of the first window holding lines back."""
        if self.call_later is None or self._timer is not None:
            return
        for entry in self._windows.values():
            if entry.suppressed:
                delay = max(entry.start + self.window - now, 0.0)
                self._timer = self.call_later(delay, self._fire)
                return

    def _fire(self) -> None:
        self._timer = None
        now = self.clock()
        self.summarize(now)
        self._arm(now)

    def close(self) -> None:
        """The summaries of every open window, now (shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        windows, self._windows = self._windows, OrderedDict()
        for source, entry in windows.items():
            self._summary(source, entry)
