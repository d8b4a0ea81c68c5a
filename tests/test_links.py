"""Outbound links: hubs on 127.0.0.1 joined into one jam, every message exactly
once, no loops, and a link that comes back by itself after the remote restarts."""

from __future__ import annotations

import asyncio

import pytest

from midihub import config as config_module
from midihub.config import ConfigError
from midihub.hub.links import BACKOFF_MAX, Link
from midihub.rtp import Timing
from tests.support import PyPeer, RunningHub, free_ports, make_config, wait_for


def room(port: int, *links: tuple[int, int]) -> str:
    text = f"name = 'hub{port}'\n[rooms]\nJam = {port}\n"
    for remote, local in links:
        text += f"[[links]]\nremote = '127.0.0.1:{remote}'\nport = {local}\n"
    return text


def notes(count: int, channel: int = 0) -> list[bytes]:
    out = []
    for i in range(count):
        note = 30 + i % 60
        out.append(bytes((0x90 | channel, note, 1 + i % 120)))
        out.append(bytes((0x80 | channel, note, 0)))
    return out


async def play(peer: PyPeer, messages: list[bytes]) -> None:
    for i in range(0, len(messages), 2):
        peer.send(*messages[i : i + 2])
        await asyncio.sleep(0.002)


async def link_up(hub: RunningHub, timeout: float = 8.0) -> None:
    await wait_for(
        lambda: all(link.up for link in hub.hub.links.values()), timeout, "links to come up"
    )


async def test_two_linked_hubs_are_one_jam_each_message_once() -> None:
    pa, pb = free_ports(2)
    with (
        RunningHub(make_config(room(pb))) as hub_b,
        RunningHub(make_config(room(pa, (pb, pa)))) as hub_a,
    ):
        await link_up(hub_a)
        alice, carol, bob = PyPeer("alice"), PyPeer("carol"), PyPeer("bob")
        try:
            await alice.connect(pa)
            await carol.connect(pa)
            await bob.connect(pb)
            sent = notes(100)
            await play(alice, sent)
            await wait_for(lambda: len(bob.received) >= len(sent), 5, "bob to hear alice")
            await wait_for(lambda: len(carol.received) >= len(sent), 5, "carol to hear alice")
            back = notes(50, channel=3)
            await play(bob, back)
            await wait_for(lambda: len(alice.received) >= len(back), 5, "alice to hear bob")
            await wait_for(lambda: len(carol.received) >= 200 + 100, 5, "carol to hear bob")
            await asyncio.sleep(0.3)  # anything duplicated or echoed would have arrived
            assert bob.received == sent  # exactly once, in order
            assert alice.received == back  # never her own notes back over the link
            assert carol.received == sent + back
            (link_session,) = [s for s in hub_b.participants(pb) if s.peer_name.endswith("link)")]
            assert link_session.peer_name == "hub" + str(pa) + " Jam (midihub link)"
        finally:
            for peer in (alice, carol, bob):
                peer.close()


async def test_link_comes_back_after_the_remote_restarts() -> None:
    pa, pb = free_ports(2)
    with RunningHub(make_config(room(pa, (pb, pa)))) as hub_a:
        alice = PyPeer("alice")
        try:
            await alice.connect(pa)
            with RunningHub(make_config(room(pb))) as hub_b:
                await link_up(hub_a)
                bob = PyPeer("bob")
                await bob.connect(pb)
                await play(alice, notes(10))
                await wait_for(lambda: len(bob.received) == 20, 5, "bob before the restart")
                bob.close()
            (link,) = hub_a.hub.links.values()
            await wait_for(lambda: not link.up, 3, "hub A to see B leave")
            assert link.last_error == "bye"
            await asyncio.sleep(1.5)  # B is away; A keeps trying
            with RunningHub(make_config(room(pb))) as hub_b:
                await link_up(hub_a, timeout=10)
                bob = PyPeer("bob2")
                await bob.connect(pb)
                sent = notes(20)
                await play(alice, sent)
                await wait_for(lambda: len(bob.received) >= len(sent), 5, "bob after restart")
                await asyncio.sleep(0.2)
                assert bob.received == sent
                assert len(hub_b.participants(pb)) == 2  # bob2 and one link, not two
                bob.close()
        finally:
            alice.close()


async def test_three_hubs_in_a_full_mesh_never_loop() -> None:
    pa, pb, pc = free_ports(3)
    with (
        RunningHub(make_config(room(pc))) as hub_c,
        RunningHub(make_config(room(pb, (pc, pb)))) as hub_b,
        RunningHub(make_config(room(pa, (pb, pa), (pc, pa)))) as hub_a,
    ):
        await link_up(hub_a)
        await link_up(hub_b)
        peers = {name: PyPeer(name) for name in ("alice", "bob", "cleo")}
        try:
            for name, port in zip(peers, (pa, pb, pc), strict=True):
                await peers[name].connect(port)
            sent = notes(40)
            await play(peers["alice"], sent)
            for name in ("bob", "cleo"):
                await wait_for(lambda n=name: len(peers[n].received) >= len(sent), 5, name)
            from_b = notes(20, channel=5)
            await play(peers["bob"], from_b)
            for name in ("alice", "cleo"):
                await wait_for(
                    lambda n=name: from_b[-1] in peers[n].received, 5, f"{name} to hear bob"
                )
            await asyncio.sleep(0.5)
            assert peers["bob"].received == sent
            assert peers["cleo"].received == sent + from_b
            assert peers["alice"].received == from_b
            forwarded = [h.hub.messages_forwarded for h in (hub_a, hub_b, hub_c)]
            await asyncio.sleep(0.3)
            assert [h.hub.messages_forwarded for h in (hub_a, hub_b, hub_c)] == forwarded
        finally:
            for peer in peers.values():
                peer.close()


async def test_a_link_on_a_group_out_port_carries_the_group() -> None:
    g_in, g_out, pb = free_ports(3)
    text = (
        f"[groups]\nG = [{g_in}, {g_out}]\n[[links]]\nremote = '127.0.0.1:{pb}'\nport = {g_out}\n"
    )
    with RunningHub(make_config(room(pb))), RunningHub(make_config(text)) as hub_a:
        await link_up(hub_a)
        alice, bob = PyPeer("alice"), PyPeer("bob")
        try:
            await alice.connect(g_in)
            await bob.connect(pb)
            sent = notes(10)
            await play(alice, sent)
            await wait_for(lambda: len(bob.received) >= len(sent), 5, "bob to hear the group")
            assert bob.received == sent
        finally:
            alice.close()
            bob.close()


async def test_reload_removing_a_link_says_bye_to_the_remote() -> None:
    pa, pb = free_ports(2)
    with (
        RunningHub(make_config(room(pb))) as hub_b,
        RunningHub(make_config(room(pa, (pb, pa)))) as hub_a,
    ):
        await link_up(hub_a)
        assert len(hub_b.participants(pb)) == 1
        hub_a.server.reconfigure(make_config(room(pa)).spec())
        await wait_for(lambda: not hub_b.participants(pb), 3, "B to see the link leave")
        assert hub_a.hub.links == {}


async def test_unreachable_remote_backs_off_and_the_hub_keeps_serving() -> None:
    pa, nobody = free_ports(2)
    config = make_config(room(pa, (nobody, pa)))
    config = config.model_copy(update={"timeout": 30.0})
    with RunningHub(config) as hub_a:
        alice, carol = PyPeer("alice"), PyPeer("carol")
        try:
            await alice.connect(pa)
            await carol.connect(pa)
            await play(alice, notes(5))
            await wait_for(lambda: len(carol.received) == 10, 5, "local play")
            (link,) = hub_a.hub.links.values()
            await wait_for(lambda: link.attempts == 1, 2, "the first invitation")
            await asyncio.sleep(0.5)
            assert not link.up and link.attempts == 1  # one session, retrying its IN
            assert hub_a.hub.endpoints[pa].host.counters.malformed == 0
        finally:
            alice.close()
            carol.close()


def test_back_off_doubles_to_a_ceiling_and_resets_on_join() -> None:
    (spec,) = make_config(room(5060, (6060, 5060))).links
    link = Link(spec)
    waits = []
    now = 0.0
    for _ in range(8):
        assert link.due(now)
        link.failed(now, "no-answer")
        waits.append(link.next_attempt - now)
        assert not link.due(now)
        now = link.next_attempt
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30] and BACKOFF_MAX == 30
    link.joined(now)
    link.failed(now, "bye")
    assert link.next_attempt - now == 1


@pytest.mark.parametrize(
    ("links", "problem"),
    [
        ("remote = '127.0.0.1'\nport = 5060", "links.0.remote: expected HOST:PORT"),
        ("remote = '127.0.0.1:6060'\nport = 5062", "links.0.port: 5062 is not one of the hub"),
        ("remote = '127.0.0.1:6060'", "links.0.port: Field required"),
    ],
)
def test_bad_links_are_named(links: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.parse(f"[rooms]\nJam = 5060\n[[links]]\n{links}\n")
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_timing_default_is_unchanged() -> None:
    assert Timing().timeout == 30.0
