"""The hub's packet path without sockets: datagrams/s through ``Hub.receive`` +
``drain`` for the pair, room (16, all playing) and stage (a room of 16 where 2 play)
shapes, the pair again with 1000 idle participants on 20 other ports (idle), the stage
with a recorder and a monitor listening (tapped), and a cProfile of it (``--profile``).
Rates are per second of this thread's CPU time (``time.thread_time``), not of the wall
clock, so other jobs on a shared machine do not count; with each rate, the median wall
time from handing a datagram to ``Hub.receive`` to the first datagram ``drain`` yields
(its forward: what a receiver waits for).

The clock runs as on a live hub (``STEP`` apart, 4000 datagrams/s): the loop calls
``Hub.tick`` when the deadline it was given is due, as ``net.server`` does with its one
timer, so timers (guards, RS, clock sync) cost what they cost there.

``--compiled`` runs the mypyc build of the core (``build/mypyc``, tools/mypyc_build.py)
instead of ``src/``; ``--compare`` builds it if needed and times both, each run in a fresh
process, the two alternating (the order swaps every round), and prints the ratios.

Complements ``run.py``: no kernel, no event loop, so a change to the sans-IO core
shows up here undiluted. ``python bench/core.py [--profile pair|room|stage|idle]
[--shapes ...] [--compiled | --compare [--rounds N]]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.memnet
# src/, or (--compiled) build/mypyc: the package with its core compiled by tools/mypyc_build.py
sys.path.insert(0, sys.path[0] + ("/build/mypyc" if "--compiled" in sys.argv else "/src"))

from midihub import config as c
from midihub.hub import Endpoint, Hub
from midihub.hub.hub import participant_id
from midihub.rtp import Event, MidiReceived, PortKind, SessionTable, encode_sections
from midihub.web.monitor import message_json
from tests.memnet import GROUP_AND_ROOM, MemNet

ROOT = Path(__file__).resolve().parents[1]
CONFIG = GROUP_AND_ROOM
SHAPES = ("pair", "room", "stage", "idle", "tapped")
IDLE_PORTS = [5100 + 2 * i for i in range(20)]  # 50 idle participants on each
IDLE_CONFIG = CONFIG + "".join(f"Idle{i} = {port}\n" for i, port in enumerate(IDLE_PORTS))
STEP = 0.00025  # simulated seconds between datagrams: 20 000 take 5 s, before idle CKs
MAX_SLEEP = 1.0  # net.server's: the timer never sleeps longer


class Wire(MemNet):
    """The tests' in-memory network (tests/memnet.py), instant: peers join through it
    during setup; the measured loop then feeds the hub directly, so it times the hub's
    work alone."""

    def __init__(self, config: str = CONFIG) -> None:
        super().__init__(Hub(c.parse(config).spec(), rng=random.Random(7)), latency=0.0)
        self.run_for(10.0)

    def peer(self, name: str, port: int) -> SessionTable:
        peer = self.add_peer(name, port)
        self.run_for(0.0)
        assert peer.table.established
        return peer.table

    def data_addr(self, name: str) -> tuple[str, int]:
        host, port = self.peers[name].addr
        return host, port + 1

    def packets(self, name: str, count: int) -> list[bytes]:
        """``count`` data packets from ``name``: NoteOn then NoteOff, one message each."""
        host = self.peers[name].table
        out: list[bytes] = []
        for i in range(count):
            note = 36 + i % 48
            message = bytes((0x90, note, 100)) if i % 2 == 0 else bytes((0x80, note - 1, 0))
            sections = encode_sections([(0, message)], 1200)
            host.send(host.established, sections, self.now)
            out += [data for kind, data, _ in host.datagrams_to_send() if kind is PortKind.DATA]
        return out


class Taps:
    """Listeners doing on the loop what a recording (``RecordingManager._on_midi``: who
    played, what, when, appended) and a monitor with a viewer (``Monitor.on_event``: the
    message as JSON-ready items, batched per port) do per event. Both hand their items on
    every ``KEEP`` (the recording's writer thread, the monitor's interval), so what they
    keep stays bounded, as there."""

    KEEP = 1000

    def __init__(self, hub: Hub) -> None:
        self.recorded: list[tuple[str, str, Any, float]] = []
        self.shown: list[dict[str, Any]] = []
        hub.midi_listeners += [self.record, self.monitor]
        hub.listeners.append(self.monitor)

    def record(self, endpoint: Endpoint, event: Event) -> None:
        if isinstance(event, MidiReceived):
            who = event.who
            player = participant_id(endpoint, who)
            self.recorded.append((player, who.name, event.commands, time.monotonic()))
            if len(self.recorded) >= self.KEEP:
                self.recorded = []

    def monitor(self, endpoint: Endpoint, event: Event) -> None:
        if isinstance(event, MidiReceived):
            who = event.who
            self.shown.append(
                {
                    "type": "midi",
                    "at": time.time(),
                    "from": {"id": participant_id(endpoint, who), "name": who.name},
                    "messages": [message_json(msg) for _, msg in event.commands],
                }
            )
            if len(self.shown) >= self.KEEP:
                self.shown = []


def scenario(shape: str) -> tuple[Wire, list[tuple[int, str, bytes]]]:
    wire = Wire(IDLE_CONFIG if shape == "idle" else CONFIG)
    feed: list[tuple[int, str, bytes]] = []
    if shape in ("pair", "idle"):
        wire.peer("a", 5040)
        wire.peer("b", 5042)
        if shape == "idle":  # they join, then say nothing: only their timers remain
            for i in range(1000):
                wire.add_peer(f"idle{i}", IDLE_PORTS[i % len(IDLE_PORTS)])
            wire.run_for(0.0)
            assert sum(len(wire.hub.endpoints[p].table.established) for p in IDLE_PORTS) == 1000
        feed = [(5040, "a", data) for data in wire.packets("a", 20_000)]
    elif shape == "room":
        names = [f"p{i}" for i in range(16)]
        for name in names:
            wire.peer(name, 5060)
        streams = [wire.packets(name, 1_250) for name in names]
        feed = [(5060, names[i % 16], streams[i % 16][i // 16]) for i in range(20_000)]
    else:  # stage (tapped: listened to): a room of 16 where 2 play and 14 listen
        names = [f"p{i}" for i in range(16)]
        for name in names:
            wire.peer(name, 5060)
        streams = [wire.packets(name, 10_000) for name in names[:2]]
        feed = [(5060, names[i % 2], streams[i % 2][i // 2]) for i in range(20_000)]
        if shape == "tapped":
            Taps(wire.hub)
    return wire, feed


def run(shape: str) -> tuple[float, float]:
    """Datagrams per CPU second and the median µs to the first datagram out; between datagrams
    the clock moves ``STEP`` on, and the hub's timers run as ``net.server`` runs them: one
    wake-up, only ever brought forward by a drain's ``pending_deadline``, and set from
    ``next_deadline`` after each tick."""
    wire, feed = scenario(shape)
    hub, now = wire.hub, wire.now
    addrs = {name: wire.data_addr(name) for name in wire.peers}
    wake = min(hub.next_deadline() or now + MAX_SLEEP, now + MAX_SLEEP)
    clock = time.perf_counter
    firsts: list[float] = []
    start = time.thread_time()
    for port, name, data in feed:
        now += STEP
        if now >= wake:
            hub.tick(now)
            for _ in hub.drain():
                pass
            wake = min(hub.next_deadline() or now + MAX_SLEEP, now + MAX_SLEEP)
        began = clock()
        hub.receive(port, PortKind.DATA, data, addrs[name], now)
        first = 0.0
        for _ in hub.drain():
            if not first:
                first = clock()
        if first:
            firsts.append(first - began)
        due = hub.pending_deadline
        if due is not None and due < wake:
            wake = due
    rate = len(feed) / (time.thread_time() - start)
    return rate, statistics.median(firsts) * 1e6 if firsts else 0.0


def compare(shapes: list[str], rounds: int) -> None:
    """Pure Python against the compiled core: one run per process, alternating."""
    subprocess.run([sys.executable, str(ROOT / "tools" / "mypyc_build.py")], check=True)
    variants = ("pure", "compiled")
    rates: dict[tuple[str, str], list[float]] = {}
    for round_ in range(rounds):
        for shape in shapes:
            for variant in variants[round_ % 2 :] + variants[: round_ % 2]:
                command = [sys.executable, __file__, "--once", "--shapes", shape]
                command += ["--compiled"] if variant == "compiled" else []
                out = subprocess.run(command, check=True, capture_output=True, text=True)
                rates.setdefault((shape, variant), []).append(float(out.stdout))
    print("| shape | pure Python, datagrams/s | compiled | compiled / pure (medians) |")
    print("|---|---|---|---|")
    for shape in shapes:
        pure, compiled = rates[shape, "pure"], rates[shape, "compiled"]
        cells = [" / ".join(f"{r:,.0f}" for r in runs) for runs in (pure, compiled)]
        ratio = statistics.median(compiled) / statistics.median(pure)
        print(f"| {shape} | {cells[0]} | {cells[1]} | {ratio:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=SHAPES)
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=SHAPES)
    parser.add_argument("--compiled", action="store_true", help="the mypyc build's core")
    parser.add_argument("--compare", action="store_true", help="pure vs compiled, alternating")
    parser.add_argument("--rounds", type=int, default=5, help="of --compare")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compare:
        compare(args.shapes, args.rounds)
        return
    if args.once:  # one run, for --compare
        print(run(args.shapes[0])[0])
        return
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, args.profile)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
        return
    for shape in args.shapes:
        runs = [run(shape) for _ in range(3)]
        best = max(rate for rate, _ in runs)
        first = min(first for _, first in runs)
        print(
            f"{shape}: {best:,.0f} datagrams in per CPU second through the hub core, "
            f"first datagram out after {first:.1f} µs (median)"
        )


if __name__ == "__main__":
    main()
