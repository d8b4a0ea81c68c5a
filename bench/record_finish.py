"""Finishing a large recording while the hub plays on: a journal of ``--mb`` MB (four
players, NoteOn/NoteOff pairs, a marker now and then) is left in the recordings
directory of ``midihub serve``, which finishes it into an SMF at start (as after a
crash: the same streaming code the writer thread runs when a recording stops). A
participant on another room measures clock-sync round trips every 5 ms while it does,
then as long again once it is done. Also: the finish alone in this process, with its
peak RSS growth (``VmHWM``); and SIGTERM with a 28 MB recording open (when BY comes,
when the process exits, what the next start recovers).

    .venv/bin/python -m bench.record_finish [--mb 50]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import statistics
import tempfile
import time
from pathlib import Path

from midihub.record import files
from midihub.record.journal import Header, JournalFile
from tests.record_support import serve, write_config
from tests.support import PyPeer, free_ports


def journal(directory: Path, rid: str, megabytes: float) -> Path:
    """A journal as the writer makes it, of about ``megabytes`` MB."""
    header = Header(id=rid, port=1, label="Bench", start=time.time(), name=rid)
    path = directory / f"{rid}.journal"
    file = JournalFile(path, header)
    for track in range(4):
        file.player(0, track, f"player {track}")
    rng, ms, count = random.Random(1), 0, 0
    while file.size < megabytes * 1e6:
        for _ in range(5000):
            ms += 1
            track, note = count % 4, rng.randrange(128)
            file.message(ms, track, bytes([0x90 | track, note, 100]))
            file.message(ms, track, bytes([0x80 | track, note, 0]))
            count += 2
            if count % 5000 == 0:
                file.marker(ms, "joined: someone")
        file.flush()
    file.end(ms + 10)
    file.flush()
    file.close()
    return path


def memory() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in kB."""
    values: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def in_process(directory: Path, megabytes: float) -> dict[str, float]:
    path = journal(directory, "Alone", megabytes)
    size = path.stat().st_size
    before = memory()
    start = time.perf_counter()
    info = files.finish(path)
    seconds = time.perf_counter() - start
    after = memory()
    return {
        "journal_mb": size / 1e6,
        "smf_mb": info.size / 1e6,
        "messages": info.messages,
        "finish_s": seconds,
        "peak_rss_growth_mb": (after["VmHWM"] - before["VmRSS"]) / 1000,
    }


def quantiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in samples)
    return {
        "samples": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max_ms": ms[-1],
    }


async def clock_syncs(peer: PyPeer, until: asyncio.Future[None] | float) -> list[float]:
    """CK round trips, one started every 5 ms, until ``until`` (a future or a time)."""
    loop = asyncio.get_running_loop()
    assert peer.session is not None
    first = len(peer.rtts())
    while (until.done() if isinstance(until, asyncio.Future) else loop.time() >= until) is False:
        peer.table.sync_clock(peer.session, loop.time())
        peer.flush()
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    return peer.rtts()[first:]


async def against_the_hub(tmp: Path, megabytes: float) -> dict[str, object]:
    (tmp / "recordings").mkdir()
    journal(tmp / "recordings", "Big", megabytes)
    room, other = free_ports(2)
    config, url = write_config(tmp, f"[rooms]\nJam = {room}\nOther = {other}")
    hub = await serve(tmp, config, url)
    peer = PyPeer("timer")
    try:
        await peer.connect(other)
        done = asyncio.ensure_future(hub.served.has("recordings in", 120))
        started = asyncio.get_running_loop().time()
        during = await clock_syncs(peer, done)
        took = asyncio.get_running_loop().time() - started
        recovered = "recovered unfinished recording Big" in hub.served.log()
        after = await clock_syncs(peer, asyncio.get_running_loop().time() + took)
    finally:
        peer.close()
        await hub.served.stop()
    return {
        "recovered": recovered,
        "finish_and_scan_s": took,
        "during": quantiles(during),
        "after": quantiles(after),
    }


async def shutdown(tmp: Path, megabytes: float) -> dict[str, object]:
    """SIGTERM with a recording of ``megabytes`` MB open: when the participant gets BY,
    when the process has exited, and what the next start recovers."""
    (room,) = free_ports(1)
    config, url = write_config(tmp, f"[rooms]\nJam = {room}", flush_interval=0.2)
    hub = await serve(tmp, config, url)
    alice = PyPeer("alice")
    loop = asyncio.get_running_loop()
    try:
        await alice.connect(room)
        _, rec = await hub.call("POST", "/api/recordings", {"port": room})
        alice.send(bytes([0x90, 60, 100]))
        while (await hub.row(rec["id"]))["flushed"] < 1:
            await asyncio.sleep(0.05)
        path = hub.directory / f"{rec['id']}.journal"
        with open(path, "ab") as out:  # the rest of a long night, as the writer writes it
            line, ms = 0, 10
            while out.tell() < megabytes * 1e6:
                chunk = []
                for _ in range(10_000):
                    ms, line = ms + 1, line + 1
                    chunk.append(b'{"t":%d,"track":0,"midi":"90%02x64"}\n' % (ms, line % 128))
                out.write(b"".join(chunk))
        started = loop.time()
        hub.served.proc.send_signal(signal.SIGTERM)
        while "bye" not in alice.left():
            await asyncio.sleep(0.001)
        bye = loop.time() - started
        await hub.served.proc.wait()
        exited = loop.time() - started
    finally:
        alice.close()
    left = path.exists()
    hub = await serve(tmp, config, url)
    try:
        await hub.served.has(f"recovered unfinished recording {rec['id']}", 120)
        row = await hub.row(rec["id"])
    finally:
        await hub.served.stop()
    return {
        "journal_mb": megabytes,
        "bye_s": bye,
        "exit_s": exited,
        "journal_left_for_next_start": left,
        "recovered_messages": row["messages"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("in process:", in_process(Path(tmp), args.mb))
    with tempfile.TemporaryDirectory() as tmp:
        print("served:", asyncio.run(against_the_hub(Path(tmp), args.mb)))
    with tempfile.TemporaryDirectory() as tmp:
        print("shutdown:", asyncio.run(shutdown(Path(tmp), 28)))


if __name__ == "__main__":
    main()
