"""The JSON API and the CLI commands that use it, against a hub on real sockets with
real sessions; RTT and loss checked through a delay/loss proxy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from midihub.cli import main
from midihub.midi.messages import note_off
from midihub.web import openapi_document
from tests.fixtures import MakePeer, Serve, ServeRoom, StartProxy
from tests.proxy import PathRules, every_nth_rtp
from tests.support import TOKEN, free_ports, joined, marked, wait_for


async def get(url: str) -> Any:
    async with aiohttp.ClientSession() as client, client.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def post(url: str, body: Any, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as client,
        client.post(url, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


def validator(path: str, method: str = "get", status: str = "200") -> Draft202012Validator:
    """The response schema the OpenAPI document promises for ``path``."""
    document = openapi_document()
    operation = document["paths"][path][method]
    schema = operation["responses"][status]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": document["components"]})


def conforms(path: str, body: Any, method: str = "get", status: str = "200") -> None:
    errors = [e.message for e in validator(path, method, status).iter_errors(body)]
    assert not errors, errors


async def test_participants_follow_joins_and_leaves(serve_hub: Serve, make_peer: MakePeer) -> None:
    port_in, port_out = free_ports(2)
    running, url = await serve_hub(f"[groups]\nG = [{port_in}, {port_out}]")
    await joined(make_peer, port_in, "alice")
    (bob,) = await joined(make_peer, port_out, "bob")
    body = await get(url + "/api/participants")
    conforms("/api/participants", body)
    by_port = {p["port"]: p for p in body["ports"]}
    assert by_port[port_in]["label"] == "G in" and by_port[port_out]["role"] == "out"
    assert [p["name"] for p in by_port[port_in]["participants"]] == ["alice"]
    assert by_port[port_out]["participants"][0]["address"] == f"127.0.0.1:{bob.port}"
    bob.bye()
    await wait_for(lambda: not running.participants(port_out), 5, "the hub to see bob leave")
    body = await get(url + "/api/participants")
    assert {p["port"]: len(p["participants"]) for p in body["ports"]} == {
        port_in: 1,
        port_out: 0,
    }


async def test_latency_rows_conform_and_keep_the_legacy_names(serve_room: ServeRoom) -> None:
    running, url, port, (alice, bob) = await serve_room("alice", "bob")
    alice.send(bytes((0x90, 60, 100)), bytes((0x80, 60, 0)))
    await wait_for(lambda: len(bob.received) == 2)

    def measured() -> bool:
        stats = [s for e in running.hub.endpoints.values() for s in e.stats.values()]
        return len(stats) == 2 and all(s.samples for s in stats)

    await wait_for(measured)
    rows = await get(url + "/api/latency")
    conforms("/api/latency", rows)
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"alice", "bob"}
    a = by_name["alice"]
    assert a["clientName"] == "alice" and a["clientPort"] == port and a["connected"]
    assert a["messagesIn"] == 2 and by_name["bob"]["messagesOut"] == 2
    assert a["packetsReceived"] == 1 and a["lossPercent"] == 0.0
    assert 0 <= a["minLatency"] <= a["averageLatency"] <= a["maxLatency"] < 1000
    assert a["lastLatencyTime"] is not None and a["timestamp"] == a["lastLatencyTime"]


async def test_rtt_through_a_40ms_each_way_proxy_peer_started_and_hub_started(
    serve_hub: Serve, make_peer: MakePeer, start_proxy: StartProxy
) -> None:
    """At least the proxy's 80 ms round trip (delays can run late, never early), and not
    wildly more, whichever side starts the clock exchange."""
    hub_port, listen_port = free_ports(2)
    running, url = await serve_hub(
        f"[rooms]\nR = {hub_port}\n[groups]\nL = [{listen_port}, {listen_port + 2}]",
        ck_interval=0.5,
    )
    proxy = await start_proxy(hub_port, PathRules(delay=0.04), PathRules(delay=0.04))
    caller = make_peer("caller")  # invites the hub via the proxy and starts CK itself
    listener = make_peer("listener")  # is invited by the hub: the hub starts CK
    back = await start_proxy(listener.port, PathRules(delay=0.04), PathRules(delay=0.04))
    await caller.connect(proxy.port)
    now = asyncio.get_running_loop().time()
    running.hub.connect(listen_port, ("127.0.0.1", back.port), now)
    running.server.flush()

    def samples(name: str) -> int:
        endpoints = running.hub.endpoints.values()
        return sum(
            e.stats[p.public_id].samples
            for e in endpoints
            for p in e.participants
            if p.name == name and p.public_id in e.stats
        )

    await wait_for(lambda: samples("caller") >= 2 and samples("listener") >= 2, 10)
    rows = {row["name"]: row for row in await get(url + "/api/latency")}
    for name in ("caller", "listener"):
        row = rows[name]
        assert 79.9 <= row["lastLatency"] <= 1000, row
        assert 79.9 <= row["minLatency"] <= row["maxLatency"] <= 1000, row
    assert rows["listener"]["port"] == listen_port


async def test_every_tenth_data_packet_dropped_shows_ten_percent_loss(
    serve_room: ServeRoom, make_peer: MakePeer, start_proxy: StartProxy
) -> None:
    _, url, port, _ = await serve_room()
    proxy = await start_proxy(port, PathRules(drop=every_nth_rtp(10)), PathRules())
    player = make_peer("player")
    await player.connect(proxy.port)
    for i in range(201):
        player.send(bytes((0x90, i % 128, 100)))
        await asyncio.sleep(0.001)
    assert player.session is not None and player.session.journal is not None
    journal = player.session.journal
    # The player's guard packets (data packets too) end once the hub's receiver feedback
    # acknowledges everything it sent; by then the hub has read all that got through.
    await wait_for(
        lambda: journal.acknowledged and proxy.to_target.rtp_seen == player.rtp_sent,
        15,
        "the hub to acknowledge the player's last packet",
    )
    (row,) = [r for r in await get(url + "/api/latency") if r["name"] == "player"]
    seen, dropped = proxy.to_target.rtp_seen, proxy.to_target.dropped
    assert dropped == seen // 10
    trailing = 1 if seen % 10 == 0 else 0  # a last packet lost is never noticed
    assert row["packetsLost"] == dropped - trailing
    assert row["packetsReceived"] == seen - dropped
    assert 9.0 <= row["lossPercent"] <= 11.0


async def test_panic_needs_the_token_and_names_valid_values(serve_room: ServeRoom) -> None:
    _, url, port, (peer, other) = await serve_room("peer", "other")
    status, body = await post(url + "/api/panic", {"port": port, "range": "Low"}, None)
    assert status == 401 and "token" in body["error"]
    assert "wrong" not in body["error"]
    status, body = await post(url + "/api/panic", {"port": port, "range": "Low"}, "wrong-token")
    assert status == 401 and body["error"].startswith("wrong token: control actions need")
    status, body = await post(url + "/api/panic", {"port": port + 2, "range": "Low"})
    assert status == 400 and f"valid ports: {port}" in body["error"]
    conforms("/api/panic", body, "post", "400")
    status, body = await post(url + "/api/panic", {"port": port, "range": "Lowest"})
    assert status == 400 and "Low, Mid, High, All" in body["error"]
    status, body = await post(url + "/api/panic", {"port": port, "channels": [0]})
    assert status == 400 and "1..16" in body["error"]
    await marked(other, peer)
    assert peer.received == []  # nothing refused reached anyone


async def test_panic_low_sends_exactly_the_noteoffs_of_the_range(
    serve_hub: Serve, make_peer: MakePeer
) -> None:
    port_in, port_out = free_ports(2)
    _, url = await serve_hub(f"[groups]\nG = [{port_in}, {port_out}]")
    bob, carol = await joined(make_peer, port_out, "bob", "carol")
    (alice,) = await joined(make_peer, port_in, "alice")
    status, body = await post(url + "/api/panic", {"port": port_out, "range": "Low"})
    assert status == 200, body
    conforms("/api/panic", body, "post")
    assert body["notes"] == [0, 42] and len(body["sentTo"]) == 2
    expected = [note_off(ch, n) for ch in range(16) for n in range(43)]
    await wait_for(lambda: len(bob.received) >= len(expected), 5, "bob's NoteOffs")
    await wait_for(lambda: len(carol.received) >= len(expected), 5, "carol's NoteOffs")
    assert bob.received == expected and carol.received == expected
    assert alice.received == []

    # One participant, two channels, the whole keyboard.
    bob.received.clear()
    carol.received.clear()
    people = await get(url + "/api/participants")
    (target,) = [
        person["id"]
        for port in people["ports"]
        for person in port["participants"]
        if person["name"] == "carol"
    ]
    assert target in body["sentTo"]
    assert f"{carol.session.local_ssrc:08x}" not in target  # type: ignore[union-attr]
    status, body = await post(
        url + "/api/panic", {"participant": target, "range": "All", "channels": [1, 10]}
    )
    assert status == 200 and body["sentTo"] == [target] and body["channels"] == [1, 10]
    expected = []
    for ch in (0, 9):
        expected += [note_off(ch, n) for n in range(128)]
        expected += [bytes((0xB0 | ch, 64, 0)), bytes((0xB0 | ch, 123, 0))]
    await wait_for(lambda: len(carol.received) >= len(expected), 5)
    assert carol.received == expected
    await marked(alice, bob)
    assert bob.received == []


async def test_openapi_document_is_served_and_every_get_route_conforms(
    serve_room: ServeRoom,
) -> None:
    _, url, _, _ = await serve_room()
    served = await get(url + "/api/openapi.json")
    assert served == openapi_document()
    assert served["openapi"].startswith("3.1")
    checked = 0
    for path, operations in served["paths"].items():
        content = operations.get("get", {}).get("responses", {}).get("200", {})
        if "schema" in content.get("content", {}).get("application/json", {}):
            conforms(path, await get(url + path))
            checked += 1
    assert checked == 6  # health, participants, latency, history, play ports, fleet


@pytest.mark.timeout(60)
async def test_cli_status_and_panic_against_a_running_hub(serve_room: ServeRoom) -> None:
    _, url, port, (peer,) = await serve_room("keys", label="Jam")
    runner = CliRunner()
    web = url.removeprefix("http://")

    result = await asyncio.to_thread(runner.invoke, main, ["status", "--web", web])
    assert result.exit_code == 0, result.output
    assert "keys" in result.output and f"{port} Jam" in result.output

    result = await asyncio.to_thread(runner.invoke, main, ["status", "--web", web, "--json"])
    assert result.exit_code == 0
    assert '"clientName": "keys"' in result.output

    args = ["panic", "--web", web, "--token", TOKEN]
    result = await asyncio.to_thread(runner.invoke, main, [*args, "--port", str(port + 4)])
    assert result.exit_code == 2 and f"valid ports: {port}" in result.output
    result = await asyncio.to_thread(
        runner.invoke, main, [*args, "--port", str(port), "--range", "Middle"]
    )
    assert result.exit_code == 2 and "'low', 'mid', 'high', 'all'" in result.output.lower()
    result = await asyncio.to_thread(
        runner.invoke, main, ["panic", "--web", web, "--token", "nope", "--port", str(port)]
    )
    assert result.exit_code == 1 and "panic refused: wrong token" in result.output
    assert "(the token sent came from --token)" in result.output
    result = await asyncio.to_thread(
        runner.invoke, main, [*args, "--port", str(port), "--range", "high"]
    )
    assert result.exit_code == 0, result.output
    assert "High (86-127)" in result.output and "1 participant" in result.output
    expected = [note_off(ch, n) for ch in range(16) for n in range(86, 128)]
    await wait_for(lambda: len(peer.received) >= len(expected))
    assert peer.received == expected


def test_cli_status_without_a_hub_says_so() -> None:
    (port,) = free_ports(1)
    result = CliRunner().invoke(main, ["status", "--web", f"127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert "no hub answers" in result.output and "midihub serve" in result.output


async def test_monitor_stream_sends_snapshot_midi_and_held_notes(serve_room: ServeRoom) -> None:
    running, url, port, (player,) = await serve_room("player")
    player.send(bytes((0x90, 60, 100)), bytes((0xB0, 64, 127)))

    def held() -> bool:
        return bool(running.participants(port)[0].held.channels_held())

    await wait_for(held, 5, "the hub to hold the player's note")
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{url}/api/monitor?port={port + 2}") as bad,
    ):
        assert bad.status == 400 and f"valid ports: {port}" in (await bad.json())["error"]
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{url}/api/monitor?port={port}") as response,
    ):
        assert response.headers["Content-Type"] == "text/event-stream"
        events = sse(response)
        name, data = await asyncio.wait_for(anext(events), 5)
        assert name == "snapshot" and data["port"] == port
        assert data["held"] == [
            {
                "channel": 1,
                "notes": [{"note": 60, "name": "C4", "velocity": 100}],
                "sustain": True,
                "sostenuto": False,
                "bend": 0,
            }
        ]
        player.send(bytes((0x80, 60, 0)), bytes((0xE0, 0, 0x50)))
        name, data = await asyncio.wait_for(anext(events), 5)
        assert name == "midi"
        texts = [msg["text"] for ev in data["events"] for msg in ev["messages"]]
        assert texts == ["note_off ch1 C4 0", "pitch_bend ch1 +2048"]
        assert data["events"][0]["from"]["name"] == "player"
        assert data["held"][0]["notes"] == [] and data["held"][0]["bend"] == 2048


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """Parse a Server-Sent Events stream into (event, JSON data)."""
    name = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])


async def test_private_pages_need_the_token_and_reload_is_a_control_action(
    serve_room: ServeRoom,
) -> None:
    _, url, port, _ = await serve_room(public=False)
    async with aiohttp.ClientSession() as client:
        async with client.get(url + "/api/participants") as response:
            assert response.status == 401
        async with client.get(f"{url}/api/participants?token={TOKEN}") as response:
            assert response.status == 401  # ?token= is for the monitor stream only
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with client.get(url + "/api/participants", headers=headers) as response:
            assert response.status == 200
        async with client.get(f"{url}/api/monitor?port={port}&token={TOKEN}") as response:
            assert response.status == 200
        async with client.get(url + "/api/health") as response:
            assert response.status == 200  # health checks stay open
        async with client.get(url + "/") as response:
            assert response.status == 200  # the page itself asks for the token
    status, body = await post(url + "/api/reload", {}, None)
    assert status == 401
    status, body = await post(url + "/api/reload", {})
    assert status == 400 and "no configuration file" in body["error"]
