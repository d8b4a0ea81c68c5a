"""Loop cost of recording: the hub's forwarding time per datagram batch (read to sent,
the same figure as midihub_forward_latency_seconds) for a pair of participants, with and
without a recording of their room running, alternated in the same run.

    .venv/bin/python -m bench.record_cost [--packets 3000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from midihub.midi.messages import note_off, note_on
from tests.record_support import recording_hub
from tests.support import PyPeer, free_ports, wait_for


async def measure(packets: int, rounds: int) -> dict[str, float]:
    (port,) = free_ports(1)
    samples: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        async with recording_hub(f"[rooms]\nJam = {port}", Path(tmp)) as hub:
            current: list[float] = []
            hub.running.server.on_forward = current.append
            alice, bob = PyPeer("alice"), PyPeer("bob")
            try:
                await alice.connect(port)
                await bob.connect(port)
                for _ in range(rounds):
                    for mode in ("off", "on"):
                        recording = hub.manager.start_recording(port) if mode == "on" else None
                        current.clear()
                        expected = len(bob.received) + packets
                        for n in range(packets):
                            alice.send(note_on(0, n % 128, 100) if n % 2 else note_off(0, n % 128))
                            if n % 50 == 49:
                                await asyncio.sleep(0.001)
                        await wait_for(lambda e=expected: len(bob.received) >= e, 30)
                        samples[mode] += current
                        if recording is not None:
                            await hub.manager.stop_recording(recording.id)
            finally:
                alice.close()
                bob.close()
    off, on = statistics.median(samples["off"]), statistics.median(samples["on"])
    return {
        "batches_off": len(samples["off"]),
        "batches_on": len(samples["on"]),
        "median_off_us": off * 1e6,
        "median_on_us": on * 1e6,
        "ratio": on / off,
        "p99_off_us": statistics.quantiles(samples["off"], n=100)[98] * 1e6,
        "p99_on_us": statistics.quantiles(samples["on"], n=100)[98] * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    result = asyncio.run(measure(args.packets, args.rounds))
    for key, value in result.items():
        print(f"{key:14} {value:.3f}" if isinstance(value, float) else f"{key:14} {value}")


if __name__ == "__main__":
    main()
