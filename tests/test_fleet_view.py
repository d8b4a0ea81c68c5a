"""A fleet end to end: ``midihub serve``'s App, in-process, on 127.0.0.1-3 with one real
PostgreSQL database (tests/pg.py). Rooms of the same name become one room by
themselves (exact delivery both ways), a hub that joins later is linked and one that
stops is unlinked, and every hub's ``/api/fleet`` (and ``midihub status --fleet``)
shows the others and their players. Without ``[fleet]`` the view says it is off."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from midihub import config as config_module
from midihub.app import App
from midihub.cli.commands import main
from midihub.cli.status import render_fleet
from midihub.midi.messages import note_off, note_on
from tests.fixtures import MakePeer, ServeRoom
from tests.pg import PgCluster
from tests.ports import free_port_pair, free_tcp_port
from tests.support import TOKEN, marked, midihub_serve, wait_for
from tests.test_api import conforms, get

FAST = "heartbeat = 0.2\ndown_after = 1.0\nexpire_after = 3.0\n"

StartApp = Callable[[str, str], Awaitable[tuple[App, str, int]]]


@pytest.fixture
async def start_app(pg_url: str, tmp_path: Path) -> AsyncIterator[StartApp]:
    """``await start_app(name, address)``: a hub in the fleet on ``pg_url`` bound to
    ``address`` with one room, Jam: the App, its web URL and the room's port."""
    apps: list[tuple[App, asyncio.Task[None]]] = []

    async def start(name: str, address: str) -> tuple[App, str, int]:
        port, web = free_port_pair(address), free_tcp_port()
        file = tmp_path / f"{name}.toml"
        file.write_text(
            f"name = '{name}'\n[mdns]\nenabled = false\n[rooms]\nJam = {port}\n"
            f"[web]\nlisten = '127.0.0.1:{web}'\ntoken = '{TOKEN}'\n"
            f"[fleet]\ndatabase = '{pg_url}'\nname = '{name}'\naddress = '{address}'\n{FAST}"
        )
        config, _ = config_module.load(file, address)
        app = App(config, file, address, db=":memory:")
        task = asyncio.create_task(app.run())
        apps.append((app, task))
        await wait_for(lambda: app.ready, 20, f"hub {name}")
        return app, f"http://127.0.0.1:{web}", port

    yield start
    for app, task in reversed(apps):
        app.stop()
        await asyncio.wait_for(task, 20)


def links_up(app: App, count: int) -> Callable[[], bool]:
    return lambda: len(app.hub.links) == count and all(x.up for x in app.hub.links.values())


async def fleet_of(url: str) -> dict[str, Any]:
    body: dict[str, Any] = await get(url + "/api/fleet")
    conforms("/api/fleet", body)
    return body


def players(document: dict[str, Any]) -> set[tuple[str, str, str | None]]:
    return {(p["hub"], p["name"], p["room"]) for h in document["hubs"] for p in h["participants"]}


async def sees(url: str, hubs: set[str], who: set[tuple[str, str, str | None]]) -> bool:
    document = await fleet_of(url)
    up = {h["name"] for h in document["hubs"] if h["up"]}
    return up == hubs and players(document) == who


async def test_hubs_on_one_database_form_one_room_and_each_shows_the_others(
    start_app: StartApp, make_peer: MakePeer
) -> None:
    a, url_a, port_a = await start_app("a", "127.0.0.1")
    b, url_b, port_b = await start_app("b", "127.0.0.2")
    await wait_for(links_up(a, 1), 20, "a to dial b (a sorts first)")
    assert b.hub.links == {}
    alice, bob = make_peer("alice"), make_peer("bob")
    await alice.connect(port_a)
    await bob.connect(port_b, host="127.0.0.2")
    to_b = [bytes((0x90, 60 + i, 100)) for i in range(20)] + [
        bytes((0x80, 60 + i, 0)) for i in range(20)
    ]
    to_a = [bytes((0x93, 40 + i, 90)) for i in range(10)] + [
        bytes((0x83, 40 + i, 0)) for i in range(10)
    ]
    for i in range(0, 40, 4):
        alice.send(*to_b[i : i + 4])
    for i in range(0, 20, 4):
        bob.send(*to_a[i : i + 4])
    await marked(alice, bob)
    await marked(bob, alice)
    assert bob.received == to_b and alice.received == to_a  # exactly once, no echo
    alice.received.clear()
    bob.received.clear()
    # A reload takes the same path and keeps the fleet's link (the same Link: not restarted).
    (key, link), *_ = a.hub.links.items()
    assert a.reload() is None
    assert a.hub.links == {key: link} and link.up

    everyone = {("a", "alice", "Jam"), ("b", "bob", "Jam")}
    for url in (url_a, url_b):
        await wait_for(lambda u=url: sees(u, {"a", "b"}, everyone), 20, f"{url}: both hubs")
    document = await fleet_of(url_a)
    assert document["enabled"] and document["name"] == "a" and document["connected"]
    rows = {h["name"]: h for h in document["hubs"]}
    assert rows["a"]["self"] and not rows["b"]["self"]
    assert rows["b"]["address"] == "127.0.0.2"
    assert rows["b"]["rooms"] == [{"name": "Jam", "kind": "room", "ports": [port_b]}]
    assert document["links"] == [
        {"hub": "b", "room": "Jam", "port": port_a, "remote": f"127.0.0.2:{port_b}", "up": True}
    ]
    (bob_row,) = rows["b"]["participants"]
    assert bob_row["port"] == port_b and bob_row["transport"] == "rtp"
    assert (await fleet_of(url_b))["links"] == []  # b answers, it does not dial
    async with aiohttp.ClientSession() as client, client.get(url_a + "/metrics") as response:
        metrics = await response.text()
    assert f'midihub_link_up{{port="{port_a}",remote="127.0.0.2:{port_b}"}} 1.0' in metrics
    (plans,) = re.findall(r"^midihub_fleet_link_plans_total (\S+)$", metrics, re.M)
    assert float(plans) >= 1

    # A third hub joins the fleet: linked by both, and everyone hears it once.
    c, _, port_c = await start_app("c", "127.0.0.3")
    await wait_for(links_up(a, 2), 20, "a to dial c")
    await wait_for(links_up(b, 1), 20, "b to dial c")
    cleo = make_peer("cleo")
    await cleo.connect(port_c, host="127.0.0.3")
    await marked(cleo, alice, bob)
    await marked(alice, bob, cleo)
    assert alice.received == bob.received == cleo.received == []
    everyone.add(("c", "cleo", "Jam"))
    await wait_for(lambda: sees(url_b, {"a", "b", "c"}, everyone), 20, "b to show c")

    # c stops (a clean stop leaves the directory): a and b take their links to it down.
    c.stop()
    await wait_for(links_up(a, 1), 20, "a to drop its link to c")
    await wait_for(lambda: b.hub.links == {}, 20, "b to drop its link to c")
    everyone.discard(("c", "cleo", "Jam"))
    await wait_for(lambda: sees(url_a, {"a", "b"}, everyone), 20, "a without c")
    await marked(bob, alice)
    assert alice.received == []

    runner = CliRunner()
    web = url_a.removeprefix("http://")
    result = await asyncio.to_thread(runner.invoke, main, ["status", "--web", web, "--fleet"])
    assert result.exit_code == 0, result.output
    assert "fleet seen from a: 2 hub(s), connected" in result.output
    assert "127.0.0.2" in result.output and "bob" in result.output and "alice" in result.output
    assert "links dialed: b Jam up" in result.output


async def test_without_a_fleet_the_view_says_it_is_off(serve_room: ServeRoom) -> None:
    _, url, _, _ = await serve_room()
    body = await fleet_of(url)
    assert body == {"enabled": False}
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["status", "--web", url.removeprefix("http://"), "--fleet"]
    )
    assert result.exit_code == 0, result.output
    assert "the fleet is off on this hub" in result.output


def test_status_fleet_shows_every_string_as_text() -> None:
    from io import StringIO

    from rich.console import Console

    out = StringIO()
    hub = {
        "name": "b[bold]\x1b[2J",
        "address": "10.0.0.2",
        "version": "1",
        "up": False,
        "self": False,
        "started": "2026-12-08T03:00:00.000+00:00",
        "lastSeen": "2026-12-08T03:00:05.000+00:00",
        "rooms": [{"name": "Jam", "kind": "room", "ports": [5004]}],
        "participants": [
            {
                "id": "5004-ab",
                "name": "[red]x",
                "hub": "b",
                "port": 5004,
                "room": "Jam",
                "transport": "rtp",
                "latency": 12.34,
            }
        ],
    }
    document = {"enabled": True, "name": "a", "connected": False, "error": "refused"}
    render_fleet({**document, "hubs": [hub], "links": []}, Console(file=out, width=200))
    text = out.getvalue()
    assert "DOWN" in text and "[red]x" in text and "12.3" in text and "\x1b" not in text
    assert "no database (refused)" in text


async def test_a_hub_killed_mid_jam_is_unlinked_its_notes_released_and_relinked_on_restart(
    start_app: StartApp, make_peer: MakePeer, pg_url: str, tmp_path: Path
) -> None:
    a, _, port_a = await start_app("a", "127.0.0.1")
    b, _, port_b = await start_app("b", "127.0.0.2")
    port_c = free_port_pair("127.0.0.3")
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "midihub.toml").write_text(
        f"name = 'c'\n[web]\nlisten = ''\n[mdns]\nenabled = false\n[rooms]\nJam = {port_c}\n"
        f"[fleet]\ndatabase = '{pg_url}'\nname = 'c'\naddress = '127.0.0.3'\n{FAST}"
    )
    args = ("--config", "midihub.toml", "--bind", "127.0.0.3", "--db", ":memory:")
    processes = [await midihub_serve(*args, cwd=folder)]
    try:
        await wait_for(links_up(a, 2), 30, "a to dial b and c")
        await wait_for(links_up(b, 1), 30, "b to dial c")
        alice, bob, cleo = make_peer("alice"), make_peer("bob"), make_peer("cleo")
        await alice.connect(port_a)
        await bob.connect(port_b, host="127.0.0.2")
        await cleo.connect(port_c, host="127.0.0.3")
        cleo.send(note_on(5, 70, 100))  # held when its hub dies
        await wait_for(lambda: alice.received == bob.received == [note_on(5, 70, 100)], 10)

        loop = asyncio.get_running_loop()
        processes[0].send_signal(signal.SIGKILL)  # no goodbye: the directory says it is down
        await processes[0].wait()
        killed = loop.time()
        await wait_for(links_up(a, 1), 30, "a to drop its link to c")
        await wait_for(lambda: b.hub.links == {}, 30, "b to drop its link to c")
        print(f"links to the killed hub gone after {loop.time() - killed:.2f} s")
        for peer in (alice, bob):  # what came from c over its link is let go
            await wait_for(lambda p=peer: note_off(5, 70) in p.received, 10, peer.name)
            peer.received.clear()
        await marked(alice, bob)
        await marked(bob, alice)
        assert alice.received == bob.received == []  # a and b play on, nothing else arrives

        processes.append(await midihub_serve(*args, cwd=folder))  # the same name again
        await wait_for(links_up(a, 2), 30, "a to dial c again")
        await wait_for(links_up(b, 1), 30, "b to dial c again")
        carla = make_peer("carla")
        await carla.connect(port_c, host="127.0.0.3")
        await marked(alice, bob, carla)
        await marked(carla, alice, bob)
        assert alice.received == bob.received == carla.received == []
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            await asyncio.wait_for(process.communicate(), 30)


async def test_links_stay_up_through_a_database_outage_longer_than_the_down_bound(
    start_app: StartApp, make_peer: MakePeer, pg: PgCluster
) -> None:
    a, _, port_a = await start_app("a", "127.0.0.1")
    b, _, port_b = await start_app("b", "127.0.0.2")
    await wait_for(links_up(a, 1), 30, "a to dial b")
    assert a.fleet is not None and b.fleet is not None and a.mesh is not None
    fleet_a, fleet_b = a.fleet, b.fleet
    ((_, link),) = a.hub.links.items()
    since, plans = link.up_since, a.mesh.applied
    alice, bob = make_peer("alice"), make_peer("bob")
    await alice.connect(port_a)
    await bob.connect(port_b, host="127.0.0.2")

    loop = asyncio.get_running_loop()
    pg.stop()
    stopped = loop.time()
    # Long enough that, when it is back, the directory shows every hub down until it renews.
    await wait_for(lambda: loop.time() > stopped + 3.0, 30, "an outage past down_after")
    assert not fleet_a.connected and not fleet_b.connected
    await marked(alice, bob)  # MIDI meanwhile, over the link
    await marked(bob, alice)
    pg.start()
    beats = (fleet_a.counters.heartbeats, fleet_b.counters.heartbeats)
    await wait_for(
        lambda: (
            fleet_a.counters.heartbeats > beats[0] + 5
            and fleet_b.counters.heartbeats > beats[1] + 5
        ),
        30,
        "both hubs renewing again",
    )
    await wait_for(lambda: len(fleet_a.hubs()) == 2 and all(h.up for h in fleet_a.hubs()), 30)
    assert a.hub.links == {link.key: link} and link.up_since == since  # never went down
    mesh = a.mesh
    await wait_for(lambda: not mesh.holding, 30, "the hold after the outage to end")
    assert a.hub.links == {link.key: link} and link.up_since == since  # b renewed: kept
    assert a.mesh.applied == plans
    await marked(alice, bob)
    await marked(bob, alice)
    assert alice.received == bob.received == []


def test_a_long_fleet_answer_is_the_same_json_when_serialised_in_slices() -> None:
    from midihub.web.api import OFF_LOOP_ROWS, _fleet_json

    tricky = '"participants":0 "hubs":0'  # the splice markers, inside a name
    players = [
        {"id": f"5004-{i:04x}", "name": tricky, "hub": "b", "port": 5004, "room": "Jam"}
        | {"transport": "rtp", "latency": i / 10}
        for i in range(3 * OFF_LOOP_ROWS + 7)
    ]
    hub = {"name": tricky, "address": "10.0.0.2", "up": True, "rooms": [], "participants": players}
    document = {"enabled": True, "name": "a", "hubs": [hub, {**hub, "participants": []}]}
    document |= {"connected": True, "error": tricky, "links": []}
    assert json.loads(_fleet_json(document)) == document
