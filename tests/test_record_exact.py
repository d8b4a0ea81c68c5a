"""Recordings that end what was held and stay within their bounds: a player's release
when it leaves and a panic's NoteOffs are in the SMF (read by ``mido``, the independent
reader) at the time the hub sent them; the journal never passes its cap and an auto
port does not start again at once after one; finishing and reading back a recording
take memory independent of its length; shutdown says BY before recordings end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import mido
import pytest

from midihub.midi.messages import control_change, note_off, note_on
from midihub.record import files, journal, smf
from midihub.record.journal import Header
from tests.fixtures import MakePeer
from tests.record_support import recording_file, recording_hub, serve, write_config
from tests.support import PyPeer, free_ports, joined, wait_for

SYSEX = bytes([0xF0, 0x7D, *([0x55] * 1000), 0xF7])


def timeline(path: Path) -> dict[str, list[tuple[int, bytes | str]]]:
    """Every track of an SMF by name: (absolute tick, message bytes or marker text)."""
    midi = mido.MidiFile(str(path), charset="utf-8")
    out: dict[str, list[tuple[int, bytes | str]]] = {}
    for number, track in enumerate(midi.tracks):
        now, events = 0, out.setdefault("markers" if number == 0 else track.name, [])
        for event in track:
            now += event.time
            if event.type == "marker":
                events.append((now, event.text))
            elif not event.is_meta:
                events.append((now, bytes(event.bin())))
    return out


def at(events: list[tuple[int, bytes | str]], what: bytes | str) -> int:
    (tick,) = [tick for tick, value in events if value == what]
    return tick


async def test_a_player_that_vanishes_holding_a_note_is_released_in_its_own_track(
    tmp_path: Path, make_peer: MakePeer
) -> None:
    (port,) = free_ports(1)
    room = f"timeout = 1.0\nck_interval = 0.2\n[rooms]\nJam = {port}"
    async with recording_hub(room, tmp_path) as hub:
        alice, bob = await joined(make_peer, port, "alice", "bob")
        recording = hub.manager.start_recording(port)
        alice.send(note_on(0, 60, 100), control_change(0, 64, 127))
        await wait_for(lambda: len(bob.received) == 2, 5, "bob to hear alice")
        alice.close()  # killed: no BY, the hub times it out
        await wait_for(lambda: note_off(0, 60) in bob.received, 10, "the room's release")
        await hub.manager.stop_recording(recording.id)
    path = hub.manager.path_of(recording.id)
    assert path is not None
    tracks = timeline(path)
    left = at(tracks["markers"], "left: alice (timeout)")
    assert [value for _, value in tracks["alice"]] == [
        note_on(0, 60, 100),
        control_change(0, 64, 127),
        note_off(0, 60),
        control_change(0, 64, 0),
    ]
    # The release and the marker: one event each, read on the same millisecond clock.
    assert abs(at(tracks["alice"], note_off(0, 60)) - left) <= 1
    assert abs(at(tracks["alice"], control_change(0, 64, 0)) - left) <= 1
    assert "bob" not in tracks  # bob played nothing


async def test_a_recording_stopped_mid_note_ends_what_was_held_at_its_end(
    tmp_path: Path, make_peer: MakePeer
) -> None:
    (port,) = free_ports(1)
    async with recording_hub(f"[rooms]\nJam = {port}", tmp_path) as hub:
        alice, bob = await joined(make_peer, port, "alice", "bob")
        recording = hub.manager.start_recording(port)
        alice.send(note_on(0, 60, 100), note_on(0, 64, 100), control_change(0, 64, 127))
        alice.send(note_off(0, 64))
        await wait_for(lambda: len(bob.received) == 4, 5, "bob to hear alice")
        await hub.manager.stop_recording(recording.id)  # alice still holds 60 and the pedal
    path = hub.manager.path_of(recording.id)
    assert path is not None
    alices = timeline(path)["alice"]
    assert [value for _, value in alices] == [
        note_on(0, 60, 100),
        note_on(0, 64, 100),
        control_change(0, 64, 127),
        note_off(0, 64),
        note_off(0, 60),  # ended with the file, not left sounding
        control_change(0, 64, 0),
    ]
    end = mido.MidiFile(str(path)).tracks[0]  # the conductor track ends at the stop
    assert alices[-1][0] == alices[-2][0] == sum(event.time for event in end)


async def test_a_panic_ends_in_the_smf_the_notes_it_ended(
    tmp_path: Path, make_peer: MakePeer
) -> None:
    (port,) = free_ports(1)
    async with recording_hub(f"[rooms]\nJam = {port}", tmp_path) as hub:
        alice, bob, carol = await joined(make_peer, port, "alice", "bob", "carol")
        recording = hub.manager.start_recording(port)
        alice.send(note_on(0, 30, 100), note_on(0, 60, 100))  # Low, Mid
        bob.send(note_on(2, 20, 90), control_change(2, 64, 127))
        await wait_for(lambda: len(carol.received) == 4, 5, "carol to hear them")
        status, _ = await hub.call("POST", "/api/panic", {"port": port, "range": "Low"})
        assert status == 200
        await wait_for(lambda: note_off(2, 20) in carol.received, 5, "the panic")
        status, _ = await hub.call("POST", "/api/panic", {"port": port, "range": "All"})
        assert status == 200
        await wait_for(lambda: carol.received.count(note_off(2, 20)) == 2, 5, "the second")
        await hub.manager.stop_recording(recording.id)
    path = hub.manager.path_of(recording.id)
    assert path is not None
    tracks = timeline(path)
    low, everything = [tick for tick, text in tracks["markers"] if text == f"panic on port {port}"]
    assert tracks["alice"] == [
        (tracks["alice"][0][0], note_on(0, 30, 100)),
        (tracks["alice"][1][0], note_on(0, 60, 100)),
        (low, note_off(0, 30)),  # the Low panic ends only what it covers
        (everything, note_off(0, 60)),
    ]
    assert [(tick, value) for tick, value in tracks["bob"][2:]] == [
        (low, note_off(2, 20)),
        (everything, control_change(2, 64, 0)),  # All lifts the pedal too
    ]
    assert "carol" not in tracks


async def test_the_size_cap_is_exact_under_a_flood(tmp_path: Path, make_peer: MakePeer) -> None:
    (port,) = free_ports(1)
    cap = 20_000
    async with recording_hub(
        f"[rooms]\nJam = {port}", tmp_path, flush_interval=0.05, max_recording_mb=cap / 1e6
    ) as hub:
        alice, bob = await joined(make_peer, port, "alice", "bob")
        recording = hub.manager.start_recording(port)
        sizes: list[int] = []
        journal_path = tmp_path / (recording.id + journal.SUFFIX)
        sent = 0
        while recording.id in hub.manager.active and sent < 200:  # 400 KB of journal
            alice.send(SYSEX)
            sent += 1
            await wait_for(lambda n=sent: len(bob.received) >= n, 5, "the SysEx forwarded")
            if journal_path.exists():
                sizes.append(journal_path.stat().st_size)
        await wait_for(lambda: recording.state == "done", 10, "the cap to stop it")
        assert sizes and max(sizes) <= cap
        assert recording.size <= cap  # the journal as finished, end record included
        assert recording.capped and sent < 200
        info = hub.manager.index[recording.id]
        assert 0 < info.messages < sent
        before = len(bob.received)
        alice.send(note_on(0, 60, 100))  # the room plays on
        await wait_for(lambda: len(bob.received) == before + 1)


async def test_an_auto_room_that_hit_its_cap_waits_for_quiet_before_recording_again(
    tmp_path: Path, make_peer: MakePeer
) -> None:
    (port,) = free_ports(1)
    room = f'[rooms.Jam]\nport = {port}\nrecord = "auto"'
    async with recording_hub(
        room, tmp_path, flush_interval=0.05, max_recording_mb=0.02, split_after=0.02
    ) as hub:  # quiet means 1.2 s without a note
        (alice,) = await joined(make_peer, port, "alice")
        endpoint = hub.running.hub.endpoints[port]
        alice.send(SYSEX)
        await wait_for(lambda: len(hub.manager.active) == 1, 5, "an auto recording")
        (first,) = hub.manager.active.values()
        while first.id in hub.manager.active:
            alice.send(SYSEX)
            await asyncio.sleep(0.01)
        await wait_for(lambda: first.id in hub.manager.index, 10, "the capped recording")
        heard = endpoint.messages_in
        alice.send(note_on(0, 60, 100))  # still playing: no new recording
        await wait_for(lambda: endpoint.messages_in == heard + 1, 5, "the hub to hear it")
        assert hub.manager.active == {}
        assert port in hub.manager.held_back
        await wait_for(lambda: port not in hub.manager.held_back, 10, "the room to be quiet")
        alice.send(note_off(0, 60))
        await wait_for(lambda: len(hub.manager.active) == 1, 5, "the next auto recording")


def big_journal(directory: Path, rid: str, megabytes: float) -> Path:
    """A journal as the writer makes it: four players, NoteOn/NoteOff pairs."""
    header = Header(id=rid, port=1, label="Big", start=time.time(), name=rid)
    path = directory / (rid + journal.SUFFIX)
    file = journal.JournalFile(path, header)
    for track in range(4):
        file.player(0, track, f"p{track}")
    file.flush()
    file.close()
    with open(path, "ab") as out:
        ms = 0
        while out.tell() < megabytes * 1e6:
            lines = []
            for n in range(20_000):
                ms += 1
                track, note = n % 4, n % 128
                lines.append(
                    b'{"t":%d,"track":%d,"midi":"%02x%02x64"}\n' % (ms, track, 0x90 | track, note)
                )
                lines.append(
                    b'{"t":%d,"track":%d,"midi":"%02x%02x00"}\n' % (ms, track, 0x80 | track, note)
                )
            out.write(b"".join(lines))
        out.write(b'{"t":%d,"end":true}\n' % (ms + 1))
    return path


def peak_growth_kb(work: Callable[[], None]) -> int:
    """Peak RSS growth of this process while ``work()`` runs, in kB (the kernel's
    high-water mark, reset first through /proc/self/clear_refs)."""

    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise AssertionError(key)

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status("VmRSS")
    work()
    return status("VmHWM") - before


def test_finishing_and_reading_back_take_memory_independent_of_the_length(
    tmp_path: Path,
) -> None:
    """20 MB of journal (520,000 messages): the old reader kept a list of them all
    (hundreds of MB); streaming stays within a few MB, as it does for 2 MB."""
    growth: dict[str, list[int]] = {"finish": [], "info": [], "replay": []}
    infos: list[smf.Info] = []
    counted: list[int] = []

    def finish(path: Path) -> None:
        infos.append(files.finish(path))

    def info(path: Path) -> None:
        infos.append(smf.read_info(path))

    def replay(path: Path) -> None:
        counted.append(sum(1 for _ in smf.timed_messages(path)))

    for megabytes in (2, 20):
        infos.clear()
        counted.clear()
        path = big_journal(tmp_path, f"Big{megabytes}", megabytes)
        target = tmp_path / f"Big{megabytes}.mid"
        growth["finish"].append(peak_growth_kb(lambda p=path: finish(p)))
        assert not path.exists() and infos[0].messages > megabytes * 20_000
        growth["info"].append(peak_growth_kb(lambda t=target: info(t)))
        assert infos[1] == infos[0]
        growth["replay"].append(peak_growth_kb(lambda t=target: replay(t)))
        assert counted == [infos[0].messages]
    for kind, (small, large) in growth.items():
        assert large < 16_000, (kind, growth)  # kB
        assert large - small < 8_000, (kind, growth)


def test_the_smf_as_mido_reads_it(tmp_path: Path) -> None:
    """The streamed SMF against the independent reader: names (Unicode), markers,
    SysEx, per-track times, a record cut by a crash, and the info and replay order."""
    header = Header(id="Take", port=5, label="Jäm", start=1_700_000_000.0, name="Jäm take")
    path = tmp_path / "Take.journal"
    file = journal.JournalFile(path, header)
    file.player(0, 1, "bob 🎹")
    file.player(0, 0, "alice")
    file.marker(0, "present: alice")
    file.message(5, 0, note_on(0, 60, 100))
    file.message(5, 1, bytes([0xF0, 1, 2, 3, 0xF7]))
    file.message(300, 1, control_change(3, 7, 100))
    file.marker(400, "joined: carol")
    file.message(20_000, 0, note_off(0, 60))
    file.flush()
    file.close()
    with open(path, "ab") as out:
        out.write(b'{"t":20001,"track":0,"mi')  # cut by a crash
    info = files.finish(path)
    target = tmp_path / "Take.mid"
    midi = mido.MidiFile(str(target), charset="utf-8")
    assert midi.type == 1 and midi.ticks_per_beat == smf.TICKS_PER_BEAT
    assert [track.name for track in midi.tracks] == ["Jäm take", "alice", "bob 🎹"]
    tracks = timeline(target)
    assert tracks == {
        "markers": [(0, "present: alice"), (400, "joined: carol")],
        "alice": [(5, note_on(0, 60, 100)), (20_000, note_off(0, 60))],
        "bob 🎹": [(5, bytes([0xF0, 1, 2, 3, 0xF7])), (300, control_change(3, 7, 100))],
    }
    (text,) = [e.text for e in midi.tracks[0] if e.type == "text"]
    assert json.loads(text.removeprefix(smf.INFO_PREFIX)) == header.as_dict()
    assert info == smf.read_info(target)
    assert (info.players, info.messages, info.duration) == (["alice", "bob 🎹"], 4, 20.0)
    assert info.size == os.path.getsize(target) and midi.length == pytest.approx(20.0)
    ours = [(round(at, 6), message) for at, message in smf.timed_messages(target)]
    now, theirs = 0.0, []
    for event in midi:
        now += event.time
        if not event.is_meta:
            theirs.append((round(now, 6), bytes(event.bin())))
    assert ours == theirs
    old = recording_file(tmp_path, Header("Old", 1, "O", 1.0, "Old"), {0: "p"}, [])
    assert smf.read_info(old).players == ["p"]


async def test_shutdown_says_by_first_then_ends_the_recordings(tmp_path: Path) -> None:
    """The old order finished the recordings first: the SMF had neither the leave nor
    the release, and the participants waited for the file to be written."""
    (port,) = free_ports(1)
    config, url = write_config(tmp_path, f"[rooms]\nJam = {port}", flush_interval=0.2)
    hub = await serve(tmp_path, config, url)
    alice = PyPeer("alice")
    try:
        await alice.connect(port)
        status, rec = await hub.call("POST", "/api/recordings", {"port": port})
        assert status == 201
        alice.send(note_on(0, 60, 100))

        async def heard() -> bool:
            return bool((await hub.row(rec["id"]))["messages"] == 1)

        await wait_for(heard, 5, "the note recorded")
        hub.served.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(hub.served.proc.wait(), 30)  # a guard, not a measure
        assert hub.served.proc.returncode == 0
        await wait_for(lambda: "bye" in alice.left(), 5, "alice's BY")
    finally:
        alice.close()
    log = hub.served.log()
    left = log.index("left (shutdown)")
    ends = [f"recording {rec['id']} saved", f"recording {rec['id']} is not finished"]
    ended = min(log.index(end) for end in ends if end in log)
    assert left < ended, log  # BY (and its leave) before the recording ends
    finished = hub.directory / f"{rec['id']}.mid"
    if not finished.exists():  # past the shutdown budget: recovered at the next start
        hub = await serve(tmp_path, config, url)
        try:
            await hub.served.has(f"recovered unfinished recording {rec['id']}", 20)
        finally:
            await hub.served.stop()
    tracks = timeline(finished)
    # alice still held her note: the hub's release at shutdown is in her track.
    assert [value for _, value in tracks["alice"]] == [note_on(0, 60, 100), note_off(0, 60)]
    assert tracks["markers"][-1][1] == "left: alice (shutdown)"


async def test_a_recording_left_unfinished_at_shutdown_is_whole_and_recovered_next_start(
    tmp_path: Path, make_peer: MakePeer
) -> None:
    """Shutdown waits for recordings only up to its budget (here none at all): the
    journal has its end record and is finished at the next start, as after a crash."""
    (port,) = free_ports(1)
    async with recording_hub(f"[rooms]\nJam = {port}", tmp_path) as hub:
        (alice,) = await joined(make_peer, port, "alice")
        recording = hub.manager.start_recording(port)
        alice.send(note_on(0, 60, 100))
        await wait_for(lambda: recording.flushed == 1, 5, "the note in the journal")
        await hub.manager.close(budget=0)
        assert recording.id not in hub.manager.index
    path = tmp_path / (recording.id + journal.SUFFIX)
    await wait_for(lambda: path.read_bytes().endswith(b',"end":true}\n'), 5, "the end record")
    assert not (tmp_path / (recording.id + smf.SUFFIX)).exists()
    async with recording_hub(f"[rooms]\nJam = {port}", tmp_path) as hub:
        assert recording.id in hub.manager.index
        finished = hub.manager.path_of(recording.id)
    assert finished is not None and not path.exists()
    # What alice still held is ended at the file's end, as for any recording.
    assert [value for _, value in timeline(finished)["alice"]] == [
        note_on(0, 60, 100),
        note_off(0, 60),
    ]


async def test_a_replay_longer_than_a_read_batch_plays_everything_in_order(
    tmp_path: Path, make_peer: MakePeer
) -> None:
    """Replay reads the file a batch at a time on a worker thread, ahead of playing."""
    played = [
        (n // 5, 0, note_on(0, n % 128, 1 + n % 100) if n % 2 == 0 else note_off(0, (n - 1) % 128))
        for n in range(5000)
    ]  # 5 messages a millisecond: more than two batches
    header = Header(id="Long", port=1, label="L", start=time.time(), name="long take")
    recording_file(tmp_path, header, {0: "keys"}, played)
    (port,) = free_ports(1)
    async with recording_hub(f"[rooms]\nJam = {port}", tmp_path) as hub:
        (alice,) = await joined(make_peer, port, "alice")
        replay = await hub.manager.play("Long", port)
        await wait_for(lambda: replay.state == "done", 30, "the replay to end")
        await wait_for(lambda: len(alice.received) >= len(played), 10, "alice to hear it all")
        assert alice.received == [message for _, _, message in played]
        assert replay.sent == len(played)
