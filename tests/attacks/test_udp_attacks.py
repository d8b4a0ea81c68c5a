"""The UDP attacks of issue 12, each from another address than its victim's: the
victim stays connected and hears everything, nothing is injected, the counters move.
(Attackers sit on 127.0.0.2 and up; victims on 127.0.0.1.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from midihub.config import LimitsConfig
from midihub.midi.messages import note_off, note_on
from midihub.rtp import Address, Drop, PortKind, SessionTable
from midihub.rtp import packets as p
from midihub.rtp.commands import decode_payload
from midihub.rtp.recovery import decode_journal
from tests.attacks.udp import RawPair, bye, invitation
from tests.fixtures import MakePeer, MakeRawPair, NpmPeers, Serve, ServeRoom, StartHub
from tests.seeds import seeded
from tests.support import PyPeer, RunningHub, free_ports, joined, make_config, wait_for

ROOM = "[rooms]\nJam = {port}\n"


@pytest.fixture
async def room(
    start_hub: StartHub, make_peer: MakePeer, make_raw_pair: MakeRawPair
) -> AsyncIterator[tuple[RunningHub, int, PyPeer, PyPeer, RawPair]]:
    """A room with alice (the victim) and bob (who listens), and mallory's sockets."""
    (port,) = free_ports(1)
    hub = start_hub(ROOM.format(port=port))
    mallory = make_raw_pair()
    alice, bob = await joined(make_peer, port, "alice", "bob")
    await wait_for(lambda: len(hub.participants(port)) == 2, 5, "both to join")
    yield hub, port, alice, bob, mallory


def drops(hub: RunningHub, port: int, reason: Drop) -> int:
    return hub.hub.endpoints[port].table.counters.drops.get(reason, 0)


async def still_works(port: int, alice: PyPeer, bob: PyPeer, key: int) -> None:
    """Alice and bob still hear each other, each exactly what the other sent."""
    bob_before, alice_before = len(bob.received), len(alice.received)
    alice.send(note_on(0, key, 90))
    bob.send(note_on(1, key, 80))
    await wait_for(lambda: len(bob.received) > bob_before, 5, "bob to hear alice")
    await wait_for(lambda: len(alice.received) > alice_before, 5, "alice to hear bob")
    assert bob.received[bob_before:] == [note_on(0, key, 90)]
    assert alice.received[alice_before:] == [note_on(1, key, 80)]


@dataclass
class SilentReceiver(PyPeer):
    """A peer that never sends RS (as some stacks do) and keeps the checkpoint of the
    journal of every RTP packet it receives: with no RS from it, the hub's journal to
    it keeps its first checkpoint (until MAX_UNACKED packets), so any move is someone
    else's RS taken as its own."""

    checkpoints: list[int] = field(default_factory=list)

    def _receive(self, kind: PortKind, batch: list[tuple[bytes, Address]]) -> None:
        for data, _ in batch:
            if kind is PortKind.DATA and not p.is_session_packet(data):
                _, start, end = p.decode_rtp_header(data)
                _, journal = decode_payload(data, start, end)
                if journal is not None:
                    self.checkpoints.append(decode_journal(data, journal, end).checkpoint)
        super()._receive(kind, batch)

    def flush(self) -> None:
        for kind, data, addr in self.table.datagrams_to_send():
            if data[2:4] != p.FEEDBACK:
                self.pair.sendto(kind, data, addr)


async def test_rtp_ck_rs_with_a_victims_ssrc_from_elsewhere_are_ignored(
    start_hub: StartHub, make_peer: MakePeer, make_raw_pair: MakeRawPair
) -> None:
    (port,) = free_ports(1)
    hub = start_hub(ROOM.format(port=port))
    mallory = make_raw_pair()
    alice = make_peer("alice", cls=SilentReceiver)
    assert isinstance(alice, SilentReceiver)
    (bob,) = await joined(make_peer, port, "bob")
    await alice.connect(port)
    ssrc = alice.session.local_ssrc
    bob.send(note_on(1, 50, 1))  # the hub's stream to alice gets a journal
    await wait_for(lambda: alice.checkpoints, 5, "a journal (the first guard packet's)")
    (checkpoint,) = set(alice.checkpoints)
    # An RS for the packet alice just got would move the checkpoint past it, so she
    # could no longer be repaired for it.
    acknowledged = (checkpoint + 1) & 0xFFFF
    injected = note_on(0, 99, 127)
    for seq in range(20):
        header = p.encode_rtp_header(60000 + seq, 0, ssrc)
        mallory.send(PortKind.DATA, header + bytes((0x03,)) + injected, port)
        mallory.send(PortKind.DATA, p.encode_clock(ssrc, 0, (seq, 0, 0)), port)
        mallory.send(PortKind.CONTROL, p.encode_feedback(ssrc, acknowledged), port)
    await wait_for(lambda: drops(hub, port, Drop.WRONG_ADDRESS) == 60, 5, "60 refusals")
    seen = len(alice.checkpoints)
    await still_works(port, alice, bob, 61)
    assert injected not in bob.received
    assert mallory.replies == []  # no CK answered for it
    assert len(alice.checkpoints) > seen  # a packet sent after the attack
    assert set(alice.checkpoints) == {checkpoint}, "mallory's RS moved alice's checkpoint"


async def test_a_spoofed_ssrc_does_not_keep_a_dead_session_alive(
    make_peer: MakePeer, make_raw_pair: MakeRawPair
) -> None:
    (port,) = free_ports(1)
    config = make_config(ROOM.format(port=port), timeout=1.0, ck_interval=0.5)
    with RunningHub(config) as hub:
        alice, mallory = make_peer("alice"), make_raw_pair()
        await alice.connect(port)
        await wait_for(lambda: len(hub.participants(port)) == 1)
        ssrc = alice.session.local_ssrc
        alice.close()  # alice's laptop dies: no BY
        left = asyncio.get_running_loop().create_future()

        def watch(endpoint: object, event: object) -> None:
            if getattr(event, "reason", None) == "timeout" and not left.done():
                left.set_result(True)

        hub.hub.listeners.append(watch)
        for _ in range(200):  # mallory keeps "alice" busy from elsewhere, 0.1 s apart
            mallory.send(PortKind.DATA, p.encode_clock(ssrc, 0, (1, 0, 0)), port)
            mallory.send(PortKind.CONTROL, p.encode_feedback(ssrc, 1), port)
            await asyncio.wait([left], timeout=0.1)
            if left.done():
                break
        assert left.done(), "alice's session never timed out (timeout 1 s)"
        assert hub.participants(port) == []


async def test_data_in_with_a_live_ssrc_never_redirects_the_stream(room: tuple) -> None:
    _, port, alice, bob, mallory = room
    ssrc, token = alice.session.local_ssrc, alice.session.token
    for guess in (0, 1, token):  # even with the right token: it is not alice's address
        mallory.send(PortKind.DATA, invitation(guess, ssrc), port)
    await wait_for(lambda: len(mallory.commands()) == 3, 5, "three answers")
    assert mallory.commands() == [b"NO"] * 3
    await still_works(port, alice, bob, 62)
    assert not any(not p.is_session_packet(data) for _, data in mallory.replies)


async def test_control_in_with_a_live_ssrc_never_replaces_the_session(room: tuple) -> None:
    hub, port, alice, bob, mallory = room
    ssrc = alice.session.local_ssrc
    before = list(hub.participants(port))
    mallory.send(PortKind.CONTROL, invitation(1234, ssrc), port)
    mallory.send(PortKind.DATA, invitation(1234, ssrc), port)
    await wait_for(lambda: len(mallory.commands()) == 2, 5)
    assert mallory.commands() == [b"NO", b"NO"]
    assert hub.participants(port) == before
    assert drops(hub, port, Drop.SSRC_IN_USE) >= 1
    await still_works(port, alice, bob, 63)


async def test_bye_with_a_victims_ssrc_does_not_kick(room: tuple) -> None:
    hub, port, alice, bob, mallory = room
    ssrc, token = alice.session.local_ssrc, alice.session.token
    for kind in PortKind:
        for guess in (0, token):  # the right token from the wrong address fails too
            mallory.send(kind, bye(guess, ssrc), port)
    await wait_for(lambda: drops(hub, port, Drop.WRONG_ADDRESS) >= 4, 5)
    assert len(hub.participants(port)) == 2 and alice.left() == []
    await still_works(port, alice, bob, 64)
    # From alice's own address but without her token: refused as well.
    alice.send_raw(PortKind.CONTROL, bye(0, ssrc), ("127.0.0.1", port))
    await wait_for(lambda: drops(hub, port, Drop.WRONG_TOKEN) == 1, 5)
    assert len(hub.participants(port)) == 2


@pytest.mark.interop
async def test_bye_cannot_kick_a_real_npm_peer(
    start_hub: StartHub, make_peer: MakePeer, make_raw_pair: MakeRawPair, npm_peers: NpmPeers
) -> None:
    (port,) = free_ports(1)
    hub = start_hub(ROOM.format(port=port))
    (npm,) = await npm_peers("npm-victim")
    mallory = make_raw_pair()
    await npm.connect(port)
    (bob,) = await joined(make_peer, port, "bob")
    await wait_for(lambda: len(hub.participants(port)) == 2, 5)
    victim = next(s for s in hub.participants(port) if s.peer_name == "npm-victim")
    for kind in PortKind:
        mallory.send(kind, bye(0, victim.peer_ssrc), port)
    await wait_for(lambda: drops(hub, port, Drop.WRONG_ADDRESS) >= 2, 5)
    bob.send(note_on(0, 60, 100), note_off(0, 60))
    await npm.wait_midi(2)
    assert npm.midi == [note_on(0, 60, 100), note_off(0, 60)]
    assert victim in hub.participants(port)


async def test_api_and_monitor_never_publish_ssrc_or_token(serve_room: ServeRoom) -> None:
    hub, url, port, (alice, bob) = await serve_room("alice", "bob", label="Jam")
    await wait_for(lambda: len(hub.participants(port)) == 2, 5)
    secrets = []
    for peer in (alice, bob):
        assert peer.session is not None
        for value in (peer.session.local_ssrc, peer.session.token):
            secrets += [f"{value:08x}", f"{value:x}", str(value)]
    async with aiohttp.ClientSession() as client:
        texts = []
        for path in ("/api/participants", "/api/latency", "/api/health", "/metrics"):
            async with client.get(url + path) as response:
                texts.append(await response.text())
        async with client.get(url + "/api/events") as events:  # the dashboard's feed
            seen = b""
            while b"event: participants" not in seen:
                seen += await asyncio.wait_for(events.content.readany(), 5)
            texts.append(seen.decode())
        async with client.get(f"{url}/api/monitor?port={port}") as stream:
            alice.send(note_on(0, 60, 100))
            seen = b""
            while b'"midi"' not in seen:
                seen += await asyncio.wait_for(stream.content.readany(), 5)
            texts.append(seen.decode())
    ids = [
        person["id"] for entry in json.loads(texts[0])["ports"] for person in entry["participants"]
    ]
    assert len(set(ids)) == 2
    for text in texts:
        for secret in secrets:
            assert secret not in text, (secret, text[:200])


async def spoof_invitations(
    port: int, hosts: list[str], stop: asyncio.Event, make_raw_pair: MakeRawPair
) -> int:
    """64 INs every half second from ``hosts`` (no answer ever read), until ``stop``:
    six times the rate of the attack measured in issue 12 (64 every few seconds)."""
    pairs = [make_raw_pair(host) for host in hosts]
    sent, ssrc = 0, 1
    while not stop.is_set():
        for i in range(64):
            pair = pairs[i % len(pairs)]
            pair.send(PortKind.CONTROL, invitation(ssrc, ssrc), port)
            if i % 2:  # half of them also "complete" the handshake on the data port
                pair.send(PortKind.DATA, invitation(ssrc, ssrc), port)
            ssrc += 1
            sent += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    return sent


@pytest.mark.parametrize("sources", [1, 32])
async def test_spoofed_invitations_cannot_lock_a_port(
    sources: int, serve_hub: Serve, make_peer: MakePeer, make_raw_pair: MakeRawPair
) -> None:
    (port,) = free_ports(1)
    hub, url = await serve_hub(ROOM.format(port=port))
    stop = asyncio.Event()
    hosts = [f"127.0.1.{i + 2}" for i in range(sources)]
    flood = asyncio.create_task(spoof_invitations(port, hosts, stop, make_raw_pair))
    players: list[PyPeer] = []
    try:
        await wait_for(lambda: hub.hub.endpoints[port].table.pending > 0, 5, "the flood")
        for name in ("alice", "bob", "carol"):
            player = make_peer(name)
            players.append(player)
            await player.connect(port, timeout=2.0)  # joins within 2 s, flood or not
        await wait_for(lambda: len(hub.participants(port)) == 3, 2, "three players")
        async with (
            aiohttp.ClientSession() as client,
            client.get(url + "/api/participants") as response,
        ):
            (entry,) = (await response.json())["ports"]
        assert [p["name"] for p in entry["participants"]] == ["alice", "bob", "carol"]
        assert 0 < entry["halfOpen"] <= 128
        host = hub.hub.endpoints[port].table
        assert host.pending <= host.limits.max_pending
    finally:
        stop.set()
        sent = await flood
        for player in players:
            player.close()
    assert sent >= 64


async def test_no_reflection_to_an_address_that_never_proved_itself(
    make_peer: MakePeer, make_raw_pair: MakeRawPair
) -> None:
    """IN on both ports 'from the victim', who never answers: the hub sends it no more
    bytes than it received from it, and the half-open session goes away by itself."""
    (port,) = free_ports(1)
    config = make_config(ROOM.format(port=port), limits=LimitsConfig(handshake_timeout=1.0))
    with RunningHub(config) as hub:
        victim = make_raw_pair("127.0.0.3")
        alice, _ = await joined(make_peer, port, "alice", "bob")
        for name in (None, "v", "a much longer name than the hub's own one, to be sure"):
            ssrc = 0x5000 + len(name or "")
            victim.send(PortKind.CONTROL, invitation(ssrc, ssrc, name), port)
            victim.send(PortKind.DATA, invitation(ssrc, ssrc, name), port)
        await wait_for(lambda: hub.hub.endpoints[port].table.pending == 3, 5)
        for key in range(40):  # the room plays on meanwhile
            alice.send(note_on(0, key, 100), note_off(0, key))
            await asyncio.sleep(0.01)
        await wait_for(lambda: hub.hub.endpoints[port].table.pending == 0, 5, "expiry")
        assert drops(hub, port, Drop.HANDSHAKE_TIMEOUT) == 3
        assert victim.received_bytes <= victim.sent_bytes
        assert all(p.is_session_packet(data) for _, data in victim.replies)  # no MIDI
        assert len(hub.participants(port)) == 2


async def test_refusals_are_rate_limited_per_source(
    start_hub: StartHub, make_raw_pair: MakeRawPair
) -> None:
    (port,) = free_ports(1)
    hub = start_hub(ROOM.format(port=port))
    mallory = make_raw_pair()
    for token in range(200):  # data-port INs out of the blue: each one refused
        mallory.send(PortKind.DATA, invitation(token, token), port)
    await wait_for(lambda: drops(hub, port, Drop.DATA_IN_FIRST) == 200, 5)
    limited = drops(hub, port, Drop.REPLY_LIMITED)
    # Every decision is made: the replies the hub sent all arrive, and no more.
    await wait_for(lambda: len(mallory.replies) >= 200 - limited, 5, "the replies sent")
    assert len(mallory.replies) == 200 - limited
    assert len(mallory.replies) <= 8  # the burst, plus what the rate refills
    assert mallory.received_bytes <= mallory.sent_bytes


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_an_endless_sysex_costs_bounded_memory_and_clock_syncs_go_on(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    """50 MB of one SysEx that never ends (F0…F0, then F7…F0 forever), paced so the
    hub reads every packet: memory stays flat, nothing half is forwarded, and clock
    syncs from a bystander are answered all along (their RTTs are printed, not
    bounded: a time on a shared machine is a benchmark's figure, not a test's)."""
    (port,) = free_ports(1)
    hub = start_hub(ROOM.format(port=port))
    mallory, bob, carol = await joined(make_peer, port, "mallory", "bob", "carol")
    await wait_for(lambda: len(hub.participants(port)) == 3, 5)
    assert mallory.session is not None and carol.session is not None
    host = hub.hub.endpoints[port].table
    chunk = bytes(range(1, 128)) * 9  # 1,143 data bytes per segment
    header_seq = 0
    ssrc = mallory.session.local_ssrc
    before = rss_bytes()
    peak = before
    fed = 0
    rtts: list[float] = []
    loop = asyncio.get_running_loop()
    read_before, sent = host.counters.received, 0
    while fed < 50_000_000:
        for _ in range(64):
            first = header_seq == 0
            segment = (b"\xf0" if first else b"\xf7") + chunk + b"\xf0"
            body = bytes((0x80 | len(segment) >> 8, len(segment) & 0xFF)) + segment
            data = p.encode_rtp_header(header_seq, 0, ssrc) + body
            mallory.send_raw(PortKind.DATA, data, ("127.0.0.1", port + 1))
            header_seq = (header_seq + 1) & 0xFFFF
            fed += len(segment)
            sent += 1
        target = read_before + sent  # paced: the hub has read every packet
        await wait_for(lambda t=target: host.counters.received >= t, 5)
        if header_seq % 2048 < 64:  # now and then: how fast is a CK answered?
            synced = len(carol.rtts())
            carol.table.sync_clock(carol.session, loop.time())
            carol.flush()
            await wait_for(lambda s=synced: len(carol.rtts()) > s, 10, "a CK answer")
            rtts.append(carol.rtts()[-1])  # measured by CK timestamps (0.1 ms)
            peak = max(peak, rss_bytes())
    peak = max(peak, rss_bytes())
    print(f"fed {fed} bytes of SysEx: RSS +{peak - before} bytes; CK answers {rtts}")
    assert peak - before < 16_000_000, f"RSS grew {peak - before} bytes"
    dropped = host.counters.drops
    assert dropped.get(Drop.SYSEX_TOO_LONG, 0) + dropped.get(Drop.SYSEX_RATE, 0) >= 1
    assert not any(m[0] == 0xF0 for m in bob.received + carol.received)
    await still_works(port, bob, carol, 70)


def test_random_protocol_versions_never_grow_the_drop_counter_keys() -> None:
    """100,000 INs with random versions: one counter, not 100,000 keys."""
    rng = seeded(12, "spoofed invitations")
    host = SessionTable("hub", rng=seeded(1, "hub"))
    for i in range(100_000):
        version = rng.getrandbits(32) | 1  # never 2
        data = bytearray(invitation(i, i))
        data[4:8] = version.to_bytes(4, "big")
        host.receive(bytes(data), PortKind.CONTROL, ("127.0.0.2", 5000 + i % 1000), 1.0)
    assert host.counters.drops == {Drop.BAD_VERSION: 100_000}
    assert host.datagrams_to_send() == []  # and no reply to any of them


async def test_huge_names_and_session_churn_stay_small_everywhere(
    tmp_path: Path, serve_hub: Serve, make_peer: MakePeer
) -> None:
    """Players named with 20 KB (and control characters) come and go: every name is
    cut to 64 bytes before it reaches the log, the database or the API."""
    (port,) = free_ports(1)
    name = "\x1b]0;owned\x07" + "N" * 20_000 + "\nforged line"
    hub, url = await serve_hub(ROOM.format(port=port))
    rows: list[tuple[str, str]] = []
    hub.hub.listeners.append(
        lambda endpoint, event: rows.append((type(event).__name__, event.who.name))
    )
    for round_ in range(30):
        peer = make_peer(name + str(round_))
        try:
            await peer.connect(port)
            peer.bye()
        finally:
            peer.close()
    await wait_for(lambda: sum(kind == "PeerLeft" for kind, _ in rows) == 30, 5)
    assert {len(peer_name.encode()) for _, peer_name in rows} <= {64}
    assert all(peer_name.isprintable() for _, peer_name in rows)
    async with aiohttp.ClientSession() as client, client.get(url + "/api/latency") as r:
        text = await r.text()
    assert "N" * 65 not in text and "\\u001b" not in text and "forged" not in text
