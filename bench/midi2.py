"""The "Network MIDI 2.0" scenario of ``make bench``: a Network MIDI 2.0 client (the tests'
independent client, ``tests/midi2_client.py``, on a UDP socket) and two RTP MIDI
participants in one room of a hub running in its own process (``midihub serve``), all on
127.0.0.1.

Three flows, one after the other, each message unique and timed in this one process
(``perf_counter`` just before sending, and when the receiving callback runs, so both ends
include this process's own event-loop scheduling, alike for every flow):

- **rtp pair**: RTP peer A → hub → RTP peer B (the reference);
- **midi2 → rtp**: a UMP Data datagram (MIDI 1.0 in UMP, FEC 3) → hub → RTP peer B;
- **rtp → midi2**: RTP peer B → hub → UMP Data datagram.

``python bench/midi2.py [--quick]`` prints the result as JSON; ``run.py`` calls ``run``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from browser import GRACE, RtpPeer, flow
from common import LOCALHOST, free_port_block, message_id

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.midi2_client
from tests.midi2_client import Midi2Client, UdpMidi2Client

BIN = Path(sys.executable).parent
FULL = {"rate": 200, "duration": 10.0}
QUICK = {"rate": 200, "duration": 2.0}


class StampingClient(UdpMidi2Client):
    """The test client, stamping when each benchmark message arrives."""

    def __init__(self, core: Midi2Client, remote: tuple[str, int]) -> None:
        super().__init__(core, remote)
        self.arrived: dict[int, float] = {}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        stamp = time.perf_counter()
        super().datagram_received(data, addr)
        for word, *_ in self.core.received:
            status, note, velocity = (word >> 16) & 0xFF, (word >> 8) & 0x7F, word & 0x7F
            if word >> 28 == 0x2 and velocity:
                self.arrived.setdefault(message_id(status, note, velocity), stamp)
        self.core.received.clear()

    def send_message(self, data: bytes) -> None:
        word = (0x2 << 28) | (data[0] << 16) | (data[1] << 8) | data[2]
        self.core.send([(word,)])
        self.flush()


async def scenario(params: dict[str, Any], room: int, midi2: int, peers: list[int]) -> Any:
    at_b: dict[int, float] = {}
    a = RtpPeer("bench-a", peers[0])
    b = RtpPeer("bench-b", peers[1], arrived=at_b)
    core = Midi2Client(name="bench midi2 client")
    client = await StampingClient.open((LOCALHOST, midi2), core)
    try:
        await a.join(room)
        await b.join(room)
        core.invite()
        client.flush()
        await client.until(lambda: core.state == "established")
        await asyncio.sleep(0.3)
        span = 2 * int(params["rate"] * params["duration"]) + 2
        return {
            "rtp_pair": await flow(a.send_message, at_b, 0, params),
            "midi2_to_rtp": await flow(client.send_message, at_b, span, params),
            "rtp_to_midi2": await flow(b.send_message, client.arrived, 2 * span, params),
        }
    finally:
        core.bye()
        client.flush()
        client.close()
        a.close()
        b.close()


def run(quick: bool = False) -> dict[str, Any]:
    """Start a hub, run the three flows, stop the hub; errors become ``{"error": ...}``."""
    params = QUICK if quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="midihub-bench-midi2-"))
    room, midi2, *peers = free_port_block(4, start=43000)  # midi2: the pair's first port
    config = workdir / "midi2.toml"
    config.write_text(
        f'[web]\nlisten = ""\n[stats]\ndatabase = "{workdir / "midihub.db"}"\n'
        f"[rooms.Jam]\nport = {room}\nmidi2 = {midi2}\n"
    )
    log_path = workdir / "hub.log"
    with log_path.open("w") as log:
        hub = subprocess.Popen(
            [str(BIN / "midihub"), "serve", "--config", str(config), "--bind", LOCALHOST],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while f"port {midi2}:" not in log_path.read_text():
                if hub.poll() is not None or time.monotonic() > deadline:
                    return {"error": "the hub did not start: " + log_path.read_text()[-300:]}
                time.sleep(0.05)
            result: dict[str, Any] = asyncio.run(scenario(params, room, midi2, peers))
            result["params"] = params
            return result
        except Exception as error:  # a benchmark reports, it does not crash the runner
            return {"error": f"{type(error).__name__}: {error}"}
        finally:
            hub.terminate()
            hub.wait(10)


def markdown(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return []
    lines = ["## Network MIDI 2.0 participants", ""]
    if "error" in result:
        return [*lines, f"- failed: {result['error']}", ""]
    params = result["params"]
    lines += [
        f"`bench/midi2.py`: a Network MIDI 2.0 client (the tests' independent client, MIDI 1.0 "
        f"in UMP, FEC 3) and two RTP peers in one room of a hub in its own process (uvloop), "
        f"{params['rate']} msg/s for {params['duration']:g} s per flow, one flow at a time; "
        "times taken in the generator's process at send and at its receive callback (its own "
        f"loop included, alike for every flow); a message not back {GRACE} s after the last "
        "send counts as lost.",
        "",
        "| flow | p50 ms | p99 ms | max ms | received | lost |",
        "|---|---|---|---|---|---|",
    ]
    for key, title in (
        ("rtp_pair", "RTP → hub → RTP (reference)"),
        ("midi2_to_rtp", "Network MIDI 2.0 → hub → RTP"),
        ("rtp_to_midi2", "RTP → hub → Network MIDI 2.0"),
    ):
        row = result.get(key, {})
        lines.append(
            f"| {title} | {row.get('p50_ms', '-')} | {row.get('p99_ms', '-')} | "
            f"{row.get('max_ms', '-')} | {row.get('received', 0)} | {row.get('lost', '-')} |"
        )
    return [*lines, ""]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2))
