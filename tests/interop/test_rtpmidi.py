"""Interop with a real third-party RTP MIDI implementation: the npm ``rtpmidi`` package,
in its own Node process, over UDP on 127.0.0.1, against a hub on real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from midihub.midi.messages import control_change, note_off, note_on, pitch_bend, program_change
from tests.fixtures import StartHub
from tests.interop.npm_peer import NpmPeer
from tests.support import RunningHub, free_ports, make_config, wait_for

# No skip: `make test` installs Node and the npm packages, and a missing peer must fail loudly.
pytestmark = pytest.mark.interop


def performance() -> list[bytes]:
    """100 note on/off pairs on two channels, with CC, pitch bend, program and SysEx between."""
    messages: list[bytes] = [program_change(0, 5), control_change(0, 64, 127)]
    for i in range(100):
        channel = i % 2
        key = 36 + i % 60
        messages += [note_on(channel, key, 1 + i % 127), note_off(channel, key, 64)]
        if i % 10 == 0:
            messages += [pitch_bend(channel, 2000 + i * 100), control_change(channel, 1, i)]
        if i % 25 == 0:
            messages.append(bytes([0xF0, 0x7D, i, 1, 2, 3, 0xF7]))
    return [*messages, pitch_bend(0, 8192), pitch_bend(1, 8192), control_change(0, 64, 0)]


async def send_in_packets(peer: NpmPeer, messages: list[bytes], per_packet: int = 20) -> None:
    for start in range(0, len(messages), per_packet):
        peer.send(*messages[start : start + per_packet])
        await asyncio.sleep(0.005)


@pytest.fixture
async def peers() -> AsyncIterator[list[NpmPeer]]:
    started: list[NpmPeer] = []
    yield started
    await asyncio.gather(*(peer.close() for peer in started))


async def start(peers: list[NpmPeer], *names: str) -> list[NpmPeer]:
    new = await asyncio.gather(*(NpmPeer.start(name) for name in names))
    peers.extend(new)
    return list(new)


async def test_group_carries_a_performance_between_npm_peers(
    peers: list[NpmPeer], start_hub: StartHub
) -> None:
    port_in, port_out = free_ports(2)
    hub = start_hub(f"[groups]\nG = [{port_in}, {port_out}]")
    alice, bob, carol = await start(peers, "alice", "bob", "carol")
    await asyncio.gather(alice.connect(port_in), bob.connect(port_out), carol.connect(port_out))
    assert sorted(s.peer_name for s in hub.participants(port_out)) == ["bob", "carol"]

    played = performance()
    await send_in_packets(alice, played)
    assert await bob.wait_midi(len(played)) == played
    assert await carol.wait_midi(len(played)) == played
    await asyncio.sleep(0.2)
    assert alice.midi == []
    assert len(bob.midi) == len(played)
    assert hub.malformed() == 0


async def test_room_three_npm_peers_hear_each_other_never_themselves(
    peers: list[NpmPeer],
) -> None:
    (port,) = free_ports(1)
    hub = start_hub(f"[rooms]\nJam = {port}")
    trio = await start(peers, "p0", "p1", "p2")
    await asyncio.gather(*(peer.connect(port) for peer in trio))
    assert len(hub.participants(port)) == 3

    played = {peer.name: [note_on(i, 60 + n, 90) for n in range(10)] for i, peer in enumerate(trio)}
    for peer in trio:
        await send_in_packets(peer, played[peer.name], per_packet=3)
    for peer in trio:
        await peer.wait_midi(20)
    await asyncio.sleep(0.2)
    for peer in trio:
        others = [m for name, ms in played.items() if name != peer.name for m in ms]
        assert sorted(peer.midi) == sorted(others)
        # Each sender's messages keep their order.
        for name, ms in played.items():
            if name != peer.name:
                assert [m for m in peer.midi if m in ms] == ms


async def test_hub_invites_an_npm_listener_and_midi_flows_both_ways(
    peers: list[NpmPeer],
) -> None:
    (port,) = free_ports(1)
    hub = start_hub(f"[rooms]\nLink = {port}")
    (remote,) = await start(peers, "remote")
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
    peers: list[NpmPeer], start_hub: StartHub
) -> None:
    (port,) = free_ports(1)
    start_hub(f"[rooms]\nJam = {port}")
    player, listener = await start(peers, "player", "listener")
    await asyncio.gather(player.connect(port), listener.connect(port))
    held = [note_on(0, key, 100) for key in (60, 64, 67)]
    player.send(*held, control_change(0, 64, 127))
    await listener.wait_midi(4)
    await player.end()
    released = (await listener.wait_midi(8))[4:]
    assert sorted(released[:3]) == sorted(note_off(0, key) for key in (60, 64, 67))
    assert released[3:] == [control_change(0, 64, 0)]


async def test_killed_npm_peer_times_out_and_its_notes_are_released(
    peers: list[NpmPeer],
) -> None:
    """No BY: the hub notices the silence after its timeout and releases exactly what was held."""
    (port,) = free_ports(1)
    config = make_config(f"[rooms]\nJam = {port}", timeout=2.0, ck_interval=0.5)
    with RunningHub(config) as hub:
        player, listener = await start(peers, "player", "listener")
        await asyncio.gather(player.connect(port), listener.connect(port))
        held = [note_on(1, key, 100) for key in (40, 45, 50, 55, 60)]
        player.send(*held, control_change(1, 64, 127), note_on(1, 70, 80), note_off(1, 70))
        await listener.wait_midi(8)
        await player.kill()
        released = (await listener.wait_midi(14, timeout=8))[8:]
        assert sorted(released[:5]) == sorted(note_off(1, key) for key in (40, 45, 50, 55, 60))
        assert released[5:] == [control_change(1, 64, 0)]
        assert [s.peer_name for s in hub.participants(port)] == ["listener"]
        await asyncio.sleep(0.5)
        assert len(listener.midi) == 14
