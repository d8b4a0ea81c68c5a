"""Monitor viewers are a resource strangers can ask for: capped in all and per
address (refusals counted), each batch serialised once for every viewer, SysEx shown
as its length and first bytes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest

import midihub.web.monitor as monitor_module
from midihub.midi.messages import note_on, sysex
from tests.attacks.web_support import web_hub
from tests.support import PyPeer, free_ports, wait_for
from tests.test_api import sse


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


async def open_stream(
    stack: AsyncExitStack, url: str, source: str = "127.0.0.1"
) -> aiohttp.ClientResponse:
    """A monitor stream from ``source`` (any 127/8 address is this machine)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    client = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
    return await stack.enter_async_context(client.get(url))


async def test_viewers_are_capped_per_address_and_in_all_and_refusals_counted() -> None:
    (port,) = free_ports(1)
    async with (
        web_hub(f"[rooms]\nR = {port}", monitor_viewers=3, monitor_viewers_per_ip=2) as (
            _,
            api,
            server,
        ),
        AsyncExitStack() as stack,
    ):
        url = f"{server.url}api/monitor?port={port}"
        first = await open_stream(stack, url, "127.0.0.1")
        second = await open_stream(stack, url, "127.0.0.1")
        assert (first.status, second.status) == (200, 200)
        third = await open_stream(stack, url, "127.0.0.1")
        assert third.status == 429
        assert "too many monitor streams" in (await third.json())["error"]
        other = await open_stream(stack, url, "127.0.0.2")
        assert other.status == 200
        full = await open_stream(stack, url, "127.0.0.3")
        assert full.status == 503
        assert "try later" in (await full.json())["error"]
        async with aiohttp.ClientSession() as client, client.get(server.url + "metrics") as r:
            text = await r.text()
        assert metric(text, "midihub_monitor_viewers") == 3
        assert metric(text, 'midihub_monitor_viewers_refused_total{reason="per_ip"}') == 1
        assert metric(text, 'midihub_monitor_viewers_refused_total{reason="total"}') == 1
        # A viewer that leaves frees its place.
        first.close()
        await wait_for(lambda: api.monitor.viewers == 2, 5, "the closed stream to be released")
        again = await open_stream(stack, url, "127.0.0.3")
        assert again.status == 200


async def test_a_batch_is_serialised_once_for_all_viewers_and_sysex_is_cut_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (port,) = free_ports(1)
    calls: list[str] = []
    real_sse: Callable[[str, dict[str, Any]], bytes] = monitor_module.sse

    def counting_sse(event: str, data: dict[str, Any]) -> bytes:
        calls.append(event)
        return real_sse(event, data)

    monkeypatch.setattr(monitor_module, "sse", counting_sse)
    async with web_hub(f"[rooms]\nR = {port}") as (_, _, server), AsyncExitStack() as stack:
        player = PyPeer("player")
        stack.callback(player.close)
        await player.connect(port)
        url = f"{server.url}api/monitor?port={port}"
        streams: list[AsyncIterator[tuple[str, Any]]] = []
        for _ in range(5):
            response = await open_stream(stack, url)
            events = sse(response)
            name, _ = await asyncio.wait_for(anext(events), 5)
            assert name == "snapshot"
            streams.append(events)
        calls.clear()
        huge = sysex(bytes(i % 128 for i in range(1000)))
        player.send(note_on(0, 60, 100), huge)
        received = [await asyncio.wait_for(anext(events), 5) for events in streams]
        assert all(r == received[0] for r in received)
        assert calls == ["midi"]  # one serialisation, five viewers
        name, data = received[0]
        assert name == "midi"
        messages = [m for event in data["events"] for m in event["messages"]]
        assert messages[0] == {
            "bytes": [0x90, 60, 100],
            "length": 3,
            "kind": "note_on",
            "text": "note_on ch1 C4 100",
        }
        assert messages[1]["kind"] == "sysex"
        assert messages[1]["length"] == len(huge) == 1002
        assert messages[1]["bytes"] == list(huge[:16])
        assert "1002" in messages[1]["text"]


async def test_a_viewer_that_never_reads_is_skipped_counted_and_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its batches are dropped (counted) instead of queued, and after STALL_TIMEOUT of
    reading nothing it is disconnected, freeing its place."""
    monkeypatch.setattr(monitor_module, "KEEPALIVE", 0.2)
    monkeypatch.setattr(monitor_module, "STALL_TIMEOUT", 1.0)
    (port,) = free_ports(1)
    async with web_hub(f"[rooms]\nR = {port}") as (_, api, server):
        player = PyPeer("player")
        sock = socket.socket()
        try:
            await player.connect(port)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
            sock.send(f"GET /api/monitor?port={port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await wait_for(lambda: api.monitor.viewers == 1, 5, "the viewer to be admitted")
            counters = api.monitor.counters
            loud = [note_on(0, n % 128, 1 + n % 127) for n in range(100)]

            async def blast() -> bool:
                player.send(*loud)
                await asyncio.sleep(0.01)
                return counters.batches_dropped > 0

            for _ in range(2000):
                if await blast():
                    break
            assert counters.batches_dropped > 0, "the unread viewer was never skipped"
            transport = next(iter(api.monitor._viewers[port])).request.transport
            assert transport is not None
            assert transport.get_write_buffer_size() < 1 << 20  # bounded, not queued up
            await wait_for(lambda: api.monitor.viewers == 0, 10, "the stalled viewer to go")
            assert counters.stalled == 1
        finally:
            sock.close()
            player.close()
