"""The "browser" scenario of ``make bench``: a browser participant (a WebSocket client, as
the /play page speaks it) and two RTP MIDI participants in one room of a hub running in its
own process (``midihub serve``), all on 127.0.0.1.

Three flows, one after the other, each message unique and timed in this one process
(``perf_counter`` just before sending, and when the receiving callback runs, so both ends
include this process's own event-loop scheduling, alike for every flow):

- **rtp pair**: RTP peer A → hub → RTP peer B (the reference);
- **browser → rtp**: WebSocket binary frame → hub → RTP peer B;
- **rtp → browser**: RTP peer B → hub → WebSocket frame.

``python bench/browser.py [--quick]`` prints the result as JSON; ``run.py`` calls ``run``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from common import LOCALHOST, free_port_block, free_tcp_port, message, message_id, percentile

from midihub.rtp import Address, PortKind
from midihub.web.playwire import SENDER_BYTES

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support
from tests.support import PyPeer

BIN = Path(sys.executable).parent
FULL = {"rate": 200, "duration": 10.0}
QUICK = {"rate": 200, "duration": 2.0}
GRACE = 0.5  # seconds after the last send before a message counts as lost


@dataclass
class RtpPeer(PyPeer):
    """The tests' RTP MIDI participant (``tests.support.PyPeer``), stamping when each
    benchmark message arrives."""

    arrived: dict[int, float] = field(default_factory=dict)

    def _receive(self, kind: PortKind, batch: list[tuple[bytes, Address]]) -> None:
        stamp = time.perf_counter()
        super()._receive(kind, batch)
        for msg in self.received:
            if len(msg) == 3 and msg[2]:
                self.arrived.setdefault(message_id(*msg), stamp)
        self.received.clear()

    async def join(self, port: int) -> None:
        await self.connect(port, timeout=10.0)

    def send_message(self, data: bytes) -> None:
        self.send(data)


def summary(sent: dict[int, float], arrived: dict[int, float]) -> dict[str, Any]:
    latencies = sorted((arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived)
    if not latencies:
        return {"sent": len(sent), "received": 0, "lost": len(sent)}
    return {
        "sent": len(sent),
        "received": len(latencies),
        "lost": len(sent) - len(latencies),
        "p50_ms": round(percentile(latencies, 0.5), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3),
    }


async def flow(send: Any, arrived: dict[int, float], first: int, params: dict[str, Any]) -> Any:
    """Send unique messages at ``rate`` for ``duration``; returns the summary."""
    sent: dict[int, float] = {}
    interval = 1 / params["rate"]
    count = int(params["rate"] * params["duration"])
    start = time.perf_counter()
    for n in range(count):
        k = first + 2 * n  # NoteOns only: each one unique
        delay = start + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[k] = time.perf_counter()
        send(message(k))
    await asyncio.sleep(GRACE)
    return summary(sent, arrived)


async def scenario(params: dict[str, Any], web: str, room: int, peers: list[int]) -> Any:
    at_b: dict[int, float] = {}
    at_browser: dict[int, float] = {}
    a = RtpPeer("bench-a", peers[0])
    b = RtpPeer("bench-b", peers[1], arrived=at_b)
    try:
        await a.join(room)
        await b.join(room)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{web}/api/play/ws", origin=web)
            await ws.send_str(json.dumps({"type": "hello", "name": "bench", "port": room}))
            welcome = json.loads((await ws.receive(timeout=5)).data)
            assert welcome["type"] == "welcome", welcome

            async def read() -> None:
                async for frame in ws:
                    if frame.type == aiohttp.WSMsgType.BINARY:
                        data = frame.data
                        stamp = time.perf_counter()
                        for i in range(SENDER_BYTES, len(data) - 2, 3):
                            if data[i + 2]:
                                at_browser.setdefault(message_id(*data[i : i + 3]), stamp)
                    elif frame.type == aiohttp.WSMsgType.TEXT:
                        document = json.loads(frame.data)
                        if document["type"] == "ping":
                            await ws.send_str(json.dumps({"type": "pong", "t": document["t"]}))

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.3)
            span = 2 * int(params["rate"] * params["duration"]) + 2
            result = {
                "rtp_pair": await flow(a.send_message, at_b, 0, params),
                "browser_to_rtp": await flow(
                    lambda m: asyncio.ensure_future(ws.send_bytes(m)), at_b, span, params
                ),
                "rtp_to_browser": await flow(b.send_message, at_browser, 2 * span, params),
            }
            await ws.close()
            reader.cancel()
        return result
    finally:
        a.close()
        b.close()


def run(quick: bool = False) -> dict[str, Any]:
    """Start a hub, run the three flows, stop the hub; errors become ``{"error": ...}``."""
    params = QUICK if quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="midihub-bench-browser-"))
    room, *peers = free_port_block(3, start=41000)
    web_port = free_tcp_port()
    config = workdir / "browser.toml"
    config.write_text(
        f'[web]\nlisten = "{LOCALHOST}:{web_port}"\nbrowser_rate = 100000\n'
        f'browser_burst = 100000\n[stats]\ndatabase = "{workdir / "midihub.db"}"\n'
        f"[rooms.Web]\nport = {room}\nbrowser = true\n"
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
            while "dashboard and API on" not in log_path.read_text():
                if hub.poll() is not None or time.monotonic() > deadline:
                    return {"error": "the hub did not start: " + log_path.read_text()[-300:]}
                time.sleep(0.05)
            web = f"http://{LOCALHOST}:{web_port}"
            result: dict[str, Any] = asyncio.run(scenario(params, web, room, peers))
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
    lines = ["## Browser participants (WebSocket)", ""]
    if "error" in result:
        return [*lines, f"- failed: {result['error']}", ""]
    params = result["params"]
    lines += [
        f"`bench/browser.py`: a WebSocket client speaking the /play protocol and two RTP "
        f"peers in one room of a hub in its own process (uvloop), {params['rate']} msg/s "
        f"for {params['duration']:g} s per flow, one flow at a time; times taken in the "
        "generator's process at send and at its receive callback (its own loop included, "
        "alike for every flow).",
        "",
        "| flow | p50 ms | p99 ms | max ms | received | lost |",
        "|---|---|---|---|---|---|",
    ]
    for key, title in (
        ("rtp_pair", "RTP → hub → RTP (reference)"),
        ("browser_to_rtp", "browser → hub → RTP"),
        ("rtp_to_browser", "RTP → hub → browser"),
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
