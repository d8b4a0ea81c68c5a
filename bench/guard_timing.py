"""How close to their due time guard packets leave, on real sockets (loopback).

A timing figure, so a benchmark and not a test (tests/test_journal_sockets.py checks
the mechanism: the server's timer is armed for the hub's next deadline). A sender and
a receiver join a group; for each round the sender plays one note and the receiver
notes when the forwarded packet and the first three guard packets arrive (due 50, 150
and 350 ms after it). Reported: the guards' error against their due time, and how late
a 5 ms probe timer on the same loop ran meanwhile (a loop that was not scheduled is
the machine, not the hub's timer). ``python bench/guard_timing.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from midihub.midi.messages import note_on
from midihub.rtp.session import GUARD_FIRST
from tests.support import PyPeer, RunningHub, free_ports, make_config, wait_for
from tests.test_journal_sockets import TimedPeer, is_guard


async def measure(rounds: int) -> tuple[list[float], list[float]]:
    """Guard errors (ms, signed) and probe lateness (ms) over ``rounds`` notes."""
    loop = asyncio.get_running_loop()
    port_in, port_out = free_ports(2)
    errors: list[float] = []
    late: list[float] = []
    due_probe = loop.time() + 0.005

    def probe() -> None:
        nonlocal due_probe, handle
        late.append(max(0.0, loop.time() - due_probe) * 1000)
        due_probe = loop.time() + 0.005
        handle = loop.call_at(due_probe, probe)

    handle = loop.call_at(due_probe, probe)
    with RunningHub(make_config(f"[groups]\nG = [{port_in}, {port_out}]")):
        sender, receiver = PyPeer("sender"), TimedPeer("receiver", send_rs=False)
        try:
            await sender.connect(port_in)
            await receiver.connect(port_out)
            for n in range(rounds):
                receiver.arrivals.clear()
                sender.send(note_on(0, 40 + n % 60, 100))
                await wait_for(
                    lambda: sum(is_guard(d) for _, d in receiver.arrivals) >= 3, 5, "3 guards"
                )
                forwarded = next(t for t, d in receiver.arrivals if not is_guard(d))
                guards = [t for t, d in receiver.arrivals if is_guard(d)][:3]
                due = [forwarded + GUARD_FIRST * (2 ** (k + 1) - 1) for k in range(3)]
                errors += [(g - d) * 1000 for g, d in zip(guards, due, strict=True)]
        finally:
            handle.cancel()
            sender.close()
            receiver.close()
    return errors, late


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    errors, late = asyncio.run(measure(args.rounds))
    spread = sorted(abs(e) for e in errors)
    print(
        f"guard packets: {len(errors)}; error vs due time (ms): "
        f"median {statistics.median(errors):+.2f}, |error| p95 "
        f"{spread[int(0.95 * (len(spread) - 1))]:.2f}, max {spread[-1]:.2f}; "
        f"5 ms probe timer lateness (ms): median {statistics.median(late):.2f}, "
        f"max {max(late):.2f}"
    )


if __name__ == "__main__":
    main()
