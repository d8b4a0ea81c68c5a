"""``midihub serve`` as a real process: join/leave logs, SIGHUP reload, SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest

from tests.support import (
    PyPeer,
    free_ports,
    free_tcp_port,
    midihub_serve,
    serve_to_the_end,
    wait_for,
)

# Every hub here is a `midihub serve` process (with its own loop): the test's loop only
# reads its log and drives clients, so one loop for the test is enough.
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])


class Served:
    """A ``midihub serve`` subprocess whose log lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._reader = asyncio.create_task(self._read(proc.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.lines.append(raw.decode().rstrip())

    @classmethod
    async def start(cls, *args: str, cwd: Path, own_web_port: bool = True) -> Served:
        """``midihub serve ARGS``; on a free web port of its own unless the config names
        one (``own_web_port=False``), so parallel runs never fight over 8080."""
        web = ["--web", f"127.0.0.1:{free_tcp_port()}"] if own_web_port else []
        proc = await midihub_serve(*web, *args, cwd=cwd)
        served = cls(proc)
        await wait_for(
            lambda: (
                any("dashboard and API on" in line for line in served.lines)
                or proc.returncode is not None
            ),
            10,
            "the hub to start",
        )
        return served

    def log(self) -> str:
        return "\n".join(self.lines)

    async def has(self, text: str, timeout: float = 5) -> None:
        await wait_for(
            lambda: text in self.log(), timeout, f"log line with {text!r}:\n{self.log()}"
        )

    async def stop(self, signum: int = signal.SIGTERM) -> None:
        """Signal the hub and wait for it to exit by itself: a shutdown that hung on a
        timer or a task (seconds to minutes) fails here, a busy machine does not."""
        self.proc.send_signal(signum)
        await asyncio.wait_for(self.proc.wait(), 15)
        await self._reader


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_logs_joins_and_says_bye_on_exit(tmp_path: Path, signum: int) -> None:
    port_in, port_out = free_ports(2)
    (tmp_path / "midiports").write_text(f'{{"G": [{port_in}, {port_out}]}}')
    served = await Served.start("--bind", "127.0.0.1", cwd=tmp_path)
    alice, bob = PyPeer("alice"), PyPeer("bob")
    try:
        await alice.connect(port_in)
        await bob.connect(port_out)
        await served.has(f"G in :{port_in}: 'alice' from 127.0.0.1:{alice.port} joined")
        await served.has(f"G out :{port_out}: 'bob' from 127.0.0.1:{bob.port} joined")
        alice.send(b"\x90\x3c\x40")
        await wait_for(lambda: bob.received == [b"\x90\x3c\x40"])
        alice.bye()
        await served.has(f"'alice' from 127.0.0.1:{alice.port} left (bye)")
        await served.stop(signum)
        assert served.proc.returncode == 0, served.log()
        await wait_for(lambda: bob.left() == ["bye"], 2, "bob to get BY")
        assert "config: midiports" in served.log()
    finally:
        alice.close()
        bob.close()


async def test_sighup_reload_opens_closes_and_keeps_ports(tmp_path: Path) -> None:
    keep_in, keep_out, dropped, added = free_ports(4)
    config = tmp_path / "hub.toml"
    config.write_text(f"[groups]\nKeep = [{keep_in}, {keep_out}]\n[rooms]\nOld = {dropped}\n")
    served = await Served.start("--config", str(config), "--bind", "127.0.0.1", cwd=tmp_path)
    sender, listener, jammer, newcomer = (
        PyPeer(n) for n in ("sender", "listener", "jammer", "new")
    )
    try:
        await sender.connect(keep_in)
        await listener.connect(keep_out)
        await jammer.connect(dropped)
        keep_session = listener.session
        config.write_text(f"[groups]\nKeep = [{keep_in}, {keep_out}]\n[rooms]\nNew = {added}\n")
        served.proc.send_signal(signal.SIGHUP)
        await served.has("configuration reloaded")
        await wait_for(lambda: jammer.left() == ["bye"], 3, "the removed room's BY")
        await newcomer.connect(added)
        sender.send(b"\x90\x3c\x40")
        await wait_for(lambda: listener.received == [b"\x90\x3c\x40"], 3, "MIDI on the kept group")
        assert listener.session is keep_session and listener.left() == []
        # A broken file is refused and changes nothing.
        config.write_text("[rooms]\nBad = 5001\n")
        served.proc.send_signal(signal.SIGHUP)
        await served.has("reload refused")
        sender.send(b"\x80\x3c\x00")
        await wait_for(lambda: len(listener.received) == 2, 3, "MIDI after the refused reload")
        await served.stop()
        assert served.proc.returncode == 0
    finally:
        for peer in (sender, listener, jammer, newcomer):
            peer.close()


async def test_serve_reports_a_bad_config_and_a_busy_port(tmp_path: Path) -> None:
    (tmp_path / "midihub.toml").write_text("[groups]\nA = [5041, 5042]\n")
    code, log = await serve_to_the_end(cwd=tmp_path, timeout=10)
    assert code == 2 and "groups.A.in: port 5041 is odd" in log
    (port,) = free_ports(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", port + 1))
        (tmp_path / "midihub.toml").write_text(f"[rooms]\nR = {port}\n")
        code, log = await serve_to_the_end("--bind", "127.0.0.1", cwd=tmp_path, timeout=10)
    assert code == 1 and f"port {port + 1}" in log
    assert "choose other ports in [groups] and [rooms] of the configuration" in log


async def test_the_pid_file_names_this_hub_while_it_runs(tmp_path: Path) -> None:
    """``kill -HUP $(cat PID_FILE)`` reloads this hub (``pidof`` would signal every one)."""
    (room,) = free_ports(1)
    (tmp_path / "midihub.toml").write_text(f"[rooms]\nJam = {room}\n")
    pid_file = tmp_path / "run" / "midihub.pid"
    pid_file.parent.mkdir()
    served = await Served.start("--bind", "127.0.0.1", "--pid-file", str(pid_file), cwd=tmp_path)
    try:
        assert pid_file.read_text() == f"{served.proc.pid}\n"
        assert f"event loop), pid {served.proc.pid}, config: midihub.toml" in served.log()
        os.kill(int(pid_file.read_text()), signal.SIGHUP)
        await served.has("configuration reloaded")
    finally:
        await served.stop()
    assert served.proc.returncode == 0, served.log()
    assert not pid_file.exists() and list(pid_file.parent.iterdir()) == []


async def test_a_pid_file_that_cannot_be_written_stops_the_start(tmp_path: Path) -> None:
    code, log = await serve_to_the_end(
        "--pid-file", str(tmp_path / "missing" / "midihub.pid"), cwd=tmp_path, timeout=15
    )
    assert code == 1 and "cannot write the pid file" in log and "missing" in log, log
