"""Hostile participant names against ``midihub status`` and ``midihub monitor``.

A name is chosen by whoever sends an IN. Shown in a terminal it must stay text:
no rich markup error (``[/x]``), no escape sequence or control byte reaching the
terminal (screen clear, window title, forged lines), one line per participant and
a bounded width. Two layers are tested: the real commands against a real hub (under
tmux, piped, ``--plain``), and the render functions fed API-shaped dicts directly,
since the hub may already clean names up and the CLI must not rely on that.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console

from midihub.cli.client import find_hub, request
from midihub.cli.monitor import MonitorError, View, message_text, render, resolve_port
from midihub.cli.printable import NAME_WIDTH, printable
from midihub.cli.status import render_status
from tests.fixtures import MakePeer
from tests.support import free_ports, joined, serving, wait_for
from tests.test_cli_monitor import MIDIHUB, STAMP, Tmux, plain_monitor, run_cli, tmux_session

HOSTILE = [
    "[/x]",
    "[bold red]x",
    "\x1b[2J",
    "\x1b]0;pwned\x07",
    "ding\x07",
    "a\n12:00:00.000 -- joined: admin",
    "ok\rEVIL",
    "\u202eevil",
    "h" * 20_000,
    "nul\x00byte",
    "\x9b2J c1\x85del\x7f",
]
# Each name starts with a tag, so its line can be found whatever the rest becomes.
NAMES = [f"<{i:02d}>{name}" for i, name in enumerate(HOSTILE)]
TITLE = "before-the-names"
ROWS, COLUMNS = 45, 150  # the pane tmux_session makes
JOINED = re.compile(r"│ \d\d:\d\d:\d\d\.\d{3} -- joined: .*")


def is_inert(text: str) -> bool:
    """Nothing but printable characters and line ends."""
    return all(char == "\n" or char.isprintable() for char in text)


def one_line_each(text: str, count: int = len(NAMES)) -> None:
    lines = text.splitlines()
    for i in range(count):
        tag = f"<{i:02d}>"
        assert sum(tag in line for line in lines) == 1, (tag, text)


def assert_literal(text: str) -> None:
    """The names as they must read: markup as typed, controls as escapes."""
    assert "<00>[/x]" in text and "<01>[bold red]x" in text
    assert "<02>\\x1b[2J" in text and "<03>\\x1b]0;pwned\\x07" in text
    assert "<05>a\\x0a12:00:00.000 -- joined: admin" in text
    assert "<06>ok\\x0dEVIL" in text and "<07>\\u202eevil" in text
    assert "<08>" + "h" * (NAME_WIDTH - 5) + "…" in text and "h" * NAME_WIDTH not in text


def person(i: int, name: str) -> dict[str, Any]:
    return {"id": f"5060-{i}", "name": name}


def latency_row(i: int, name: str) -> dict[str, Any]:
    return person(i, name) | {
        "port": 5060,
        "address": f"127.0.0.1:{6000 + i}",
        "connected": True,
        "connectedFor": 12.0,
        "lastLatency": 1.25,
        "averageLatency": 1.0,
        "minLatency": 0.5,
        "maxLatency": 2.0,
        "jitter": 0.1,
        "lossPercent": 0.0,
    }


@pytest.mark.parametrize("width", [80, 160])
def test_status_table_shows_each_hostile_name_literally_on_one_line(width: int) -> None:
    ports = [{"port": 5060, "label": "Jam", "participants": [person(0, "x")]}]
    ports.append({"port": 5070, "label": "Idle\x1b]0;pwned\x07[/x]", "participants": []})
    out = io.StringIO()
    rows = [latency_row(i, name) for i, name in enumerate(NAMES)]
    render_status(ports, rows, Console(file=out, width=width))
    text = out.getvalue()
    assert is_inert(text), repr(text)
    one_line_each(text)
    if width == 160:  # at 80 columns the name column is squeezed: tags are enough
        assert_literal(text)
        assert "no one on: 5070 Idle\\x1b]0;pwned\\x07[/x]" in text


def test_status_survives_names_that_are_not_text_or_absent() -> None:
    rows = [latency_row(0, "\ud800 lone surrogate"), latency_row(1, ""), latency_row(2, None)]  # type: ignore[arg-type]
    rows[1]["address"] = "\x1b[31mred"
    out = io.StringIO()
    console = Console(file=out, width=160)
    render_status([{"port": 5060, "label": "Jam", "participants": [1]}], rows, console)
    text = out.getvalue()
    assert is_inert(text) and "\\ud800 lone surrogate" in text and "\\x1b[31mred" in text
    assert text.count("(unnamed)") == 2


def monitor_events() -> list[tuple[str, dict[str, Any]]]:
    everyone = [person(i, name) for i, name in enumerate(NAMES)]
    messages = [
        {"kind": "control_change", "text": "control_change ch1 cc7=100"},
        {"kind": "weird\x1b]0;pwned\x07", "text": "forged\nline\x1b[2J[/x]"},
    ]
    midi = [{"at": 0.0, "from": p, "messages": messages} for p in everyone]
    # An impostor's held notes: channels are numbers from our hub, anything from another.
    channel = "1\x1b]0;pwned\x07"
    held = {"channel": channel, "notes": [{"note": 60}], "sustain": 1, "sostenuto": 0, "bend": 0}
    return [
        ("snapshot", {"port": 5060, "label": "Jam[/x]\x07", "participants": [], "held": []}),
        ("participants", {"participants": everyone}),
        ("midi", {"events": midi, "held": [held]}),
        ("participants", {"participants": []}),
    ]


def test_monitor_plain_lines_hold_one_inert_line_per_name() -> None:
    view = View()
    lines = [line for event, data in monitor_events() for line in view.apply(event, data)]
    assert all("\n" not in line and is_inert(line) for line in lines), lines
    text = "\n".join(lines)
    assert "-- monitoring port 5060 (Jam[/x]\\x07)" in text
    joined = "\n".join(line for line in lines if line[13:].startswith("-- joined: "))
    one_line_each(joined)
    assert_literal(joined)
    left = "\n".join(line for line in lines if line[13:].startswith("-- left: "))
    one_line_each(left)
    said = [line for line in lines if "forged" in line]
    assert len(said) == len(NAMES)
    assert all(line.endswith("forged\\x0aline\\x1b[2J[/x]") for line in said), said


@pytest.mark.parametrize("width", [60, 150])
def test_monitor_screen_renders_hostile_names_as_text(width: int) -> None:
    view = View()
    for event, data in monitor_events()[:3]:
        view.apply(event, data)
    out = io.StringIO()
    Console(file=out, width=width, height=45).print(render(view, log_lines=len(NAMES)))
    text = out.getvalue()
    assert is_inert(text), repr(text)
    assert "Jam[/x]\\x07" in text and "[/x]" in text
    assert "ch1\\x1b]0;pwned\\x07: 1 held" in text
    assert "C4·1\\x1b]0;pwned\\x07" in text or width < 100  # the keyboard's cells squeeze
    assert f"q quits · {len(NAMES)} here: <00>[/x], <01>[bold red]x" in text or width < 100
    assert all(cell_len(line) <= width for line in text.splitlines())


def test_monitor_port_list_in_an_error_is_inert() -> None:
    ports = [{"port": 5060, "label": "Jam\x1b]0;pwned\x07", "owner": "Jam", "role": "room"}]
    with pytest.raises(MonitorError) as caught:
        resolve_port(ports, "Nope")
    assert "5060 (Jam\\x1b]0;pwned\\x07)" in str(caught.value) and is_inert(str(caught.value))


def test_sysex_is_shown_by_length_and_first_bytes_in_old_and_new_monitor_json() -> None:
    whole = [0xF0, 0x7E, 0x7F, 0x06, 0x01, 0xF7]
    old = {"kind": "sysex", "bytes": whole, "text": "sysex (6 bytes)"}
    assert message_text(old) == "sysex (6 bytes) f0 7e 7f 06 01 f7"
    long_old = {"kind": "sysex", "bytes": [0xF0, *range(40), 0xF7], "text": "sysex (42 bytes)"}
    head = "f0 " + " ".join(f"{b:02x}" for b in range(15))
    assert message_text(long_old) == f"sysex (42 bytes) {head} …"
    new = {"kind": "sysex", "bytes": [0xF0, *range(15)], "length": 70_000, "text": "x\x1b"}
    assert message_text(new) == f"sysex (70000 bytes) {head} …"
    short_new = {"kind": "sysex", "bytes": whole, "length": 6, "text": "sysex (6 bytes)"}
    assert message_text(short_new) == "sysex (6 bytes) f0 7e 7f 06 01 f7"
    hostile = {"kind": "sysex", "bytes": ["\x1b", -1, 300], "length": "lots"}
    assert message_text(hostile) == "sysex (3 bytes) ?? ?? ??"


@given(st.text(max_size=200), st.integers(2, 80))
def test_printable_is_one_bounded_line_and_keeps_what_is_harmless(text: str, width: int) -> None:
    shown = printable(text, width)
    assert is_inert(shown) and "\n" not in shown
    assert cell_len(shown) <= width and len(shown) <= width
    if text.isprintable() and cell_len(text) <= width and len(text) <= width:
        assert shown == text
    if text and not text[0].isprintable() and width >= 12:
        digits = {"x": 2, "u": 4, "U": 8}[shown[1]]  # the escape reads back as the character
        assert shown[0] == "\\" and int(shown[2 : 2 + digits], 16) == ord(text[0])


# -- the real commands against a real hub ---------------------------------------


async def hub_names(web: str) -> list[str]:
    ports = (await asyncio.to_thread(request, find_hub(web), "/api/participants"))["ports"]
    return [p["name"] for port in ports for p in port["participants"]]


def no_terminal_controls(raw: str) -> None:
    """Output of a command as the terminal got it: rich's own styling aside, no control
    the names carried (OSC title, BEL, C1, bidi override, the carriage return)."""
    for bad in ("\x1b]", "\x07", "\x9b", "\x85", "\x7f", "\u202e", "\x00", "\rEVIL"):
        assert bad not in raw, (bad, raw[-2000:])


async def test_status_and_monitor_plain_piped_against_a_hub_with_hostile_names(
    make_peer: MakePeer,
) -> None:
    (port,) = free_ports(1)
    async with serving(f"[rooms]\nJam = {port}") as (_, url):
        web = url.removeprefix("http://")
        await joined(make_peer, port, *NAMES)
        shown = [printable(name) for name in await hub_names(web)]
        assert len(shown) == len(NAMES)
        done = await asyncio.to_thread(
            subprocess.run, [MIDIHUB, "status", "--web", web], capture_output=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        status = done.stdout.decode()
        assert is_inert(status), repr(status)
        one_line_each(status)
        assert all(name in status for name in shown), (shown, status)
        assert "<00>[/x]" in status

        lines: list[str] = []
        async with plain_monitor("Jam", web) as out:
            while sum(line[13:].startswith("-- joined: ") for line in lines) < len(NAMES):
                raw = await asyncio.wait_for(out.readline(), 20)
                assert raw, "monitor --plain ended early"
                lines.append(raw.decode())
        plain = "".join(lines)
        assert is_inert(plain), repr(plain)
        one_line_each(plain)
        assert all(f"-- joined: {name}\n" in plain for name in shown), plain


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (make tools)")
@pytest.mark.parametrize(
    "command", [["status"], ["monitor", "Jam"], ["monitor", "Jam", "--plain"]], ids=" ".join
)
async def test_hostile_names_under_tmux(
    command: list[str], tmp_path: Path, make_peer: MakePeer
) -> None:
    (port,) = free_ports(1)
    async with serving(f"[rooms]\nJam = {port}") as (_, url):
        web = url.removeprefix("http://")
        await joined(make_peer, port, *NAMES)
        exit_file, raw_file = tmp_path / "exit", tmp_path / "raw"
        raw_file.touch()
        shown = [printable(name) for name in await hub_names(web)]
        line = " ".join([MIDIHUB, *command, "--web", web])
        # `read` holds the command back until the title is set and the pane is piped.
        # Before it the pane's terminal waits for tmux to give it the window's size,
        # and the shell forgets the COLUMNS it took from the terminal's first size.
        script = (
            f'until [ "$(stty size)" = "{ROWS} {COLUMNS}" ]; do sleep 0.05; done; '
            f"unset COLUMNS LINES; read go; {line}; echo $? > {exit_file}; sleep 60"
        )
        with tmux_session(f"midihub-names-{port}", script) as tmux:
            await asyncio.to_thread(tmux, "select-pane", "-t", "m", "-T", TITLE)
            await asyncio.to_thread(tmux, "pipe-pane", "-t", "m", f"cat >> {raw_file}")
            await asyncio.to_thread(tmux, "send-keys", "-t", "m", "Enter")
            screen = await on_screen(tmux, shown)
            assert "MarkupError" not in screen and "Traceback" not in screen
            if command == ["monitor", "Jam"]:  # the log's lines; the title names some too
                one_line_each("\n".join(JOINED.findall(screen)))
            else:
                one_line_each(screen)
            title = await asyncio.to_thread(tmux, "display", "-p", "-t", "m", "#{pane_title}")
            assert title.strip() == TITLE
            await wait_for(lambda: "<00>[/x]" in raw_file.read_text(errors="replace"), 10)
            no_terminal_controls(raw_file.read_text(errors="replace"))
            if command == ["monitor", "Jam"]:
                await asyncio.to_thread(tmux, "send-keys", "-t", "m", "q")
            if command != ["monitor", "Jam", "--plain"]:
                await wait_for(exit_file.exists, 15, f"{command} to end")
                await wait_for(lambda: exit_file.read_text().strip() != "", 5)
                assert exit_file.read_text().strip() == "0"


async def on_screen(tmux: Tmux, shown: list[str], timeout: float = 20.0) -> str:
    """The pane's text once every name is on it (or fail with what it shows)."""
    screen = ""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        screen = await tmux.screen(False)
        if all(name in screen for name in shown):
            return screen
        await asyncio.sleep(0.05)
    missing = [name for name in shown if name not in screen]
    raise AssertionError(f"not shown: {missing!r}\n{screen}")


# -- a hub that is not ours (older, or an impostor at the address) ---------------

EVIL = "\x1b]0;pwned\x07[/x]\n12:00:00.000 -- forged"
EVIL_SHOWN = "\\x1b]0;pwned\\x07[/x]\\x0a12:00:00.000 -- forged"


def hostile_api(refuse: bool) -> web.Application:
    """The hub's API shapes with sender text everywhere, and the new SysEx shape."""
    who = {"id": "5004-1\x1b[2J", "name": EVIL}
    port = {"port": 5004, "label": f"Jam{EVIL}", "owner": "Jam", "role": "room"}

    async def participants(request: web.Request) -> web.Response:
        if refuse:
            return web.json_response({"error": f"no{EVIL}"}, status=403)
        return web.json_response({"ports": [port | {"participants": [who]}]})

    async def latency(request: web.Request) -> web.Response:
        row = latency_row(1, EVIL) | {"port": 5004, "address": f"10.0.0.1:5004{EVIL}"}
        return web.json_response([row])

    async def monitor(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sysex = {"kind": "sysex", "bytes": [0xF0, *range(15)], "length": 70_000, "text": EVIL}
        said = {"kind": "control_change", "text": f"cc{EVIL}"}
        events = [
            ("snapshot", port | {"participants": [who], "held": []}),
            ("midi", {"events": [{"at": 0.0, "from": who, "messages": [sysex, said]}]}),
            ("participants", {"participants": []}),
        ]
        for name, data in events:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        return response

    app = web.Application()
    app.router.add_get("/api/participants", participants)
    app.router.add_get("/api/latency", latency)
    app.router.add_get("/api/monitor", monitor)
    return app


async def test_text_from_a_hostile_api_is_shown_inert() -> None:
    for refuse in (False, True):
        runner = web.AppRunner(hostile_api(refuse))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            address = f"127.0.0.1:{runner.addresses[0][1]}"
            code, out, err = await run_cli("status", "--web", address)
            assert is_inert(out) and is_inert(err), (out, err)
            if refuse:
                assert code == 1 and f"the hub refused: no{EVIL_SHOWN} (HTTP 403)" in err
                continue
            assert code == 0, err
            lines = [
                line for line in out.splitlines() if "\\x1b]0;pwned\\x07[/x]\\x0a12:00" in line
            ]
            assert len(lines) == 1 and "10.0.0.1:5004\\x1b]0;pwned" in lines[0], out

            code, out, err = await run_cli("monitor", "Jam" + EVIL[:12], "--web", address)
            assert code == 2 and is_inert(err) and "5004 (Jam\\x1b]0;pwned" in err

            code, out, err = await run_cli("monitor", "5004", "--web", address, "--plain")
            assert is_inert(out) and is_inert(err), (out, err)
            assert code == 1 and "the hub closed the stream" in err
            lines = [STAMP.sub("", line) for line in out.splitlines()]
            name = printable(EVIL)
            head = "f0 " + " ".join(f"{b:02x}" for b in range(15))
            assert lines == [
                f"-- monitoring port 5004 ({printable('Jam' + EVIL)})",
                f"-- joined: {name}",
                f"{name} sysex (70000 bytes) {head} …",
                f"{name} {printable('cc' + EVIL, 200)}",
                f"-- left: {name}",
            ]
        finally:
            await runner.cleanup()
