"""``midihub monitor PORT``: a terminal MIDI monitor attached to a running hub.

It reads the hub's ``/api/monitor`` Server-Sent Events stream (the dashboard's
feed), so it works from any machine that can reach the web port and needs no
MIDI driver. The view is pure functions of a ``View`` state, so it is tested
without a terminal; the IO around it is small.

Names, labels and message text come from the network: each is shown through
:func:`~midihub.cli.printable.printable` and as a ``Text``, never as markup, so a name
like ``[/x]`` or one holding escape sequences or newlines is displayed, on one line,
and does nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import termios
import tty
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import aiohttp
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from midihub.cli.errors import CommandError
from midihub.cli.printable import MESSAGE_WIDTH, printable
from midihub.midi.notes import note_name

HELD_STYLE = "bold black on bright_green"
LOG_LINES = 200
QUIET_KINDS = {"clock", "active_sensing"}  # counted, not logged: they come 24 per beat
SYSEX_SHOWN = 16  # first bytes of a SysEx shown (a newer hub sends no more)
TITLE_NAMES = 8  # participants named in the screen's title; the rest are counted


class MonitorError(CommandError):
    """The monitor cannot start or goes on no longer; ``code`` is the exit status."""


def resolve_port(ports: list[dict[str, Any]], wanted: str) -> int:
    """A hub port by number, by label (``"GroupOne in"``) or by group/room name
    (a group means its ``in`` port: what its players send)."""
    if wanted.isdigit():
        if any(p["port"] == int(wanted) for p in ports):
            return int(wanted)
    else:
        key = wanted.casefold()
        for p in ports:
            if p["label"].casefold() == key:
                return int(p["port"])
        for p in ports:
            if p["owner"].casefold() == key and p["role"] in ("in", "room"):
                return int(p["port"])
    known = ", ".join(f"{p['port']} ({printable(p['label'])})" for p in ports) or "none"
    raise MonitorError(f"the hub has no port {wanted!r}; its ports: {known}", 2)


@dataclass
class View:
    """What the monitor shows: the held state the hub reports, and a log."""

    port: int = 0
    label: str = ""
    held: list[dict[str, Any]] = field(default_factory=list)
    participants: list[dict[str, Any]] = field(default_factory=list)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    clock: int = 0  # real-time messages counted, not logged
    messages: int = 0

    def apply(self, event: str, data: dict[str, Any]) -> list[str]:
        """Take one stream event; returns the lines ``--plain`` prints for it."""
        lines: list[str] = []
        if event == "snapshot":
            self.port, self.label = int(data["port"]), printable(data["label"])
            lines = [f"{stamp(None)} -- monitoring port {self.port} ({self.label})"]
            lines += self._joins(data["participants"])
        elif event == "participants":
            lines = self._joins(data["participants"])
        elif event == "midi":
            for item in data["events"]:
                who = shown_name(item["from"])
                for message in item["messages"]:
                    self.messages += 1
                    kind = str(message.get("kind", ""))
                    if kind in QUIET_KINDS:
                        self.clock += 1
                        continue
                    line = f"{stamp(item['at'])} {who} {message_text(message)}"
                    lines.append(line)
                    if not kind.startswith("note_"):
                        self.log.append(line)
        elif event == "panic":
            lines = [f"{stamp(data['at'])} -- {printable(data['text'], MESSAGE_WIDTH)}"]
            self.log.extend(lines)
        if "held" in data:
            self.held = data["held"]
        return lines

    def _joins(self, now: list[dict[str, Any]]) -> list[str]:
        before = {p["id"]: p for p in self.participants}
        after = {p["id"]: p for p in now}
        self.participants = now
        lines = [
            f"{stamp(None)} -- joined: {shown_name(p)}" for i, p in after.items() if i not in before
        ]
        lines += [
            f"{stamp(None)} -- left: {shown_name(p)}" for i, p in before.items() if i not in after
        ]
        self.log.extend(lines)
        return lines

    def holders(self) -> dict[int, list[int]]:
        """note → the channels (1..16) holding it."""
        out: dict[int, list[int]] = {}
        for channel in self.held:
            for note in channel["notes"]:
                out.setdefault(note["note"], []).append(channel["channel"])
        return out


def shown_name(person: dict[str, Any]) -> str:
    """A participant's name (its id when it has none), safe to print."""
    return printable(person.get("name") or person.get("id") or "(unnamed)")


def message_text(message: dict[str, Any]) -> str:
    """One message as the log shows it. SysEx is its length and first bytes: an older
    hub sends every byte, a newer one the first 16 and the full ``length``."""
    data = message.get("bytes")
    if message.get("kind") == "sysex" and isinstance(data, list):
        length = message.get("length")
        if not isinstance(length, int):
            length = len(data)
        head = " ".join(
            f"{b:02x}" if isinstance(b, int) and 0 <= b <= 0xFF else "??"
            for b in data[:SYSEX_SHOWN]
        )
        more = " …" if length > min(len(data), SYSEX_SHOWN) else ""
        return f"sysex ({length} bytes) {head}{more}"
    return printable(message.get("text") or message.get("kind") or "?", MESSAGE_WIDTH)


def stamp(epoch: float | None) -> str:
    moment = datetime.now() if epoch is None else datetime.fromtimestamp(epoch)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def keyboard(view: View) -> Table:
    """All 128 notes, an octave per row; held ones highlighted with their channels."""
    holders = view.holders()
    table = Table(show_header=False, box=None, padding=(0, 1), expand=False)
    for _ in range(12):
        table.add_column(no_wrap=True, min_width=7)
    for octave_start in range(0, 128, 12):
        cells: list[Text] = []
        for note in range(octave_start, min(octave_start + 12, 128)):
            name = note_name(note)
            channels = holders.get(note)
            if channels:
                held = printable(f"{name}·{','.join(map(str, channels))}")
                cells.append(Text(held, style=HELD_STYLE))
            else:
                cells.append(Text(name, style="dim"))
        table.add_row(*cells)
    return table


def channel_lines(view: View) -> Text:
    text = Text()
    for channel in view.held:
        parts = [f"ch{channel['channel']}: {len(channel['notes'])} held"]
        if channel["sustain"]:
            parts.append("sustain down")
        if channel["sostenuto"]:
            parts.append("sostenuto down")
        if channel["bend"]:
            parts.append(f"bend {channel['bend']:+d}")
        text.append(printable("  ".join(parts), MESSAGE_WIDTH) + "\n")
    return text or Text("no notes held, pedals up, wheels centred", style="dim")


def render(view: View, log_lines: int = 12) -> Group:
    # The names go last: a panel title is cut at the screen's edge.
    names = [shown_name(p) for p in view.participants[:TITLE_NAMES]]
    if len(view.participants) > TITLE_NAMES:
        names.append("…")
    who = f"{len(view.participants)} here: {', '.join(names)}" if names else "nobody yet"
    title = Text(f"midihub monitor: port {view.port} {view.label} · q quits · {who}")
    log = Text("\n".join(list(view.log)[-log_lines:]) or "(no other events yet)")
    footer = Text(f"{view.messages} messages, {view.clock} clock/sensing counted")
    return Group(
        Panel(keyboard(view), title=title, title_align="left"),
        Panel(channel_lines(view), title="channels", title_align="left"),
        Panel(log, title="events", title_align="left", subtitle=footer),
    )


async def events(url: str, headers: dict[str, str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Server-Sent Events: (event, JSON data) as they arrive; comments are skipped."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(url, headers=headers) as response,
    ):
        if response.status != 200:
            raise MonitorError(f"the hub refused the monitor (HTTP {response.status})", 1)
        name, data = "message", list[str]()
        async for raw in response.content:
            line = raw.decode(errors="replace").rstrip("\r\n")
            if not line:
                if data:
                    yield name, json.loads("\n".join(data))
                name, data = "message", []
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
    raise MonitorError("the hub closed the stream (stopped or port removed)", 1)


@contextlib.contextmanager
def keys(on_key: Callable[[str], None]) -> Any:
    """Single keys from a terminal stdin (cbreak), restored on the way out."""
    stdin = sys.stdin
    if not stdin.isatty():
        yield
        return
    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()
    try:
        tty.setcbreak(fd)
        loop.add_reader(fd, lambda: on_key(os.read(fd, 32).decode(errors="ignore")))
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run(url: str, headers: dict[str, str], *, plain: bool, out: TextIO) -> None:
    """Until q, Ctrl-C or the end of the stream; a broken connection is a
    :class:`MonitorError` (exit 1)."""
    try:
        await _watch(url, headers, plain=plain, out=out)
    except (TimeoutError, OSError, aiohttp.ClientError) as error:
        reason = printable(str(error) or type(error).__name__, MESSAGE_WIDTH)
        raise MonitorError(f"lost the hub: {reason}", 1) from None


async def _watch(url: str, headers: dict[str, str], *, plain: bool, out: TextIO) -> None:
    view = View()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def follow(show: Callable[[list[str]], None]) -> None:
        async for name, data in events(url, headers):
            show(view.apply(name, data))

    def printed(lines: list[str]) -> None:
        for line in lines:
            print(line, file=out, flush=True)

    try:
        if plain:
            await _until(follow(printed), stop)
            return
        console = Console(file=out)
        with (
            Live(render(view), console=console, screen=True, auto_refresh=False) as live,
            keys(lambda k: stop.set() if "q" in k.lower() else None),
        ):
            await _until(follow(lambda _: live.update(render(view), refresh=True)), stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _until(job: Any, stop: asyncio.Event) -> None:
    task = asyncio.ensure_future(job)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, waiter):
        pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    with contextlib.suppress(asyncio.CancelledError):
        await task  # raises MonitorError or a connection error if the stream ended
