"""Browser participants over the WebSocket, driven by aiohttp's client (the page itself is
tested in Chromium by tests/test_play_page.py): joining, playing, hearing, latency,
and every refusal with its reason and counter, while RTP participants carry on."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from midihub.hub import Hub
from midihub.midi.messages import control_change, note_off, note_on
from midihub.web.play import PlayApi
from midihub.web.playwire import SENDER_BYTES, parse_frame
from tests.seeds import seeded
from tests.support import PyPeer, RunningHub, free_ports, make_config, serving, wait_for


def origin_of(url: str) -> str:
    return url  # serving() gives scheme://host:port


@asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def hello(
    session: aiohttp.ClientSession,
    url: str,
    port: int,
    name: str,
    key: str | None = None,
    origin: str | None = None,
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await session.ws_connect(url + "/api/play/ws", origin=origin or origin_of(url))
    await ws.send_str(json.dumps({"type": "hello", "name": name, "port": port, "key": key}))
    reply = await ws.receive(timeout=5)
    assert reply.type == aiohttp.WSMsgType.TEXT, reply
    return ws, json.loads(reply.data)


async def closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read (pings and all) until the hub closes; its close code."""
    async for _ in ws:
        pass
    return ws.close_code


class Inbox:
    """Reads a browser connection in the background: MIDI by sender, JSON by type."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.midi: list[tuple[int, bytes]] = []
        self.frames: list[bytes] = []  # binary messages as they came
        self.json: list[dict[str, Any]] = []
        self.closed: int | None = None
        self.answer_pings = True
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.frames.append(message.data)
                sender = int.from_bytes(message.data[:SENDER_BYTES], "big")
                messages = parse_frame(message.data[SENDER_BYTES:])
                assert messages is not None, message.data
                self.midi += [(sender, m) for m in messages]
            elif message.type == aiohttp.WSMsgType.TEXT:
                document = json.loads(message.data)
                self.json.append(document)
                if document["type"] == "ping" and self.answer_pings:
                    await self.ws.send_str(json.dumps({"type": "pong", "t": document["t"]}))
        self.closed = self.ws.close_code

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.json if d["type"] == kind]

    @property
    def messages(self) -> list[bytes]:
        return [m for _, m in self.midi]

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._task, 5)


def room(port: int, extra: str = "") -> str:
    return f"[rooms.Jam]\nport = {port}\nbrowser = true\n{extra}\n"


@asynccontextmanager
async def room_with_alice(
    extra: str = "",
) -> AsyncIterator[tuple[int, RunningHub, str, aiohttp.ClientSession, PyPeer]]:
    """A browser room (``extra`` added to its config) on a live hub with the RTP peer alice
    joined: the room's port, the hub, its base URL, an HTTP client and alice."""
    (port,) = free_ports(1)
    async with serving(room(port, extra)) as (running, url), client() as session:
        alice = PyPeer("alice")
        try:
            await alice.connect(port)
            yield port, running, url, session, alice
        finally:
            alice.close()


def play_api(hub: Hub) -> PlayApi:
    """The hub's /play side (one of its event listeners)."""
    owners = (getattr(listener, "__self__", None) for listener in hub.listeners)
    return next(owner for owner in owners if isinstance(owner, PlayApi))


async def metric(session: aiohttp.ClientSession, url: str, name: str, reason: str) -> float:
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(f'{name}_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {reason} not in /metrics")


async def test_a_browser_plays_hears_is_measured_and_released() -> None:
    async with room_with_alice() as (port, running, url, session, alice):
        ws, welcome = await hello(session, url, port, "carol\x1b[31m")
        assert welcome["type"] == "welcome" and welcome["port"] == port
        assert welcome["label"] == "Jam" and welcome["role"] == "room"
        assert welcome["plays"] and welcome["listens"]
        assert welcome["you"]["name"] == "carol[31m"  # control characters removed
        people = {p["name"]: p for p in welcome["participants"]}
        assert set(people) == {"alice", "carol[31m"} and people["carol[31m"]["you"]
        assert people["alice"]["color"] != people["carol[31m"]["color"]
        inbox = Inbox(ws)

        # The browser plays a chord: alice gets it at once (no timer wait).
        await ws.send_bytes(note_on(0, 60, 100) + note_on(0, 64, 90) + control_change(0, 64, 127))
        await wait_for(lambda: len(alice.received) == 3, 5, "alice hears the chord")
        assert alice.received == [
            note_on(0, 60, 100),
            note_on(0, 64, 90),
            control_change(0, 64, 127),
        ]

        # Alice plays: the browser hears it, under alice's index.
        alice.send(note_on(1, 40, 80), note_off(1, 40))
        await wait_for(lambda: len(inbox.midi) == 2, 5, "the browser hears alice")
        index = people["alice"]["index"]
        assert inbox.midi == [(index, note_on(1, 40, 80)), (index, note_off(1, 40))]

        # Pings: the browser's RTT is in /api/latency with the RTP field names.
        await wait_for(lambda: inbox.of("ping") != [], 5, "a ping")
        me = welcome["id"]

        async def row() -> dict[str, Any] | None:
            async with session.get(url + "/api/latency") as response:
                rows = await response.json()
            return next((r for r in rows if r["id"] == me), None)

        async def measured() -> bool:
            found = await row()
            return found is not None and found["lastLatency"] is not None

        await wait_for(measured, 6, "the browser's latency row")
        found = await row()
        assert found is not None and found["lastLatency"] is not None
        rtp = next(
            r
            for r in (await (await session.get(url + "/api/latency")).json())
            if r["name"] == "alice"
        )
        assert set(found) == set(rtp)
        assert 0 <= found["lastLatency"] < 1000 and found["clientName"] == "carol[31m"
        async with session.get(url + "/api/participants") as response:
            listed = (await response.json())["ports"][0]["participants"]
        assert {p["name"] for p in listed} == {"alice", "carol[31m"}

        # It closes the tab holding C4, E4 and the pedal: alice gets them released.
        alice.received.clear()
        await inbox.close()
        await wait_for(lambda: len(alice.received) >= 3, 5, "the release")
        assert set(alice.received) == {
            note_off(0, 60),
            note_off(0, 64),
            control_change(0, 64, 0),
        }
        await wait_for(lambda: len(running.hub.endpoints[port].participants) == 1)


async def test_a_group_browser_plays_into_in_and_listens_on_out() -> None:
    port_in, port_out = free_ports(2)
    config = f"[groups.Band]\nin = {port_in}\nout = {port_out}\nbrowser = true\n"
    async with serving(config) as (_, url), client() as session:
        player_ws, player = await hello(session, url, port_in, "player")
        listener_ws, listener = await hello(session, url, port_out, "listener")
        assert (player["plays"], player["listens"]) == (True, False)
        assert (listener["plays"], listener["listens"]) == (False, True)
        ears, mouth = Inbox(listener_ws), Inbox(player_ws)
        await player_ws.send_bytes(note_on(0, 50, 70))
        await wait_for(lambda: len(ears.midi) == 1, 5, "the listener hears the player")
        # The listener's list names the player, and the frame carries the player's index.
        await wait_for(
            lambda: (
                any(
                    p["name"] == "player"
                    for d in ears.of("participants")
                    for p in d["participants"]
                )
                or any(p["name"] == "player" for p in listener["participants"])
            )
        )
        lists = [listener["participants"]] + [d["participants"] for d in ears.of("participants")]
        index = next(p["index"] for ps in lists for p in ps if p["name"] == "player")
        assert ears.midi == [(index, note_on(0, 50, 70))]
        # What the listener plays goes nowhere: the hub counts it dropped, sends nothing.
        await listener_ws.send_bytes(note_on(0, 51, 70))

        async def dropped() -> bool:
            return await metric(session, url, "midihub_browser_dropped", "listen_only") >= 1

        await wait_for(dropped, 5, "the listener's note counted as dropped")
        assert mouth.midi == [] and len(ears.midi) == 1
        await ears.close()
        await mouth.close()


async def test_refusals_have_reasons_and_counters_while_rtp_carries_on() -> None:
    rng = seeded("browser refusals", "refused messages")
    open_port, closed_port, rtp_port = free_ports(3)
    config = (
        f'[rooms.Jam]\nport = {open_port}\nbrowser = true\nkey = "s3cret-key"\n'
        f"[rooms.Private]\nport = {closed_port}\n"
        f"[rooms.Pair]\nport = {rtp_port}\n"
        "[web]\nbrowser_per_ip = 3\nmax_browser_per_port = 2\nbrowser_rate = 50\n"
        "browser_burst = 20\nbrowser_max_frame = 256\n"
    )
    async with serving(config) as (_, url), client() as session:
        alice, bob = PyPeer("alice"), PyPeer("bob")
        stop = asyncio.Event()
        sent: list[bytes] = []

        async def keep_playing() -> None:  # the RTP pair, all along
            n = 0
            while not stop.is_set():
                message = note_on(0, n % 128, 1 + n % 127)
                alice.send(message)
                sent.append(message)
                n += 1
                await asyncio.sleep(0.01)

        try:
            await alice.connect(rtp_port)
            await bob.connect(rtp_port)
            playing = asyncio.create_task(keep_playing())

            # A page of another site may not connect at all.
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url + "/api/play/ws", origin="https://evil.example")
            assert refused.value.status == 403
            async with session.get(
                url + "/api/play/ws", headers={"Origin": "https://evil.example"}
            ) as response:
                assert "origin" in (await response.json())["error"]

            async def refused_with(reason: str, code: int, **hello_args: Any) -> None:
                ws, reply = await hello(session, url, **hello_args)
                assert reply == {"type": "error", "reason": reason, "message": reply["message"]}
                closing = await ws.receive(timeout=5)
                assert closing.type == aiohttp.WSMsgType.CLOSE and ws.close_code == code
                await ws.close()

            await refused_with("key", 4403, port=open_port, name="x", key="wrong")
            await refused_with("key", 4403, port=open_port, name="x")
            await refused_with("not_open", 4404, port=closed_port, name="x")
            await refused_with("not_open", 4404, port=1, name="x")
            ws = await session.ws_connect(url + "/api/play/ws", origin=url)
            await ws.send_str('{"type": "hi"}')
            reply = json.loads((await ws.receive(timeout=5)).data)
            assert reply["reason"] == "hello"
            await ws.close()

            # Two browsers fill the port; a third is refused; a fourth connection from
            # this address is refused before it is a WebSocket.
            first, _ = await hello(session, url, open_port, "one", key="s3cret-key")
            second, _ = await hello(session, url, open_port, "two", key="s3cret-key")
            await refused_with("full", 4409, port=open_port, name="three", key="s3cret-key")
            third = await session.ws_connect(url + "/api/play/ws", origin=url)  # no hello yet
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url + "/api/play/ws", origin=url)
            assert refused.value.status == 429
            await third.close()
            listener = Inbox(second)

            # Garbage is dropped and counted; the connection survives a few.
            for bad in (b"\x3c\x40", note_on(0, 60, 100) + b"\x3e\x40", b"\x90\x3c", b"\xf4", b""):
                await first.send_bytes(bad)
            await first.send_bytes(note_on(0, 61, 1))
            await wait_for(lambda: len(listener.midi) == 1, 5, "the good message")
            assert listener.messages == [note_on(0, 61, 1)]

            # An oversized frame ends the connection (1009), counted.
            await first.send_bytes(
                bytes([0xF0] + [rng.randrange(128) for _ in range(300)] + [0xF7])
            )
            assert await closed(first) == 1009

            # A flood: most is dropped at the rate limit, and the connection is closed.
            flooder, _ = await hello(session, url, open_port, "flood", key="s3cret-key")
            flood_inbox = Inbox(flooder)
            for n in range(400):
                if flood_inbox.closed is not None or flooder.closed:
                    break
                await flooder.send_bytes(note_on(0, n % 128, 64) * 4)
            await wait_for(lambda: flood_inbox.closed is not None, 5, "the flooder closed")
            assert flood_inbox.closed == 4429
            assert flood_inbox.of("error")[-1]["reason"] == "flood"
            assert len(listener.midi) <= 1 + 20 + 4 * 50 * 3  # burst + rate over the flood

            stop.set()
            await playing
            await wait_for(lambda: len(bob.received) == len(sent), 5, "bob got every note")
            assert bob.received == sent  # the RTP pair never missed a beat

            expected = {
                ("midihub_browser_refused", "origin"): 2,
                ("midihub_browser_refused", "key"): 2,
                ("midihub_browser_refused", "not_open"): 2,
                ("midihub_browser_refused", "hello"): 1,
                ("midihub_browser_refused", "full"): 1,
                ("midihub_browser_refused", "per_ip"): 1,
                ("midihub_browser_dropped", "malformed"): 5,
                ("midihub_browser_dropped", "frame_size"): 1,
                ("midihub_browser_dropped", "flood"): 1,
            }
            for (name, reason), value in expected.items():
                assert await metric(session, url, name, reason) == value, (name, reason)
            assert await metric(session, url, "midihub_browser_dropped", "rate") >= 1
            await listener.close()
        finally:
            stop.set()
            alice.close()
            bob.close()


async def test_a_browser_that_stops_answering_pings_is_released() -> None:
    async with room_with_alice() as (port, running, url, session, alice):
        play_api(running.hub).ping_interval = 0.3  # the hub's 2 s, shortened for the test
        ws, _ = await hello(session, url, port, "sleepy")
        inbox = Inbox(ws)
        inbox.answer_pings = False
        await ws.send_bytes(note_on(0, 70, 100))
        await wait_for(lambda: alice.received == [note_on(0, 70, 100)])
        # Three unanswered pings and it is gone, its note released.
        await wait_for(lambda: note_off(0, 70) in alice.received, 15, "the release")
        await wait_for(lambda: inbox.closed is not None, 5)
        assert inbox.closed == 4408 and inbox.of("error")[-1]["reason"] == "timeout"
        assert await metric(session, url, "midihub_browser_dropped", "timeout") == 1


async def test_what_a_browser_plays_leaves_at_once_not_at_the_next_timer() -> None:
    """The hub's timer is stopped and the RTP peer silent: only the WebSocket handler's
    own flush can send the browser's notes (and the release when it leaves)."""
    async with room_with_alice() as (port, running, url, session, alice):
        server = running.server
        assert server._ticker is not None
        server._ticker.cancel()
        server._rearm = lambda deadline: None  # type: ignore[method-assign]
        alice._ticker.cancel()  # and alice sends nothing that would wake the hub
        ws, _ = await hello(session, url, port, "quick")
        loop = asyncio.get_running_loop()
        started = loop.time()
        for note in range(60, 70):
            await ws.send_bytes(note_on(0, note, 90))
        await wait_for(lambda: len(alice.received) == 10, 5, "ten notes with no timer")
        elapsed = loop.time() - started
        assert alice.received == [note_on(0, n, 90) for n in range(60, 70)]
        await ws.close()
        await wait_for(lambda: len(alice.received) == 20, 5, "the release with no timer")
        assert set(alice.received[10:]) == {note_off(0, n) for n in range(60, 70)}
        print(f"ten notes browser -> hub -> RTP peer in {elapsed * 1000:.1f} ms")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked WebSocket frame as a browser sends it (mask key 0: payload unchanged)."""
    length = len(payload)
    header = bytes((0x80 | opcode,))
    if length < 126:
        header += bytes((0x80 | length,))
    else:
        header += bytes((0x80 | 126,)) + length.to_bytes(2, "big")
    return header + b"\0\0\0\0" + payload


async def test_a_browser_that_stops_reading_is_dropped_and_nobody_waits() -> None:
    """A client with a tiny receive buffer that never reads: its queue overflows, it is
    disconnected and its note released, while another browser hears everything."""
    small_queues = "[web]\nbrowser_queue = 8\n[limits]\nsysex_rate = 100000000\n"
    async with room_with_alice(small_queues) as (port, running, url, session, alice):
        loop = asyncio.get_running_loop()
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.setblocking(False)
        host, web_port = url.removeprefix("http://").split(":")
        await loop.sock_connect(stalled, (host, int(web_port)))
        request = (
            f"GET /api/play/ws HTTP/1.1\r\nHost: {host}:{web_port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {url}\r\n\r\n"
        )
        await loop.sock_sendall(stalled, request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await loop.sock_recv(stalled, 1)
        assert answer.startswith(b"HTTP/1.1 101")
        hello_text = json.dumps({"type": "hello", "name": "stalled", "port": port})
        await loop.sock_sendall(stalled, client_frame(1, hello_text.encode()))
        await loop.sock_sendall(stalled, client_frame(2, note_on(0, 30, 99)))
        await wait_for(lambda: alice.received == [note_on(0, 30, 99)], 5, "the held note")
        ws, _ = await hello(session, url, port, "reader")
        reader = Inbox(ws)

        # 30 kB SysEx messages (25 datagrams each) until the kernel's buffers and
        # the 8 queued frames of the stalled browser are full.
        sysex = bytes([0xF0, *([0x55] * 30_000), 0xF7])
        sent = 0
        while note_off(0, 30) not in alice.received:
            assert sent < 500, "the stalled browser was never dropped"
            alice.send(sysex)
            sent += 1
            # The reader's queue never fills: each SysEx reaches it before the next goes
            # (with the stalled one's release, once that is dropped).
            await wait_for(lambda n=sent: len(reader.midi) >= n, 10, f"the reader: SysEx {sent}")
        # The reader hears every SysEx and the stalled one's release; it was never held up.
        await wait_for(lambda: len(reader.midi) == sent + 1, 10, f"{sent} SysEx + NoteOff")
        assert reader.closed is None
        assert sorted(reader.messages) == sorted([sysex] * sent + [note_off(0, 30)])
        names = [p.name for p in running.hub.endpoints[port].participants]
        assert sorted(names) == ["alice", "reader"]
        assert await metric(session, url, "midihub_browser_dropped", "overflow") == 1
        stalled.close()
        await reader.close()


async def test_a_reload_that_closes_the_port_to_browsers_lets_them_go() -> None:
    (port,) = free_ports(1)
    async with serving(room(port, 'key = "first-key"')) as (running, url), client() as session:
        ws, welcome = await hello(session, url, port, "guest", key="first-key")
        assert welcome["type"] == "welcome"
        inbox = Inbox(ws)
        changed = make_config(room(port, 'key = "second-key"'))
        running.server.reconfigure(changed.spec())
        await wait_for(lambda: inbox.closed is not None, 10, "the browser let go")
        assert inbox.closed == 4410 and inbox.of("error")[-1]["reason"] == "gone"
        assert running.hub.endpoints[port].participants == []
