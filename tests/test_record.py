"""Recordings against a hub on real sockets (Python peers over UDP on 127.0.0.1):
markers, filtering, the API and its token, names from strangers, retention, a full
disk, auto mode, the CLI, and recovery after ``kill -9`` of ``midihub serve``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import mido
import pytest
from click.testing import CliRunner

from midihub.cli import main
from midihub.midi.messages import control_change, note_off, note_on, pitch_bend, program_change
from midihub.record.journal import Header
from tests.fixtures import MakePeer
from tests.record_support import recording_file, recording_hub, serve, write_config
from tests.support import TOKEN, PyPeer, free_ports, joined, wait_for

SYSEX = bytes([0xF0, 0x7D, 1, 2, 3, 0xF7])


def tracks_of(path: Path) -> dict[str, list[bytes]]:
    midi = mido.MidiFile(str(path), charset="utf-8")
    return {t.name: [bytes(e.bin()) for e in t if not e.is_meta] for t in midi.tracks[1:]}


def markers_of(path: Path) -> list[str]:
    midi = mido.MidiFile(str(path), charset="utf-8")
    return [e.text for e in midi.tracks[0] if e.type == "marker"]


async def test_recording_keeps_players_apart_drops_clock_and_marks_events(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    async with recording_hub(f"[rooms]\nJam = {port}", tmp_path) as hub:
        alice, bob = PyPeer("alice"), PyPeer("bob")
        try:
            await alice.connect(port)
            status, _body = await hub.call("POST", "/api/recordings", {"port": port}, token=None)
            assert status == 401 and hub.manager.active == {}
            status, rec = await hub.call("POST", "/api/recordings", {"port": port})
            assert status == 201 and rec["state"] == "recording"
            status, again = await hub.call("POST", "/api/recordings", {"port": port})
            assert status == 409 and rec["id"] in again["error"]
            await bob.connect(port)
            alice.send(program_change(0, 4), note_on(0, 60, 100), bytes([0xF8]), bytes([0xFE]))
            bob.send(pitch_bend(1, 9000), control_change(1, 64, 127), SYSEX)
            await wait_for(lambda: len(bob.received) == 4 and len(alice.received) == 3)
            status, _ = await hub.call("POST", "/api/panic", {"port": port, "range": "Low"})
            assert status == 200  # the marker is in the buffer once the panic is sent
            alice.send(note_off(0, 60))
            await wait_for(lambda: len(bob.received) == 5 + 43 * 16)
            bob.bye()
            await wait_for(lambda: len(hub.running.participants(port)) == 1)
            status, listed = await hub.call("GET", "/api/recordings")
            row = listed["recordings"][0]
            assert row["state"] == "recording" and row["players"] == ["alice", "bob"]
            assert row["messages"] == 8  # with the two of bob's release

            status, done = await hub.call("POST", f"/api/recordings/{rec['id']}/stop")
            assert status == 200 and done["state"] == "done", done
            assert done["port"] == port and done["label"] == "Jam" and done["size"] > 0
            assert done["duration"] > 0
            path = hub.manager.path_of(rec["id"])
            assert path is not None and path.name.startswith("Jam_")
            assert tracks_of(path) == {
                "alice": [program_change(0, 4), note_on(0, 60, 100), note_off(0, 60)],
                "bob": [
                    pitch_bend(1, 9000),
                    control_change(1, 64, 127),
                    SYSEX,
                    control_change(1, 64, 0),  # released when bob left
                    pitch_bend(1, 8192),
                ],
            }
            assert markers_of(path) == [
                "present: alice",
                "joined: bob",
                f"panic on port {port}",
                "left: bob (bye)",
            ]
            assert await hub.download(done["file"]) == path.read_bytes()

            status, _ = await hub.call("DELETE", f"/api/recordings/{rec['id']}", token=None)
            assert status == 401 and path.exists()
            status, _ = await hub.call("DELETE", f"/api/recordings/{rec['id']}")
            assert status == 200 and not path.exists()
            status, listed = await hub.call("GET", "/api/recordings")
            assert listed["recordings"] == []
            status, _ = await hub.call("GET", f"/api/recordings/{rec['id']}/file")
            assert status == 404
        finally:
            alice.close()
            bob.close()


async def test_names_from_senders_and_config_are_made_safe(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    room = "../../etc/Jäm \\u001b[31m"  # TOML escape: the name holds ESC
    async with recording_hub(f'[rooms]\n"{room}" = {port}', tmp_path) as hub:
        evil = PyPeer("\x1b[2J" + "x" * 200 + "\u202e/../../passwd")
        try:
            await evil.connect(port)
            recording = hub.manager.start_recording(port)
            evil.send(note_on(0, 1, 1))
            await wait_for(lambda: recording.messages == 1)
            await hub.manager.stop_recording(recording.id)
        finally:
            evil.close()
        (path,) = tmp_path.glob("*.mid")
        assert path.parent == tmp_path
        assert path.name.startswith("etc-Jam-31m_") and path.name.isascii()
        (name,) = tracks_of(path)
        assert len(name) == 64 and "\x1b" not in name and "\u202e" not in name
        status, _ = await hub.call("GET", "/api/recordings/..%2F..%2Fetc%2Fpasswd/file")
        assert status == 404


def old_recording(directory: Path, rid: str, days_ago: float, size: int) -> None:
    header = Header(id=rid, port=1, label="Old", start=time.time() - days_ago * 86400, name=rid)
    recording_file(directory, header, {0: "p"}, [(0, 0, SYSEX[:1] + bytes(size) + SYSEX[-1:])])


async def test_retention_removes_old_files_then_the_oldest_over_the_size_limit(
    tmp_path: Path,
) -> None:
    for rid, days in (("A", 40), ("B", 20), ("C", 10), ("D", 1)):
        old_recording(tmp_path, rid, days, 400_000)
    (tmp_path / "notes.txt").write_text("not a recording")
    (port,) = free_ports(1)
    async with recording_hub(
        f"[rooms]\nJam = {port}", tmp_path, retention_days=30, max_total_mb=0.9
    ) as hub:
        # A is older than 30 days; of B, C, D (1.2 MB) the oldest goes to fit 0.9 MB.
        assert sorted(hub.manager.index) == ["C", "D"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["C.mid", "D.mid", "notes.txt"]
        _status, listed = await hub.call("GET", "/api/recordings")
        assert [r["id"] for r in listed["recordings"]] == ["D", "C"]


@contextlib.contextmanager
def small_filesystem(path: Path) -> Iterator[str]:
    """A 64 kB tmpfs where allowed (root); else a read-only directory (the journal
    cannot even be created). Both are the kernel saying no, not a mock."""
    path.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        path.chmod(0o500)
    try:
        yield "No space left on device" if mounted else "Permission denied"
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=False)
        path.chmod(0o700)


async def test_a_full_disk_stops_the_recording_and_midi_keeps_flowing(
    tmp_path: Path, make_peer: MakePeer
) -> None:
    (port,) = free_ports(1)
    directory = tmp_path / "small"
    with small_filesystem(directory) as reason:
        async with recording_hub(f"[rooms]\nJam = {port}", directory, flush_interval=0.2) as hub:
            alice, bob = await joined(make_peer, port, "alice", "bob")
            recording = hub.manager.start_recording(port)
            sent = 0
            payload = bytes(range(100)) * 10
            while recording.state == "recording" and sent < 400:
                alice.send(bytes([0xF0]) + payload + bytes([0xF7]))  # 2 kB per message
                sent += 1
                await asyncio.sleep(0.005)
            await wait_for(lambda: recording.state == "failed", 10, "the disk to fill")
            assert recording.error is not None and reason in recording.error
            _status, listed = await hub.call("GET", "/api/recordings")
            row = next(r for r in listed["recordings"] if r["id"] == recording.id)
            assert row["state"] == "failed" and reason in row["error"]
            # MIDI goes on: everything alice sent reached bob, and more still does.
            await wait_for(lambda: len(bob.received) == sent, 5, "bob to hear it all")
            alice.send(note_on(0, 60, 1))
            await wait_for(lambda: bob.received[-1:] == [note_on(0, 60, 1)])
            assert hub.manager.active == {}


async def test_auto_mode_records_while_someone_plays_and_splits_after_silence(
    tmp_path: Path,
) -> None:
    port_in, port_out = free_ports(2)
    config = f'[groups.Band]\nin = {port_in}\nout = {port_out}\nrecord = "auto"'
    async with recording_hub(config, tmp_path, split_after=0.02) as hub:  # 1.2 s of silence
        alice = PyPeer("alice")
        try:
            await alice.connect(port_in)
            assert hub.manager.active == {}  # joined, silent: nothing recorded
            endpoint = hub.running.hub.endpoints[port_in]
            alice.send(bytes([0xF8]))
            await wait_for(lambda: endpoint.messages_in == 1, 5, "the hub to read the clock")
            assert hub.manager.active == {}  # clock alone is not playing
            alice.send(note_on(0, 60, 100))
            await wait_for(lambda: len(hub.manager.active) == 1, 5, "an auto recording")
            (first,) = hub.manager.active.values()
            assert first.auto and first.midi_port == port_in
            alice.send(note_off(0, 60))
            await wait_for(lambda: first.id in hub.manager.index, 10, "the split")
            alice.send(note_on(0, 62, 100))
            await wait_for(lambda: len(hub.manager.active) == 1, 5, "the next recording")
            path = hub.manager.path_of(first.id)
            assert path is not None
            assert tracks_of(path) == {"alice": [note_on(0, 60, 100), note_off(0, 60)]}
        finally:
            alice.close()


@pytest.mark.timeout(90)
async def test_cli_record_commands(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    async with recording_hub(f"[rooms]\nJam = {port}", tmp_path / "rec") as hub:
        alice = PyPeer("alice")
        try:
            await alice.connect(port)
            web = ["--web", hub.url.removeprefix("http://")]
            token = ["--token", TOKEN]
            runner = CliRunner()

            async def run(*args: str) -> str:
                result = await asyncio.to_thread(runner.invoke, main, ["record", *args])
                assert result.exit_code == 0, result.output
                return result.output

            out = await run("start", str(port), *web, *token)
            rid = out.split()[1]
            assert out.startswith(f"recording {rid} started on port {port}")
            alice.send(note_on(0, 64, 90), note_off(0, 64))
            await wait_for(lambda: hub.manager.active[rid].messages == 2)
            assert "[recording]" in await run("list", *web)
            out = await run("stop", rid, *web, *token)
            assert out.startswith(f"stopped {rid}  port {port} Jam") and "alice" in out
            assert f"download it with `midihub record get {rid}`" in out
            target = tmp_path / "take.mid"
            assert f"{target}:" in await run("get", rid, "-o", str(target), *web)
            assert tracks_of(target) == {"alice": [note_on(0, 64, 90), note_off(0, 64)]}
            out = await run("play", rid, str(port), *web, *token)
            assert out.startswith(f"replay 1 of {rid} playing into port {port}")
            await wait_for(lambda: len(alice.received) == 2, 5, "the replay")
            assert alice.received == [note_on(0, 64, 90), note_off(0, 64)]
            assert f"deleted {rid}" in await run("delete", rid, *web, *token)
            assert "no recordings" in await run("list", *web)
            result = await asyncio.to_thread(runner.invoke, main, ["record", "stop", rid, *web])
            assert result.exit_code == 1 and "token" in result.output
        finally:
            alice.close()


@pytest.mark.timeout(90)
async def test_kill_9_mid_recording_recovers_everything_flushed(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    config, url = write_config(tmp_path, f"[rooms]\nJam = {port}", flush_interval=0.5)
    hub = await serve(tmp_path, config, url)
    alice = PyPeer("alice")
    try:
        await alice.connect(port)
        status, rec = await hub.call("POST", "/api/recordings", {"port": port})
        assert status == 201
        flushed = [note_on(0, 40 + n, 64 + n) for n in range(30)]
        for message in flushed:
            alice.send(message)
            await asyncio.sleep(0.002)

        async def durable() -> bool:
            return bool((await hub.row(rec["id"]))["flushed"] == len(flushed))

        await wait_for(durable, 5, "every message flushed")
        hub.served.proc.send_signal(signal.SIGKILL)
        await hub.served.proc.wait()
    finally:
        alice.close()
    assert list(hub.directory.glob("*.journal"))  # left unfinished by the crash
    hub = await serve(tmp_path, config, url)
    try:
        await hub.served.has(f"recovered unfinished recording {rec['id']}: 30 message(s)")
        row = await hub.row(rec["id"])
        assert row["state"] == "done" and row["players"] == ["alice"]
        assert not list(hub.directory.glob("*.journal"))
        midi = mido.MidiFile(file=io.BytesIO(await hub.download(row["file"])))
        ended = [note_off(0, 40 + n) for n in range(30)]  # held at the crash: ended at the end
        assert [bytes(e.bin()) for e in midi.tracks[1] if not e.is_meta] == flushed + ended
    finally:
        await hub.served.stop()


async def test_a_recording_stops_at_its_size_cap_and_midi_flows_on(
    tmp_path: Path, make_peer: MakePeer
) -> None:
    """A stranger playing SysEx all night cannot fill the disk through one recording:
    at ``max_recording_mb`` it stops (and is kept), while the room plays on."""
    (port,) = free_ports(1)
    async with recording_hub(
        f"[rooms]\nJam = {port}", tmp_path, flush_interval=0.2, max_recording_mb=0.02
    ) as hub:
        alice, bob = await joined(make_peer, port, "alice", "bob")
        status, rec = await hub.call("POST", "/api/recordings", {"port": port})
        assert status == 201
        blob = bytes([0xF0, 0x7D, *([0x55] * 1000), 0xF7])
        for i in range(60):  # about 120 KB of journal
            alice.send(blob)
            await wait_for(lambda n=i: len(bob.received) > n, 5, "the SysEx forwarded")
            if rec["id"] not in hub.manager.active:
                break
        await wait_for(lambda: rec["id"] not in hub.manager.active, 10, "the cap to bite")
        status, listed = await hub.call("GET", "/api/recordings")
        (row,) = [r for r in listed["recordings"] if r["id"] == rec["id"]]
        assert row["state"] == "done"
        before = len(bob.received)
        alice.send(note_on(0, 60, 100))
        await wait_for(lambda: len(bob.received) == before + 1)
