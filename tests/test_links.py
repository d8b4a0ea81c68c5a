"""Outbound links: hubs on 127.0.0.1 joined into one jam, every message exactly
once, no loops, and a link that comes back by itself after the remote restarts."""

from __future__ import annotations

import asyncio

import pytest

from midihub import config as config_module
from midihub.config import ConfigError
from midihub.hub.links import BACKOFF_MAX, Link
from midihub.rtp import PortKind, SessionSettings
from midihub.rtp import packets as p
from tests.fixtures import MakePeer, MakeRawPair, StartHub
from tests.support import (
    LOCALHOST,
    PyPeer,
    RunningHub,
    free_ports,
    make_config,
    marked,
    wait_for,
)


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


async def test_two_linked_hubs_are_one_jam_each_message_once(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    pa, pb = free_ports(2)
    hub_b = start_hub(room(pb))
    hub_a = start_hub(room(pa, (pb, pa)))
    await link_up(hub_a)
    alice, carol, bob = make_peer("alice"), make_peer("carol"), make_peer("bob")
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
    # Anything duplicated or echoed would arrive before markers sent after it.
    await marked(alice, bob, carol)
    await marked(bob, alice, carol)
    assert bob.received == sent  # exactly once, in order
    assert alice.received == back  # never her own notes back over the link
    assert carol.received == sent + back
    (link_session,) = [s for s in hub_b.participants(pb) if s.peer_name.endswith("link)")]
    assert link_session.peer_name == "hub" + str(pa) + " Jam (midihub link)"


async def test_link_comes_back_after_the_remote_restarts(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    pa, pb = free_ports(2)
    hub_a = start_hub(room(pa, (pb, pa)))
    alice = make_peer("alice")
    await alice.connect(pa)
    with RunningHub(make_config(room(pb))):
        await link_up(hub_a)
        bob = make_peer("bob")
        await bob.connect(pb)
        await play(alice, notes(10))
        await wait_for(lambda: len(bob.received) == 20, 5, "bob before the restart")
        bob.close()
    (link,) = hub_a.hub.links.values()
    await wait_for(lambda: not link.up, 3, "hub A to see B leave")
    assert link.last_error == "bye"
    await wait_for(lambda: link.attempts >= 1, 10, "A to try again while B is away")
    hub_b = start_hub(room(pb))
    await link_up(hub_a, timeout=10)
    bob = make_peer("bob2")
    await bob.connect(pb)
    sent = notes(20)
    await play(alice, sent)
    await wait_for(lambda: len(bob.received) >= len(sent), 5, "bob after restart")
    await marked(alice, bob)
    assert bob.received == sent
    assert len(hub_b.participants(pb)) == 2  # bob2 and one link, not two


async def test_three_hubs_in_a_full_mesh_never_loop(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    pa, pb, pc = free_ports(3)
    hubs = (
        start_hub(room(pa, (pb, pa), (pc, pa))),
        start_hub(room(pb, (pc, pb))),
        start_hub(room(pc)),
    )
    await link_up(hubs[0])
    await link_up(hubs[1])
    alice, bob, cleo = (make_peer(name) for name in ("alice", "bob", "cleo"))
    for peer, port in ((alice, pa), (bob, pb), (cleo, pc)):
        await peer.connect(port)
    sent = notes(40)
    await play(alice, sent)
    for peer in (bob, cleo):
        await wait_for(lambda p=peer: len(p.received) >= len(sent), 5, peer.name)
    from_b = notes(20, channel=5)
    await play(bob, from_b)
    for peer in (alice, cleo):
        await wait_for(lambda p=peer: from_b[-1] in p.received, 5, f"{peer.name} to hear bob")
    await marked(alice, bob, cleo)
    await marked(bob, alice, cleo)
    assert bob.received == sent
    assert cleo.received == sent + from_b
    assert alice.received == from_b

    # Nothing goes round: two markers in a row cost the hubs the same forwards each.
    def forwarded() -> list[int]:
        return [h.hub.messages_forwarded for h in hubs]

    costs = []
    for _ in range(2):
        before = forwarded()
        await marked(cleo, alice, bob)
        costs.append([after - was for after, was in zip(forwarded(), before, strict=True)])
    assert costs[0] == costs[1] and sum(costs[0]) > 0, costs


async def test_a_link_on_a_group_out_port_carries_the_group(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    g_in, g_out, pb = free_ports(3)
    text = (
        f"[groups]\nG = [{g_in}, {g_out}]\n[[links]]\nremote = '127.0.0.1:{pb}'\nport = {g_out}\n"
    )
    start_hub(room(pb))
    hub_a = start_hub(text)
    await link_up(hub_a)
    alice, bob = make_peer("alice"), make_peer("bob")
    await alice.connect(g_in)
    await bob.connect(pb)
    sent = notes(10)
    await play(alice, sent)
    await wait_for(lambda: len(bob.received) >= len(sent), 5, "bob to hear the group")
    assert bob.received == sent


async def test_reload_removing_a_link_says_bye_to_the_remote(start_hub: StartHub) -> None:
    pa, pb = free_ports(2)
    hub_b = start_hub(room(pb))
    hub_a = start_hub(room(pa, (pb, pa)))
    await link_up(hub_a)
    assert len(hub_b.participants(pb)) == 1
    hub_a.server.reconfigure(make_config(room(pa)).spec())
    await wait_for(lambda: not hub_b.participants(pb), 3, "B to see the link leave")
    assert hub_a.hub.links == {}


async def test_unreachable_remote_backs_off_and_the_hub_keeps_serving(
    start_hub: StartHub, make_peer: MakePeer, make_raw_pair: MakeRawPair
) -> None:
    pa, nobody = free_ports(2)
    remote = make_raw_pair(LOCALHOST, nobody)  # reads the link's invitations, never answers
    hub_a = start_hub(room(pa, (nobody, pa)), timeout=30.0)
    alice, carol = make_peer("alice"), make_peer("carol")
    await alice.connect(pa)
    await carol.connect(pa)
    await play(alice, notes(5))
    await wait_for(lambda: len(carol.received) == 10, 5, "local play")
    (link,) = hub_a.hub.links.values()

    def invitations() -> list[p.Invitation]:
        return [
            packet
            for kind, data in remote.replies
            if kind is PortKind.CONTROL
            and isinstance(packet := p.decode_session_packet(data), p.Invitation)
        ]

    await wait_for(lambda: len(invitations()) >= 2, 10, "the link's invitation, retried")
    assert not link.up and link.attempts == 1  # one session, retrying its IN
    assert len({invite.token for invite in invitations()}) == 1
    assert hub_a.hub.endpoints[pa].table.counters.malformed == 0


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
        ("remote = '127.0.0.1:6060'", "links.0.port: missing: this option is required"),
    ],
)
def test_bad_links_are_named(links: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.parse(f"[rooms]\nJam = 5060\n[[links]]\n{links}\n")
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_timing_default_is_unchanged() -> None:
    assert SessionSettings().timeout == 30.0
