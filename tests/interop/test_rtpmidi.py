"""Interop with a real third-party RTP MIDI implementation: the npm ``rtpmidi`` package,
in its own Node process, over UDP on 127.0.0.1, against a hub on real sockets."""

from __future__ import annotations

import asyncio

import pytest

from midihub.midi.messages import control_change, note_off, note_on, program_change
from midihub.midi.notes import NoteRange
from tests.fixtures import MakePeer, NpmPeers, StartHub
from tests.interop.npm_peer import NpmPeer
from tests.performances import scripted
from tests.support import RunningHub, free_ports, wait_for

# No skip: `make test` installs Node and the npm packages, and a missing peer must fail loudly.
pytestmark = pytest.mark.interop


async def send_in_packets(peer: NpmPeer, messages: list[bytes], per_packet: int = 20) -> None:
    for start in range(0, len(messages), per_packet):
        peer.send(*messages[start : start + per_packet])
        await asyncio.sleep(0.005)


async def ended(hub: RunningHub, port: int, *peers: NpmPeer) -> None:
    """The positive end of a "nothing else arrives" check: the hub sends the peers on
    ``port`` a marker of its own (a panic: the low notes' NoteOffs on channel 16) and
    this returns once each has it as the last thing it received (then taken out of
    ``events``): what the hub sent them before has arrived (one socket, in order)."""
    counts = [len(peer.midi) for peer in peers]
    hub.hub.panic(port, NoteRange.LOW, asyncio.get_running_loop().time(), channels=[15])
    hub.server.flush()
    marker = [note_off(15, key) for key in NoteRange.LOW.notes()]
    for peer, count in zip(peers, counts, strict=True):
        got = await peer.wait_midi(count + len(marker))
        assert got[-len(marker) :] == marker, f"{peer.name} heard more than the marker"
        midi_events = [i for i, event in enumerate(peer.events) if event["event"] == "midi"]
        for index in reversed(midi_events[-len(marker) :]):
            del peer.events[index]


async def test_group_carries_a_performance_between_npm_peers(
    npm_peers: NpmPeers, start_hub: StartHub
) -> None:
    port_in, port_out = free_ports(2)
    hub = start_hub(f"[groups]\nG = [{port_in}, {port_out}]")
    alice, bob, carol = await npm_peers("alice", "bob", "carol")
    await asyncio.gather(alice.connect(port_in), bob.connect(port_out), carol.connect(port_out))
    assert sorted(s.peer_name for s in hub.participants(port_out)) == ["bob", "carol"]

    played = scripted()
    await send_in_packets(alice, played)
    assert await bob.wait_midi(len(played)) == played
    assert await carol.wait_midi(len(played)) == played
    await ended(hub, port_in, alice)
    await ended(hub, port_out, bob, carol)
    assert alice.midi == []
    assert bob.midi == played and carol.midi == played
    assert hub.malformed() == 0


async def test_room_three_npm_peers_hear_each_other_never_themselves(
    npm_peers: NpmPeers, start_hub: StartHub
) -> None:
    (port,) = free_ports(1)
    hub = start_hub(f"[rooms]\nJam = {port}")
    trio = await npm_peers("p0", "p1", "p2")
    await asyncio.gather(*(peer.connect(port) for peer in trio))
    assert len(hub.participants(port)) == 3

    played = {peer.name: [note_on(i, 60 + n, 90) for n in range(10)] for i, peer in enumerate(trio)}
    for peer in trio:
        await send_in_packets(peer, played[peer.name], per_packet=3)
    for peer in trio:
        await peer.wait_midi(20)
    await ended(hub, port, *trio)
    for peer in trio:
        others = [m for name, ms in played.items() if name != peer.name for m in ms]
        assert sorted(peer.midi) == sorted(others)
        # Each sender's messages keep their order.
        for name, ms in played.items():
            if name != peer.name:
                assert [m for m in peer.midi if m in ms] == ms


async def test_hub_invites_an_npm_listener_and_midi_flows_both_ways(
    npm_peers: NpmPeers, start_hub: StartHub, make_peer: MakePeer
) -> None:
    (port,) = free_ports(1)
    hub = start_hub(f"[rooms]\nLink = {port}")
    (remote,) = await npm_peers("remote")
    local = make_peer("local")
    await local.connect(port)
    now = asyncio.get_running_loop().time()
    session = hub.hub.connect(port, ("127.0.0.1", remote.port), now)
    hub.server.flush()
    # rtpmidi answers our CK0 and, after our CK2, syncs its own clock: then it may send.
    await remote.wait_event("synced", timeout=15)
    assert session.established and session.peer_name == "remote"

    local.send(note_on(3, 64, 100), control_change(3, 7, 99))
    assert await remote.wait_midi(2) == [note_on(3, 64, 100), control_change(3, 7, 99)]

    remote.send(note_off(3, 64), program_change(3, 9))
    await wait_for(lambda: len(local.received) == 2, 5, "local to hear the remote")
    assert local.received == [note_off(3, 64), program_change(3, 9)]
    hub.server.close()
    # Shutdown sends BY: rtpmidi drops its stream.
    await remote.wait_event("disconnected", timeout=5)


async def test_bye_from_npm_peer_releases_what_it_held(
    npm_peers: NpmPeers, start_hub: StartHub
) -> None:
    (port,) = free_ports(1)
    start_hub(f"[rooms]\nJam = {port}")
    player, listener = await npm_peers("player", "listener")
    await asyncio.gather(player.connect(port), listener.connect(port))
    held = [note_on(0, key, 100) for key in (60, 64, 67)]
    player.send(*held, control_change(0, 64, 127))
    await listener.wait_midi(4)
    await player.end()
    released = (await listener.wait_midi(8))[4:]
    assert sorted(released[:3]) == sorted(note_off(0, key) for key in (60, 64, 67))
    assert released[3:] == [control_change(0, 64, 0)]


async def test_killed_npm_peer_times_out_and_its_notes_are_released(
    npm_peers: NpmPeers, start_hub: StartHub
) -> None:
    """No BY: the hub notices the silence after its timeout and releases exactly what was held."""
    (port,) = free_ports(1)
    hub = start_hub(f"[rooms]\nJam = {port}", timeout=2.0, ck_interval=0.5)
    player, listener = await npm_peers("player", "listener")
    await asyncio.gather(player.connect(port), listener.connect(port))
    held = [note_on(1, key, 100) for key in (40, 45, 50, 55, 60)]
    player.send(*held, control_change(1, 64, 127), note_on(1, 70, 80), note_off(1, 70))
    await listener.wait_midi(8)
    await player.kill()
    released = (await listener.wait_midi(14, timeout=8))[8:]
    assert sorted(released[:5]) == sorted(note_off(1, key) for key in (40, 45, 50, 55, 60))
    assert released[5:] == [control_change(1, 64, 0)]
    assert [s.peer_name for s in hub.participants(port)] == ["listener"]
    await ended(hub, port, listener)
    assert len(listener.midi) == 14
