"""The hub on real UDP sockets (127.0.0.1 / ::1) with Python peers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from midihub.rtp import Drop, PortKind
from midihub.rtp import packets as p
from midihub.rtp.commands import encode_section
from tests.fixtures import MakePeer, StartHub
from tests.seeds import seeded
from tests.support import free_port_pair, free_ports, joined, wait_for

NOTE_ON = b"\x90\x3c\x64"


async def test_group_forwards_between_real_sockets(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    port_in, port_out = free_ports(2)
    hub = start_hub(f"[groups]\nG = [{port_in}, {port_out}]")
    (alice,) = await joined(make_peer, port_in, "alice")
    bob, carol = await joined(make_peer, port_out, "bob", "carol")
    assert {s.peer_name for s in hub.participants(port_out)} == {"bob", "carol"}
    notes = [bytes((0x90, n, 100)) for n in range(50)]
    for note in notes:
        alice.send(note)
    await wait_for(lambda: len(bob.received) == 50 and len(carol.received) == 50)
    assert bob.received == notes and carol.received == notes
    assert alice.received == []


async def test_ipv6_bind_accepts_ipv6_and_ipv4_peers(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    port = free_port_pair("::1")
    hub = start_hub(f"[rooms]\nR = {port}", bind="::")
    v4 = make_peer("v4")
    await v4.connect(port)
    # An IPv6 peer speaking the protocol by hand from ::1 sockets (in a thread:
    # the hub shares this event loop).
    v6 = asyncio.create_task(asyncio.to_thread(_ipv6_peer_session, port))
    await wait_for(lambda: len(hub.participants(port)) == 2, 10, "the IPv6 peer")
    v4.send(NOTE_ON)
    received = await asyncio.wait_for(v6, 10)
    assert received[:2] == [b"OK", b"OK"]
    assert received[2].endswith(NOTE_ON)
    v6_session = next(s for s in hub.participants(port) if s.peer_name == "v6")
    assert v6_session.control_addr[0] == "::1"


def _ipv6_peer_session(port: int) -> list[bytes]:
    """Join from ::1, then wait for one data packet; returns what arrived, in order."""
    received: list[bytes] = []
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as control,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as data,
    ):
        for sock in (control, data):
            sock.bind(("::1", 0))
            sock.settimeout(10)
        invite = p.encode_invitation(p.Invitation(p.INVITATION, 1, 0x6666, "v6"))
        control.sendto(invite, ("::1", port))
        received.append(control.recv(2048)[2:4])
        data.sendto(invite, ("::1", port + 1))
        received.append(data.recv(2048)[2:4])
        # Prove we receive at this address: a clock sync of our own (CK0, CK1, CK2).
        data.sendto(p.encode_clock(0x6666, 0, (1, 0, 0)), ("::1", port + 1))
        answer = p.decode_session_packet(data.recv(2048))
        assert isinstance(answer, p.Clock) and answer.count == 1
        ts1, ts2, _ = answer.timestamps
        data.sendto(p.encode_clock(0x6666, 2, (ts1, ts2, 2)), ("::1", port + 1))
        while True:  # skip the hub's clock sync, keep the first RTP packet
            packet = data.recv(2048)
            if not p.is_session_packet(packet):
                received.append(packet)
                return received


def malformed_datagrams(
    count: int, live_ssrc: int, seed: int = 6295
) -> list[tuple[PortKind, bytes]]:
    """Datagrams that are malformed by construction (each breaks a rule of the wire format)."""
    rng = seeded(seed, "malformed datagrams")

    def noise(n: int) -> bytes:
        return rng.randbytes(n)

    header = p.encode_rtp_header(1, 0, live_ssrc)
    known = {b"IN", b"OK", b"NO", b"BY", b"CK", b"RS", b"RL"}
    makers = [
        # neither AppleMIDI (FF FF) nor RTP version 2
        lambda: (
            bytes((rng.choice([*range(0x00, 0x80), *range(0xC0, 0xFF)]),))
            + noise(rng.randrange(0, 200))
        ),
        # AppleMIDI with an unknown command
        lambda: (
            b"\xff\xff"
            + next(c for c in iter(lambda: noise(2), None) if c not in known)
            + noise(rng.randrange(0, 40))
        ),
        # truncated invitation-type packets and clock/feedback packets
        lambda: (
            b"\xff\xff" + rng.choice([b"IN", b"OK", b"NO", b"BY"]) + noise(rng.randrange(0, 12))
        ),
        lambda: b"\xff\xffCK" + noise(rng.randrange(0, 32)),
        lambda: b"\xff\xffRS" + noise(rng.randrange(0, 8)),
        # wrong protocol version
        lambda: b"\xff\xffIN" + rng.randrange(3, 2**32).to_bytes(4, "big") + noise(8),
        # CK count outside 0..2
        lambda: b"\xff\xffCK" + noise(4) + bytes((rng.randrange(3, 256),)) + noise(27),
        # RTP with the live session's SSRC and a command section that lies about its length
        lambda: header + bytes((0x0F,)) + noise(rng.randrange(0, 14)),
        # RTP header only, no payload
        lambda: header,
        # running status with nothing to run on
        lambda: header + encode_section(bytes((0, rng.randrange(0, 0x80), 0x40))),
        # J flag with no journal after the list
        lambda: header + bytes((0x64, 0x00, 0x90, 0x3C, 0x40)),
        # a SysEx that never ends
        lambda: (
            header + encode_section(b"\x00\xf0" + bytes(rng.randrange(0, 0x80) for _ in range(5)))
        ),
    ]
    out: list[tuple[PortKind, bytes]] = []
    for _ in range(count):
        data = rng.choice(makers)()
        out.append((rng.choice(list(PortKind)), data))
    return out


async def test_fuzz_live_hub_drops_and_counts_every_malformed_datagram(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    port_in, port_out = free_ports(2)
    hub = start_hub(f"[groups]\nG = [{port_in}, {port_out}]")
    alice, bob = make_peer("alice"), make_peer("bob")
    await alice.connect(port_in)
    await bob.connect(port_out)
    assert alice.session is not None
    fuzz = malformed_datagrams(10_000, alice.session.local_ssrc)
    notes = [bytes((0x90 | (i % 16), i % 128, 1 + i % 100)) for i in range(200)]
    target = {PortKind.CONTROL: port_in, PortKind.DATA: port_in + 1}
    sent = 0
    for start in range(0, len(fuzz), 100):
        for kind, data in fuzz[start : start + 100]:
            port = target[kind] if sent % 2 else target[kind] - port_in + port_out
            alice.send_raw(kind, data, ("127.0.0.1", port))
            sent += 1
        # Real traffic interleaved with the garbage: two notes per burst.
        alice.send(notes[start // 50])
        alice.send(notes[start // 50 + 1])
        await wait_for(lambda n=sent: hub.malformed() >= n, 5, "the hub to read the burst")
    assert sent == 10_000
    assert hub.malformed() == 10_000
    await wait_for(lambda: len(bob.received) == 200, 5, "all notes")
    assert bob.received == notes
    (bob_session,) = bob.table.established
    assert bob_session.packets_lost == 0
    assert {s.peer_name for s in hub.participants(port_in)} == {"alice"}
    assert {s.peer_name for s in hub.participants(port_out)} == {"bob"}


@pytest.mark.parametrize("kind", list(PortKind))
async def test_truncated_garbage_never_reaches_a_session(
    kind: PortKind, start_hub: StartHub, make_peer: MakePeer
) -> None:
    port = free_port_pair()
    hub = start_hub(f"[rooms]\nR = {port}")
    a, b = await joined(make_peer, port, "a", "b")
    for size in range(0, 40):
        a.send_raw(kind, b"\x80\x61" + bytes(size), ("127.0.0.1", port + kind))
    a.send(NOTE_ON)
    await wait_for(lambda: b.received == [NOTE_ON])
    # On the control port RTP is malformed. On the data port, up to a bare
    # 12-byte header: malformed; longer: an empty MIDI list from SSRC 0,
    # well-formed but for no session (stray). Nothing reached b either way.
    counters = hub.hub.endpoints[port].table.counters
    expected = (40, 0) if kind is PortKind.CONTROL else (11, 29)
    stray = lambda: counters.drops.get(Drop.UNKNOWN_SESSION, 0)  # noqa: E731
    await wait_for(lambda: counters.malformed + stray() == 40)
    assert (counters.malformed, stray()) == expected
