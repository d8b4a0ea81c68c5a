"""Recording and replay with real third-party peers: npm ``rtpmidi`` processes play
into (and listen to) a hub room over UDP on 127.0.0.1; the SMF is read with mido."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import mido
import pytest

from midihub.midi.messages import control_change, note_off, note_on, pitch_bend, program_change
from midihub.record.journal import Header
from tests.interop.npm_peer import NpmPeer
from tests.record_support import ServedHub, recording_file, serve, write_config
from tests.seeds import seeded
from tests.support import free_ports

# The hub is `midihub serve` (its own loop) and the players are Node processes: the
# test's loop only drives them, so one loop for the test is enough.
pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(120),
    pytest.mark.asyncio(loop_factories=["asyncio"]),
]

SEED = 1717
TAKES = 5  # a take whose timing a shared machine's scheduler disturbed is played again
LATE_MS = 3.0  # a packet recorded within 3 ms of its send time (less the fastest trip)...
HELD_UP = 0.1  # ...but for at most 10 % per player, which a busy machine held up


@pytest.fixture
async def peers() -> AsyncIterator[list[NpmPeer]]:
    started: list[NpmPeer] = []
    yield started
    await asyncio.gather(*(peer.close() for peer in started))


def script(player: int, rng: random.Random) -> list[tuple[list[bytes], float]]:
    """One player's performance: packets of messages, each followed by a gap (s)."""
    ch = player
    packets: list[list[bytes]] = [[program_change(ch, 10 + player)]]
    for n in range(10):
        key = 48 + 12 * player + n
        packets.append([note_on(ch, key, 40 + 7 * n)])
        if n == 2:
            packets.append([control_change(ch, 64, 127)])
        if n % 3 == 1:
            packets.append([pitch_bend(ch, 8192 + 300 * n)])
        packets.append([note_off(ch, key, 0)])
        if n == 5:
            packets.append([bytes([0xF0, 0x7D, player, n, 1, 2, 3, 0xF7])])
        if n == 7:
            packets.append([control_change(ch, 64, 0), pitch_bend(ch, 8192)])
    return [(packet, rng.uniform(0.02, 0.09)) for packet in packets]


def favour(pids: list[int]) -> None:
    """Timing is measured across processes: where allowed (root), let the hub and the
    peers preempt the rest of a shared machine's load. Elsewhere a no-op."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, -10)


def messages_of(track: mido.MidiTrack) -> list[tuple[int, bytes]]:
    """(absolute tick = ms, message bytes) of every MIDI event of a track."""
    out: list[tuple[int, bytes]] = []
    now = 0
    for event in track:
        now += event.time
        if not event.is_meta:
            out.append((now, bytes(event.bin())))
    return out


async def one_take(
    hub: ServedHub, port: int, players: list[NpmPeer], names: list[str], rng: random.Random
) -> list[str]:
    """Record one scripted performance; returns the timing misses (content is asserted)."""
    base = 1000 * len([e for e in players[0].events if e["event"] == "sent"])
    status, started = await hub.call("POST", "/api/recordings", {"port": port})
    assert status == 201, started
    scripts = [script(i, rng) for i in range(3)]

    # One timeline for the three players, no two sends within 8 ms of each other (a
    # loaded two-core machine cannot wake three processes at the same millisecond).
    timeline: list[tuple[float, int, int]] = []
    for index, performance in enumerate(scripts):
        at = index * 0.011
        for number, (_, gap) in enumerate(performance):
            timeline.append((at, index, number))
            at += gap
    timeline.sort()
    for k in range(1, len(timeline)):
        if timeline[k][0] - timeline[k - 1][0] < 0.008:
            timeline[k] = (timeline[k - 1][0] + 0.008, *timeline[k][1:])
    loop = asyncio.get_running_loop()
    origin = loop.time() + 0.05
    for at, index, number in timeline:
        await asyncio.sleep(max(origin + at - loop.time(), 0))
        players[index].send(*scripts[index][number][0], tag=base + number)

    total = sum(len(packet) for s in scripts for packet, _ in s)
    for _ in range(100):
        if (await hub.row(started["id"]))["messages"] >= total:
            break
        await asyncio.sleep(0.1)
    assert (await hub.row(started["id"]))["messages"] == total
    status, stopped = await hub.call("POST", f"/api/recordings/{started['id']}/stop")
    assert status == 200 and stopped["state"] == "done", stopped
    assert sorted(stopped["players"]) == sorted(names)

    data = await hub.download(stopped["file"])
    midi = mido.MidiFile(file=io.BytesIO(data), charset="utf-8")
    assert midi.type == 1 and midi.ticks_per_beat == 500
    assert [e.tempo for e in midi.tracks[0] if e.type == "set_tempo"] == [500_000]
    misses: list[str] = []
    tracks = {track.name: messages_of(track) for track in midi.tracks[1:]}
    assert sorted(tracks) == sorted(names)
    for index, player in enumerate(players):
        recorded = tracks[player.name]
        sent = [m for packet, _ in scripts[index] for m in packet]
        assert [m for _, m in recorded] == sent, f"seed {SEED}: {player.name}"
        # Per packet: the recorded time of its first message against the sender's clock.
        sent_times: list[float] = []
        recorded_times: list[int] = []
        cursor = 0
        for number, (packet, _) in enumerate(scripts[index]):
            at = player.sent_at(base + number)
            assert at is not None
            sent_times.append(at)
            recorded_times.append(recorded[cursor][0])
            assert {t for t, _ in recorded[cursor : cursor + len(packet)]} == {recorded[cursor][0]}
            cursor += len(packet)
        # Each packet's recorded time less its send time is the trip plus one offset (the
        # recording's start): the least of them is the undisturbed trip. A packet the
        # machine's scheduler held up shows as a late one; a recorder that mis-timed (a
        # wrong clock, unit, rounding or track offset) puts most of them off.
        lateness = [r - s for r, s in zip(recorded_times, sent_times, strict=True)]
        late = [k for k, value in enumerate(lateness) if value - min(lateness) > LATE_MS]
        if len(late) > len(lateness) * HELD_UP:
            misses.append(
                f"{player.name}: packets {late} of {len(lateness)} recorded more than "
                f"{LATE_MS} ms later than their send time allows (lateness, ms: "
                f"{[round(value - min(lateness), 1) for value in lateness]})"
            )
    return misses


@pytest.mark.alone  # gaps to 3 ms across four processes: no other test's load beside it
async def test_three_npm_players_recorded_a_track_each_with_their_timing(
    peers: list[NpmPeer], tmp_path: Path
) -> None:
    rng = seeded(SEED, "players' scripts")
    (port,) = free_ports(1)
    names = ["anna-keys", "ben-bass", "cleo-pads"]
    config, url = write_config(tmp_path, f"[rooms]\nJam = {port}")
    hub = await serve(tmp_path, config, url)
    try:
        players = list(await asyncio.gather(*(NpmPeer.start(name) for name in names)))
        peers.extend(players)
        favour([hub.served.proc.pid, *(p.process.pid for p in players)])
        await asyncio.gather(*(p.connect(port) for p in players))
        for player in players:  # warm the path (first sends) before the take
            player.send(control_change(15, 3, 0), tag=-1)
        await asyncio.gather(*(p.wait_midi(2) for p in players))
        misses: list[str] = []
        for attempt in range(TAKES):
            misses = await one_take(hub, port, players, names, rng)
            if not misses:
                break
            print(f"take {attempt + 1}: timing disturbed (seed {SEED}): {misses}")
        assert not misses, f"seed {SEED}: in {TAKES} takes, the timing was off: {misses}"
    finally:
        await hub.served.stop()


def take(directory: Path, rid: str, name: str, times_and_messages: list[tuple[int, bytes]]) -> None:
    """A recording made now (older ones would fall to retention) with one player."""
    header = Header(id=rid, port=0, label="Take", start=time.time(), name=name)
    midi = [(ms, 0, message) for ms, message in times_and_messages]
    recording_file(directory, header, {0: "keys"}, midi, end=times_and_messages[-1][0] + 10)


async def test_replay_into_a_room_keeps_order_and_timing_and_stop_releases(
    peers: list[NpmPeer], tmp_path: Path
) -> None:
    rng = seeded(SEED, "players' scripts")
    played: list[tuple[int, bytes]] = []
    at = 0
    for n in range(24):
        at += rng.randint(15, 90)
        message = note_on(0, 60 + n % 12, 90) if n % 2 == 0 else note_off(0, 60 + (n - 1) % 12)
        played.append((at, message))
    played.insert(5, (played[4][0], control_change(0, 64, 127)))
    played.append((at + 20, control_change(0, 64, 0)))
    played.append((at + 40, bytes([0xF0, 0x7D, 9, 9, 0xF7])))
    (tmp_path / "recordings").mkdir()
    take(tmp_path / "recordings", "Take_1", "last night", played)
    held = [(0, note_on(2, 70, 100)), (20_000, note_off(2, 70))]
    take(tmp_path / "recordings", "Held_1", "held", held)
    (port,) = free_ports(1)
    config, url = write_config(tmp_path, f"[rooms]\nJam = {port}")
    hub = await serve(tmp_path, config, url)

    async def names() -> list[str]:
        _, body = await hub.call("GET", "/api/participants")
        return [p["name"] for entry in body["ports"] for p in entry["participants"]]

    async def replay_state(replay_id: str) -> str:
        _, body = await hub.call("GET", "/api/replays")
        return str(next(r["state"] for r in body if r["id"] == replay_id))

    try:
        (listener,) = await asyncio.gather(NpmPeer.start("listener"))
        peers.append(listener)
        await listener.connect(port)
        favour([hub.served.proc.pid, listener.process.pid])
        # The peer's arrival times are on CLOCK_MONOTONIC (process.hrtime), as is
        # time.monotonic: nothing can arrive before the replay was asked for plus its
        # time in the recording (each message is scheduled from the replay's start).
        # How late it arrives depends on the machine's load: bench/, not a test.
        asked = time.monotonic() * 1000
        status, replay = await hub.call("POST", "/api/recordings/Take_1/play", {"port": port})
        assert status == 201, replay
        assert "last night" in await names()
        await listener.wait_midi(len(played))
        heard = listener.midi_times
        assert [m for _, m in heard] == [m for _, m in played], f"seed {SEED}"
        for k in range(1, len(played)):
            expected = played[k][0] - played[0][0]
            assert heard[k][0] >= asked + expected, f"seed {SEED}: message {k} came early"
        lateness = [
            heard[k][0] - heard[0][0] - (played[k][0] - played[0][0]) for k in range(1, len(played))
        ]
        print(
            f"replay timing vs the recording, ms: min {min(lateness):.1f} max {max(lateness):.1f}"
        )
        for _ in range(50):
            if await replay_state(replay["id"]) == "done" and "last night" not in await names():
                break
            await asyncio.sleep(0.1)
        assert await replay_state(replay["id"]) == "done"
        assert "last night" not in await names()
        assert len(listener.midi) == len(played)  # nothing was held at the end

        # Stopped mid-note: the held note is released.
        before = len(listener.midi)
        status, replay = await hub.call("POST", "/api/recordings/Held_1/play", {"port": port})
        assert status == 201, replay
        await listener.wait_midi(before + 1)
        assert listener.midi[before] == note_on(2, 70, 100)
        status, stopped = await hub.call("POST", f"/api/replays/{replay['id']}/stop", {})
        assert status == 200 and stopped["state"] == "stopped"
        await listener.wait_midi(before + 2)
        assert listener.midi[before + 1] == note_off(2, 70)
        # The end marker: a panic (low notes, channel 16) sent by the hub after the stop.
        status, _ = await hub.call(
            "POST", "/api/panic", {"port": port, "range": "Low", "channels": [16]}
        )
        assert status == 200
        await listener.wait_midi(before + 2 + 43)
        assert listener.midi[before + 2 :] == [note_off(15, key) for key in range(43)]
        assert note_on(2, 70, 100) not in listener.midi[before + 1 :]
        assert "held" not in await names()
    finally:
        await hub.served.stop()
