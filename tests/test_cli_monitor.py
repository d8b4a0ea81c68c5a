"""``midihub monitor``: in a real terminal (tmux) against a live hub and a real
peer, as ``--plain`` lines, and its pure view functions."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from midihub.cli.monitor import HELD_STYLE, MonitorError, View, resolve_port
from tests.fixtures import MakePeer
from tests.support import TOKEN, free_ports, joined, serving, wait_for

MIDIHUB = str(Path(sys.executable).with_name("midihub"))
STAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} ")
HIGHLIGHT = "\x1b[1m\x1b[30m\x1b[102m"  # HELD_STYLE as tmux re-encodes it


async def run_cli(*args: str) -> tuple[int, str, str]:
    """``midihub ARGS`` to its end: exit status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        MIDIHUB, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Tmux:
    def __init__(self, name: str) -> None:
        self.socket = name

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    async def screen(self, escapes: bool = True) -> str:
        flags = ["-e"] if escapes else []
        return await asyncio.to_thread(self, "capture-pane", "-p", *flags, "-t", "m")


@asynccontextmanager
async def plain_monitor(port: str, web: str) -> AsyncIterator[asyncio.StreamReader]:
    """``midihub monitor PORT --web WEB --plain`` running: its output, a line an event.
    On the way out it is stopped (SIGTERM), and it must have ended with status 0."""
    process = await asyncio.create_subprocess_exec(
        MIDIHUB, "monitor", port, "--web", web, "--plain",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        yield process.stdout
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == 0


@contextmanager
def tmux_session(name: str, command: str) -> Iterator[Tmux]:
    tmux = Tmux(name)
    tmux("new-session", "-d", "-x", "150", "-y", "45", "-s", "m", command)
    try:
        yield tmux
    finally:
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, timeout=10)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (make tools)")
async def test_monitor_in_a_terminal_highlights_held_notes_and_logs_cc(
    tmp_path: Path, make_peer: MakePeer
) -> None:
    (port,) = free_ports(1)
    async with serving(f"[rooms]\nJam = {port}") as (_, url):
        keys, _listener = await joined(make_peer, port, "alice-keys", "bob")
        status = tmp_path / "status"
        web = url.removeprefix("http://")
        command = f"{MIDIHUB} monitor Jam --web {web}; echo $? > {status}; sleep 30"
        with tmux_session(f"midihub-test-{port}", command) as tmux:

            async def shows(*texts: str, escapes: bool = True, absent: str = "\0") -> bool:
                nonlocal screen
                screen = await tmux.screen(escapes)
                return all(text in screen for text in texts) and absent not in screen

            screen = ""
            await wait_for(lambda: shows("alice-keys", escapes=False), 30, "alice-keys listed")
            keys.send(b"\x90\x3c\x64", b"\x91\x40\x50", b"\x90\x40\x50", b"\xb0\x07\x64")
            await wait_for(lambda: shows(f"{HIGHLIGHT}E4·1,2", "cc7=100"), 30, "the notes held")
            assert f"{HIGHLIGHT}C4·1 " in screen, screen
            assert f"{HIGHLIGHT}E4·1,2" in screen  # one note held on two channels
            assert f"{HIGHLIGHT}D4" not in screen and "\x1b[2mD4" in screen
            assert "alice-keys control_change ch1 cc7=100" in screen
            assert "ch1: 2 held" in screen and "ch2: 1 held" in screen

            keys.send(b"\x80\x3c\x00", b"\x81\x40\x00", b"\x80\x40\x00")
            await wait_for(
                lambda: shows("no notes held", absent=HIGHLIGHT), 30, "the notes released"
            )
            assert "\x1b[2mC4" in screen

            await asyncio.to_thread(tmux, "send-keys", "-t", "m", "q")
            await wait_for(
                lambda: status.exists() and status.read_text().strip() != "",
                10,
                "the monitor to quit on q",
            )
            assert status.read_text().strip() == "0"
            plain = await tmux.screen(False)
            assert "midihub monitor" not in plain  # the alternate screen is gone


async def test_plain_prints_one_line_per_event(make_peer: MakePeer) -> None:
    g_in, g_out = free_ports(2)
    async with serving(f"[groups]\nBand = [{g_in}, {g_out}]") as (_, url):
        keys = make_peer("alice-keys")
        async with plain_monitor("Band", url.removeprefix("http://")) as out:
            first = await asyncio.wait_for(out.readline(), 10)
            await keys.connect(g_in)
            keys.send(b"\x90\x3c\x64", b"\xb0\x40\x7f", b"\xf8", b"\xf8", b"\xc0\x05")
            keys.send(b"\xe0\x00\x50", b"\xf0\x7e\x7f\x06\x01\xf7", b"\x80\x3c\x00")
            lines = [first.decode()]
            while len(lines) < 8:
                lines.append((await asyncio.wait_for(out.readline(), 5)).decode())
        assert all(STAMP.match(line) for line in lines), lines
        assert [STAMP.sub("", line).rstrip("\n") for line in lines] == [
            f"-- monitoring port {g_in} (Band in)",
            "-- joined: alice-keys",
            "alice-keys note_on ch1 C4 100",
            "alice-keys control_change ch1 cc64=127",
            "alice-keys program_change ch1 5",  # the two clock bytes are counted, not printed
            "alice-keys pitch_bend ch1 +2048",
            "alice-keys sysex (6 bytes) f0 7e 7f 06 01 f7",
            "alice-keys note_off ch1 C4 0",
        ]


async def test_a_panic_is_in_the_monitors_events_and_the_hubs_log(
    make_peer: MakePeer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "midihub.web")
    (room,) = free_ports(1)
    async with serving(f"[rooms]\nJam = {room}") as (_, url):
        web = url.removeprefix("http://")
        keys = make_peer("alice-keys")
        async with plain_monitor("Jam", web) as out:
            await asyncio.wait_for(out.readline(), 10)  # -- monitoring port …
            await keys.connect(room)
            await asyncio.wait_for(out.readline(), 10)  # -- joined: alice-keys
            args = ("--web", web, "--token", TOKEN, "--port", str(room))
            status, _, err = await run_cli("panic", *args, "--range", "Low", "--channel", "2")
            assert status == 0, err
            line = (await asyncio.wait_for(out.readline(), 10)).decode()
        assert STAMP.match(line), line
        assert STAMP.sub("", line).rstrip("\n") == (
            "-- panic: Low (0-42) notes off on channel 2, to everyone"
        )
    logged = [r.getMessage() for r in caplog.records if "panic:" in r.getMessage()]
    assert logged == [
        f"Jam :{room}: panic: Low (0-42) notes off on channel 2, to everyone "
        "(1 participant(s)), asked from 127.0.0.1"
    ]


async def test_unknown_port_and_no_hub_are_clear_errors() -> None:
    (port,) = free_ports(1)
    async with serving(f"[rooms]\nJam = {port}") as (_, url):
        web = url.removeprefix("http://")
        done = await asyncio.to_thread(
            subprocess.run,
            [MIDIHUB, "monitor", "Nope", "--web", web, "--plain"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert done.returncode == 2
        assert f"no port 'Nope'; its ports: {port} (Jam)" in done.stderr
    (nobody,) = free_ports(1)
    done = await asyncio.to_thread(
        subprocess.run,
        [MIDIHUB, "monitor", "5040", "--web", f"127.0.0.1:{nobody}"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 1 and "is `midihub serve` running?" in done.stderr


PORTS = [
    {"port": 5040, "label": "GroupOne in", "owner": "GroupOne", "role": "in"},
    {"port": 5042, "label": "GroupOne out", "owner": "GroupOne", "role": "out"},
    {"port": 5060, "label": "Jam", "owner": "Jam", "role": "room"},
]


@pytest.mark.parametrize(
    ("wanted", "port"),
    [("5042", 5042), ("GroupOne", 5040), ("groupone out", 5042), ("Jam", 5060), ("jam", 5060)],
)
def test_ports_by_number_label_or_name(wanted: str, port: int) -> None:
    assert resolve_port(PORTS, wanted) == port


@pytest.mark.parametrize("wanted", ["5050", "Nope", "GroupOne sideways"])
def test_unknown_ports_exit_2(wanted: str) -> None:
    with pytest.raises(MonitorError) as caught:
        resolve_port(PORTS, wanted)
    assert caught.value.code == 2


def test_view_counts_clock_logs_non_notes_and_tracks_who_holds_what() -> None:
    view = View()
    view.apply("snapshot", {"port": 5060, "label": "Jam", "participants": [], "held": []})
    held = [
        {"channel": 1, "notes": [{"note": 60}], "sustain": True, "sostenuto": False, "bend": 0},
        {"channel": 3, "notes": [{"note": 60}], "sustain": False, "sostenuto": False, "bend": -5},
    ]
    messages = [
        {"kind": "note_on", "text": "note_on ch1 C4 100"},
        {"kind": "clock", "text": "clock"},
        {"kind": "control_change", "text": "control_change ch1 cc64=127"},
    ]
    item = {"at": 0.0, "from": {"id": "5060-1", "name": "amy"}, "messages": messages}
    lines = view.apply("midi", {"events": [item], "held": held})
    assert [STAMP.sub("", line) for line in lines] == [
        "amy note_on ch1 C4 100",
        "amy control_change ch1 cc64=127",
    ]
    assert view.clock == 1 and view.messages == 3
    assert [STAMP.sub("", line) for line in view.log] == ["amy control_change ch1 cc64=127"]
    assert view.holders() == {60: [1, 3]}
    assert HELD_STYLE.startswith("bold")
