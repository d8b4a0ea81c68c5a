"""Browser participants at scale and at the end: what they leave behind (nothing), what
a message costs with hundreds in view (one small frame), and what shutdown tells them
(why, before the web server stops)."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
from collections import deque
from typing import Any

from midihub.app import App
from midihub.hub import Hub
from midihub.midi.messages import note_off, note_on
from midihub.web.play import Browser
from midihub.web.playwire import SENDER_BYTES, Refusal
from tests.support import PyPeer, free_ports, make_config, serving, wait_for
from tests.test_play import Inbox, client, hello, play_api, room


def containers(owner: object, prefix: str) -> dict[str, int]:
    """The size of every dict, set, list and deque ``owner`` keeps (attributes and
    slots, or the attributes of a class compiled by mypyc: tools/mypyc_build.py), by name."""
    names = list(vars(owner)) if hasattr(owner, "__dict__") else []
    names += [
        name
        for cls in type(owner).__mro__
        for name in (*getattr(cls, "__slots__", ()), *getattr(cls, "__mypyc_attrs__", ()))
    ]
    sizes = {}
    for name in names:
        value = getattr(owner, name, None)
        if isinstance(value, dict | set | list | deque):
            sizes[f"{prefix}.{name}"] = len(value)
    return sizes


def listeners_of(hub: Hub) -> list[object]:
    """Everything that hears the hub's events: the play page, monitor, live events,
    metrics (the web side's per-participant state lives there)."""
    owners = [getattr(listener, "__self__", None) for listener in hub.listeners]
    return [owner for owner in owners if owner is not None]


def sizes(hub: Hub) -> dict[str, int]:
    """Every container the hub and its web listeners keep, one level into their parts."""
    found = containers(hub, "hub")
    for port, endpoint in hub.endpoints.items():
        found |= containers(endpoint, f"endpoint {port}")
        found |= containers(endpoint.table, f"table {port}")
    for owner in listeners_of(hub):
        name = type(owner).__name__
        found |= containers(owner, name)
        for attribute, part in list(vars(owner).items()):
            if hasattr(part, "__slots__") or type(part).__module__.startswith("midihub"):
                found |= containers(part, f"{name}.{attribute}")
    return found


def live_browsers() -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if isinstance(thing, Browser))


async def test_two_thousand_browsers_leave_every_map_at_its_idle_size() -> None:
    """2,000 browsers come and go one after another (each the last to leave, some after
    playing, some refused), then the RTP player leaves with no browser open: every map
    of the hub, its ports and the web listeners is back at its size before the first.
    (A map that kept anything per browser, even up to a cap, differs after the first
    few; 10,000 took 20-35 s on a loaded machine and showed nothing 2,000 do not.)"""
    (port,) = free_ports(1)
    async with serving(room(port)) as (running, url), client() as session:
        hub = running.hub
        play = play_api(hub)
        before = sizes(hub)
        assert "PlayApi._colors" in before and "PlayApi._open._held" in before
        alice = PyPeer("alice")
        try:
            await alice.connect(port)
            for n in range(2_000):
                if n % 50 == 49:  # refused: no such port
                    ws, reply = await hello(session, url, port + 1, f"lost {n}")
                    assert reply["reason"] == "not_open"
                    await ws.close()
                    continue
                ws, welcome = await hello(session, url, port, f"player {n}")
                assert welcome["type"] == "welcome", welcome
                if n % 10 == 0:  # plays, and is released when it goes
                    await ws.send_bytes(note_on(0, 60, 100))
                await ws.close()
            await wait_for(lambda: not play.browsers and not hub.endpoints[port].guests, 10)
            await wait_for(lambda: alice.received.count(note_off(0, 60)) == 200, 10)
        finally:
            alice.bye()  # it leaves while no browser is open
            alice.close()
        await wait_for(lambda: hub.endpoints[port].participants == [], 10, "alice gone")
        await wait_for(lambda: not play._closing and play._open.total == 0, 10)
        after = sizes(hub)
        names = set(before) | set(after)  # a cache made on first use counts 0 before it
        grown = {
            name: (before.get(name, 0), after.get(name, 0))
            for name in names
            if after.get(name, 0) != before.get(name, 0)
        }
        # Keyed by what the code names, not by whom: a refusal reason, the port.
        assert set(play.counters.refused) == {Refusal.NOT_OPEN}
        assert grown.pop("PlayApi.counters.refused") == (0, 1)
        assert grown.pop("Metrics.rtt._metrics") == (0, 1)  # a label set per port
        assert grown == {}, grown
        assert play.counters.joined == 0
        assert live_browsers() == 0  # nothing anywhere holds on to one


async def test_a_message_from_the_300th_participant_is_one_small_frame() -> None:
    """300 RTP players in a room, then a browser: everyone in its list has an index of
    their own, and each message from the last to join reaches it as one frame of
    index + message, with no participant list resent."""
    (port,) = free_ports(1)
    config = f"max_participants = 400\n{room(port)}" + (
        "[limits]\nsessions_per_source = 400\npending_per_source = 400\nmax_pending = 400\n"
    )
    peers = [PyPeer(f"rtp {n:03}") for n in range(300)]
    async with (
        serving(config) as (running, url),
        client() as session,
    ):
        try:
            for start in range(0, len(peers), 25):
                await asyncio.gather(*(peer.connect(port) for peer in peers[start : start + 25]))
            assert len(running.hub.endpoints[port].participants) == 300
            play_api(running.hub).ping_interval = 3600  # no latency update meanwhile
            ws, welcome = await hello(session, url, port, "observer")
            inbox = Inbox(ws)
            listed = welcome["participants"]
            assert len(listed) == 301
            indexes = [person["index"] for person in listed]
            assert 0 not in indexes and len(set(indexes)) == 301
            last = peers[-1]
            index = next(p["index"] for p in listed if p["name"] == last.name)
            lists_before = len(inbox.of("participants"))
            frames_before = len(inbox.frames)
            for note in range(100):
                last.send(note_on(0, note, 64))
            await wait_for(lambda: len(inbox.midi) == 100, 10, "100 notes at the browser")
            frames = inbox.frames[frames_before:]
            assert len(frames) == 100
            assert frames == [
                index.to_bytes(SENDER_BYTES, "big") + note_on(0, note, 64) for note in range(100)
            ]
            assert len(inbox.of("participants")) == lists_before  # no list per message

            # They all leave: the browser's numbering of them goes with them.
            (browser,) = play_api(running.hub).browsers
            endpoint = running.hub.endpoints[port]
            for start in range(0, len(peers), 25):  # a burst of 300 overflows a socket buffer
                for peer in peers[start : start + 25]:
                    peer.bye()
                left = len(peers) - start - 25 + 1  # and the browser
                await wait_for(lambda left=left: len(endpoint.participants) == left, 5)

            def alone() -> bool:
                lists = inbox.of("participants")
                return bool(lists) and len(lists[-1]["participants"]) == 1

            await wait_for(alone, 10, "the list with the browser alone")
            assert list(browser.index.values()) == [welcome["you"]["index"]]
            assert browser._indexes == {welcome["you"]["index"]}
            assert len(browser.rtts_sent) == 1
            await inbox.close()
        finally:
            for peer in peers:
                peer.close()


async def test_shutdown_tells_every_browser_why_and_leaves_no_task_behind() -> None:
    """The hub stops with three browsers connected: each gets the reason (``stopping``)
    and a close frame with 1001 before the hub is gone, and every task the play page
    started (goodbyes, writers, pingers) has ended when ``App.run`` returns."""
    (port,) = free_ports(1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        web_port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{web_port}"
    config = make_config(room(port) + "[mdns]\nenabled = false\n")
    before = asyncio.all_tasks()
    app = App(config, web=f"127.0.0.1:{web_port}", db=":memory:")
    running = asyncio.create_task(app.run())
    async with client() as session:
        try:
            await wait_for(lambda: app.ready, 10, "the hub")
            inboxes = []
            for name in ("ana", "ben", "cy"):
                ws, welcome = await hello(session, url, port, name)
                assert welcome["type"] == "welcome"
                inboxes.append(Inbox(ws))
            assert app.api is not None
            play = app.api.play
            server_sides = [browser.ws for browser in play.browsers]
            assert len(server_sides) == 3
        finally:
            app.stop()
            await asyncio.wait_for(running, 10)
        # Each close handshake finished before the hub stopped (the server's side saw
        # the browser's answer), and each browser read why.
        assert all(ws.closed and ws.close_code is not None for ws in server_sides)
        left = asyncio.all_tasks() - before - {asyncio.current_task()}
        left -= {inbox._task for inbox in inboxes}
        assert left == set(), left
        for inbox in inboxes:
            await wait_for(lambda inbox=inbox: inbox.closed is not None, 5)
            errors: list[dict[str, Any]] = inbox.of("error")
            assert [(e["reason"], e["message"]) for e in errors] == [
                ("stopping", "the hub is stopping")
            ], json.dumps(inbox.json)
            assert inbox.closed == 1001


async def test_aclose_awaits_the_goodbyes_that_closing_the_hub_started() -> None:
    """``Hub.close`` tells each browser to go; ``PlayApi.aclose`` right after it (no
    turn of the loop between) returns only when every goodbye has been said and each
    connection closed."""
    (port,) = free_ports(1)
    async with serving(room(port)) as (running, url), client() as session:
        play = play_api(running.hub)
        inboxes = []
        for name in ("ana", "ben"):
            ws, _ = await hello(session, url, port, name)
            inboxes.append(Inbox(ws))
        server_sides = [browser.ws for browser in play.browsers]
        running.server.close()
        await play.aclose()
        assert all(ws.closed for ws in server_sides)
        assert not play._closing and not play.browsers
        for inbox in inboxes:
            await wait_for(lambda inbox=inbox: inbox.closed is not None, 5)
            assert inbox.closed == 1001 and inbox.of("error")[-1]["reason"] == "stopping"
