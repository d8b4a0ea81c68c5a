"""Network MIDI 2.0 clients as participants, end to end on real UDP sockets on 127.0.0.1:
the independent test client (tests/midi2_client.py, no code shared with midihub.midi2)
joins a room's ``midi2`` port, plays with an RTP MIDI peer both ways, is listed, measured,
counted, admitted and refused like everyone else, and released when it goes."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from midihub.cli.status import render_status
from midihub.hub.midi2 import leave_reason
from midihub.midi.messages import note_off, note_on
from midihub.midi.notes import NoteRange
from midihub.midi2 import Count, Departed
from midihub.rtp import LeaveReason, PeerJoined, PeerLeft
from midihub.rtp.limits import Drop
from midihub.web.metrics import Midi2Collector
from tests.midi2_client import Midi2Client, UdpMidi2Client
from tests.record_support import recording_hub
from tests.seeds import seeded
from tests.support import (
    LOCALHOST,
    MARKER,
    PyPeer,
    RunningHub,
    free_ports,
    make_config,
    marked,
    serving,
    wait_for,
)
from tests.test_record import tracks_of

pytestmark = pytest.mark.timeout(120)

BYE_TOO_MANY_SESSIONS = 0x40


def cv1(status: int, data1: int, data2: int = 0, group: int = 0) -> tuple[int]:
    """A MIDI 1.0 Channel Voice message in UMP (type 2)."""
    return ((0x2 << 28) | (group << 24) | (status << 16) | (data1 << 8) | data2,)


def note2(on: bool, channel: int, note: int, velocity: int) -> tuple[int, int]:
    """A MIDI 2.0 Note On/Off (type 4) with a 16-bit velocity."""
    status = (0x90 if on else 0x80) | channel
    return ((0x4 << 28) | (status << 16) | (note << 8), velocity << 16)


def room(port: int, midi2: int, extra: str = "", top: str = "") -> str:
    return f'name = "hub"\n{top}\n[rooms.Jam]\nport = {port}\nmidi2 = {midi2}\n{extra}'


def running_hub(text: str) -> RunningHub:
    return RunningHub(make_config(text))


async def join(
    midi2: int, client: Midi2Client | None = None, *, until: str = "established"
) -> UdpMidi2Client:
    """A test client invited to the hub's Network MIDI 2.0 port; returns once it is in
    ``until`` (established, or closed when it is to be refused)."""
    core = client or Midi2Client(rng=seeded("client", "midi2 client"))
    udp = await UdpMidi2Client.open((LOCALHOST, midi2), core)
    core.invite()
    udp.flush()
    await wait_for(lambda: core.state == until, 10, f"{core.name}: {until}")
    return udp


def send(udp: UdpMidi2Client, *messages: tuple[int, ...]) -> None:
    udp.core.send(list(messages))
    udp.flush()


def midi2_guests(running: RunningHub, port: int) -> list[Any]:
    return [g for g in running.hub.endpoints[port].guests if g.transport == "midi2"]


@asynccontextmanager
async def clients() -> AsyncIterator[list[UdpMidi2Client]]:
    opened: list[UdpMidi2Client] = []
    try:
        yield opened
    finally:
        for udp in opened:
            udp.close()


async def test_a_keyed_room_admits_its_secret_and_refuses_no_or_a_wrong_secret() -> None:
    port, midi2 = free_ports(2)
    peer = PyPeer("rtp")
    async with clients() as opened:
        with running_hub(room(port, midi2, 'key = "sesame"')) as running:
            await peer.connect(port)
            good = Midi2Client(
                name="Keys of the hub", secret="sesame", rng=seeded(1, "midi2 client")
            )
            opened.append(await join(midi2, good))
            assert good.host_name == "hub Jam"
            assert ("auth-required", 0x12, 0) in good.log  # challenged, then accepted
            plain = Midi2Client(name="Plain invitation", rng=seeded(2, "midi2 client"))
            wrong = Midi2Client(
                name="Wrong secret here", secret="open sesame", rng=seeded(3, "midi2 client")
            )
            for client in (plain, wrong):
                udp = await UdpMidi2Client.open((LOCALHOST, midi2), client)
                opened.append(udp)
                client.invite()
                udp.flush()
            await wait_for(lambda: wrong.state == "closed", 10, "the wrong secret refused")
            await wait_for(
                lambda: plain.state == "closed" or ("auth-required", 0x12, 0) in plain.log,
                10,
                "the plain invitation challenged",
            )
            assert ("auth-required", 0x12, 1) in wrong.log  # told its digest was wrong
            assert not any(entry[0] == "accepted" for entry in plain.log + wrong.log)
            assert [g.name for g in midi2_guests(running, port)] == ["Keys of the hub"]
            # The one that joined plays with the room; the refused never could.
            send(opened[0], cv1(0x90, 60, 100))
            await wait_for(lambda: peer.received == [note_on(0, 60, 100)], 10, "the note")
    peer.close()


async def test_midi_is_exact_both_ways_and_midi2_velocities_are_scaled() -> None:
    port, midi2 = free_ports(2)
    alice, bob = PyPeer("alice"), PyPeer("bob")
    async with clients() as opened:
        with running_hub(room(port, midi2)) as running:
            await alice.connect(port)
            await bob.connect(port)
            udp = await join(midi2)
            opened.append(udp)
            core = udp.core
            # MIDI 1.0 in UMP, System, SysEx7 (two packets), then MIDI 2.0 notes whose
            # 16-bit velocities the room hears by their top 7 bits.
            send(
                udp,
                cv1(0x90, 60, 100),
                cv1(0xB1, 64, 127),
                cv1(0xE2, 0x00, 0x40),
                ((0x1 << 28) | (0xF8 << 16),),  # timing clock
                ((0x3 << 28) | (0x1 << 20) | (6 << 16) | 0x7E7F, 0x06010203),  # start
                ((0x3 << 28) | (0x3 << 20) | (2 << 16) | 0x0405, 0),  # end
                note2(True, 3, 62, 0xFFFF),
                note2(True, 3, 64, 0x8000),
                note2(True, 3, 67, 0xC8A0),
                note2(False, 3, 62, 0x0000),
                cv1(0x80, 60, 0),
            )
            expected = [
                note_on(0, 60, 100),
                bytes((0xB1, 64, 127)),
                bytes((0xE2, 0x00, 0x40)),
                bytes((0xF8,)),
                bytes((0xF0, 0x7E, 0x7F, 0x06, 0x01, 0x02, 0x03, 0x04, 0x05, 0xF7)),
                note_on(3, 62, 127),
                note_on(3, 64, 64),
                note_on(3, 67, 100),
                note_off(3, 62, 0),
                note_off(0, 60, 0),
            ]
            for peer in (alice, bob):
                await wait_for(lambda p=peer: len(p.received) >= len(expected), 10, "the MIDI")
                assert peer.received == expected
            # The room to the client: what alice plays, as MIDI 1.0 in UMP on group 0,
            # SysEx split into 6-byte packets; never its own echo.
            alice.send(
                note_on(5, 70, 33), bytes((0xC5, 12)), bytes((0xF0, 1, 2, 3, 4, 5, 6, 7, 0xF7))
            )
            want = [
                cv1(0x95, 70, 33),
                cv1(0xC5, 12),
                ((0x3 << 28) | (0x1 << 20) | (6 << 16) | 0x0102, 0x03040506),
                ((0x3 << 28) | (0x3 << 20) | (1 << 16) | 0x0700, 0),
            ]
            await marked(alice, bob)  # the client hears the marker too, last
            want.append(cv1(0xBF, 119, 0))
            await wait_for(lambda: len(core.received) >= len(want), 10, "the room's MIDI")
            assert core.received == want
            guest = midi2_guests(running, port)[0]
            assert running.hub.endpoints[port].stats_of(guest.public_id).messages_in == len(
                expected
            )
    alice.close()
    bob.close()


def sysex7(status: int, data: bytes) -> tuple[int, int]:
    """One SysEx7 UMP (type 3): 0 complete, 1 start, 2 continue, 3 end; <= 6 bytes."""
    d = data.ljust(6, b"\x00")
    word0 = (0x3 << 28) | (status << 20) | (len(data) << 16) | (d[0] << 8) | d[1]
    return (word0, int.from_bytes(d[2:], "big"))


async def test_a_sysex_open_across_a_session_reset_is_dropped_never_glued() -> None:
    """A client's Session Reset: the SysEx it had open (still in the UMP bridge, or
    already handed to the Intake in 1024-byte segments) is dropped and counted; its
    end after the reset reaches no one, and a whole SysEx after it passes."""
    port, midi2 = free_ports(2)
    peer = PyPeer("peer")
    async with clients() as opened:
        with running_hub(room(port, midi2)) as running:
            await peer.connect(port)
            udp = await join(midi2)
            opened.append(udp)
            long_start = [sysex7(1, bytes((0x7D, 1, 2, 3, 4, 5)))]
            long_start += [sysex7(2, bytes((n % 128,)) * 6) for n in range(180)]  # > 1024
            for start in (long_start, [sysex7(1, bytes((0x7D, 9, 9)))]):
                send(udp, *start)
                udp.core.reset()  # Session Reset: both sides number from the start
                send(udp, sysex7(3, bytes((0x11, 0x22))))  # the end, after it
            whole = bytes((0xF0, 0x7D, 0x33, 0xF7))
            send(udp, sysex7(0, whole[1:-1]), cv1(0xBF, 119, 0))  # then the marker
            await wait_for(lambda: MARKER in peer.received, 10, "the marker")
            assert peer.received == [whole, MARKER]
            midi2_port = running.server.midi2_ports[midi2]
            assert midi2_port.host.counters[Count.RESETS] == 2
            assert midi2_port.dropped_by_kind["sysex-incomplete"] == 1  # never handed on
            drops = running.hub.endpoints[port].table.counters.drops
            assert drops[Drop.SYSEX_INCOMPLETE] >= 1  # the long one's first segment
    peer.close()


async def test_endpoint_discovery_is_answered_and_shutdown_says_bye() -> None:
    port, midi2 = free_ports(2)
    async with clients() as opened:
        with running_hub(room(port, midi2, '[midi2]\nproduct_id = "hub-test-1"\n')):
            udp = await join(midi2)
            opened.append(udp)
            core = udp.core
            # Endpoint Discovery (status 0x000, UMP 1.1), asking for everything.
            send(udp, (0xF0000101, 0x1F, 0, 0))
            statuses: Callable[[], list[int]] = lambda: [  # noqa: E731
                (m[0] >> 16) & 0x3FF for m in core.received if m[0] >> 28 == 0xF
            ]
            await wait_for(lambda: {0x001, 0x003, 0x004} <= set(statuses()), 10, "the replies")

            def text(status: int) -> str:
                data = b""
                for m in core.received:
                    if m[0] >> 28 == 0xF and (m[0] >> 16) & 0x3FF == status:
                        data += (m[0] & 0xFFFF).to_bytes(2, "big")
                        data += b"".join(w.to_bytes(4, "big") for w in m[1:4])
                return data.rstrip(b"\x00").decode()

            assert text(0x003) == "hub Jam"
            assert text(0x004) == "hub-test-1"
        # The hub stops: its clients are told so (Bye 0x02, power down).
        await wait_for(lambda: core.state == "closed", 10, "the Bye at shutdown")
        assert core.bye_reason == 0x02


async def test_listed_measured_and_counted_like_any_participant() -> None:
    port, midi2 = free_ports(2)
    text = room(port, midi2, "[midi2]\nping_interval = 0.2\n")
    async with clients() as opened, serving(text) as (running, url):
        server = running.server
        udp = await join(midi2, Midi2Client(name="Win MIDI", rng=seeded(4, "midi2 client")))
        opened.append(udp)
        send(udp, cv1(0x90, 61, 90), (0x5 << 28, 0, 0, 0))  # a type 5 (data) message: dropped
        await wait_for(lambda: running.hub.endpoints[port].messages_in == 1, 10, "the note")
        await wait_for(
            lambda: any(g.rtt is not None for g in midi2_guests(running, port)), 10, "an RTT"
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/api/participants") as response:
                ports = (await response.json())["ports"]
            (person,) = [p for entry in ports for p in entry["participants"]]
            assert (person["name"], person["transport"], person["port"]) == (
                "Win MIDI",
                "midi2",
                port,
            )
            async with http.get(f"{url}/api/latency") as response:
                rows = await response.json()
            (row,) = [r for r in rows if r.get("connected")]
            screen = io.StringIO()  # `midihub status` renders these two answers
            render_status(ports, rows, Console(file=screen, width=200))
            (line,) = [text for text in screen.getvalue().splitlines() if "Win MIDI" in text]
            assert " · midi2 " in line
            assert row["name"] == "Win MIDI" and row["samples"] >= 1 and row["lastLatency"] >= 0
        registry = text_string_to_metric_families(
            _render(Midi2Collector(lambda: server.midi2_ports))
        )
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry
            for s in family.samples
        }
        labels = (("name", "hub Jam"), ("port", str(midi2)))
        assert samples[("midihub_midi2_participants", labels)] == 1
        assert samples[("midihub_midi2_protocol_total", (("kind", "joined"), *labels))] == 1
        dropped = [
            v for (name, lab), v in samples.items() if name == "midihub_midi2_ump_dropped_total"
        ]
        assert sum(dropped) == 1


def _render(collector: Midi2Collector) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


async def test_a_client_that_vanishes_holding_notes_is_released_to_the_others() -> None:
    port, midi2 = free_ports(2)
    text = room(port, midi2, "[midi2]\nping_interval = 0.2\n", "timeout = 1.5\nck_interval = 0.3")
    peer = PyPeer("listener")
    async with clients() as opened:
        with running_hub(text) as running:
            await peer.connect(port)
            gone = await join(midi2, Midi2Client(name="gone", rng=seeded(5, "midi2 client")))
            polite = await join(midi2, Midi2Client(name="polite", rng=seeded(6, "midi2 client")))
            opened += [gone, polite]
            send(gone, cv1(0x90, 60, 100), cv1(0x90, 64, 100), cv1(0xB0, 64, 127))
            send(polite, cv1(0x91, 48, 80))
            await wait_for(lambda: len(peer.received) == 4, 10, "the notes")
            gone.close()  # no Bye: it just stops answering
            await wait_for(lambda: len(peer.received) >= 7, 20, "the release after the timeout")
            assert peer.received[4:] == [note_off(0, 60), note_off(0, 64), bytes((0xB0, 64, 0))]
            polite.core.bye()  # a Bye releases at once
            polite.flush()
            await wait_for(lambda: len(peer.received) >= 8, 10, "the release after the Bye")
            assert peer.received[7:] == [note_off(1, 48)]
            left = [(e.who.name, e.reason) for _, e in running.events if isinstance(e, PeerLeft)]
            assert left == [("gone", LeaveReason.TIMEOUT), ("polite", LeaveReason.BYE)]
            assert peer.state.release() == []  # nothing stuck
    peer.close()


async def test_a_loss_nothing_repairs_releases_the_held_notes_and_play_goes_on() -> None:
    """A client without FEC loses a datagram (its NoteOff) and cannot send it again
    (Retransmit Error): before, the hub said Bye 0x03 and never played what came after
    the gap, and the log said "left (closed)". Now the held note is released at once,
    what followed is played, and the client stays."""
    port, midi2 = free_ports(2)
    peer = PyPeer("listener")
    async with clients() as opened:
        with running_hub(room(port, midi2)) as running:
            await peer.connect(port)
            lossy = await join(midi2, Midi2Client(name="lossy", fec=0, rng=seeded(7, "m2c")))
            opened.append(lossy)
            send(lossy, cv1(0x90, 60, 100))
            await wait_for(lambda: len(peer.received) == 1, 10, "the note")
            lossy.core.send([cv1(0x80, 60, 0)])
            lossy.core.take()  # lost on the way
            lossy.core._sent.clear()  # and gone from its history: Retransmit Error
            send(lossy, cv1(0x90, 64, 90), cv1(0x80, 64, 0))
            await wait_for(lambda: len(peer.received) >= 4, 10, "the release and the rest")
            assert peer.received == [
                note_on(0, 60, 100),
                note_off(0, 60),  # released: its NoteOff was in the gap
                note_on(0, 64, 90),
                note_off(0, 64),
            ]
            [guest] = midi2_guests(running, port)
            assert guest.packets_lost == 1 and lossy.core.state == "established"
            assert running.hub.notes_released == 1
            assert not [e for _, e in running.events if isinstance(e, PeerLeft)]
    peer.close()


@pytest.mark.parametrize(
    ("departed", "reason"),
    [
        (Departed(("h", 1), 0x01, by_client=True), LeaveReason.BYE),
        (Departed(("h", 1), 0x04, by_client=False), LeaveReason.TIMEOUT),
        (Departed(("h", 1), 0x03, by_client=False), LeaveReason.LIMIT),  # kept losing
        (Departed(("h", 1), 0x02, by_client=False), LeaveReason.SHUTDOWN),
        (Departed(("h", 1), 0x01, by_client=False), LeaveReason.CLOSED),
        (Departed(("h", 1), 0x04, by_client=False, proven=False), LeaveReason.HANDSHAKE_TIMEOUT),
    ],
)
def test_the_log_words_each_departure_by_its_bye_reason(
    departed: Departed, reason: LeaveReason
) -> None:
    """Before, every Bye of the hub but a timeout was logged as "left (closed)", a
    client ended for its losses too."""
    assert leave_reason(departed) == reason


async def test_a_full_port_answers_bye_too_many_sessions() -> None:
    port, midi2 = free_ports(2)
    text = room(port, midi2, top="max_participants = 2")
    peer = PyPeer("rtp")
    async with clients() as opened:
        with running_hub(text) as running:
            await peer.connect(port)
            opened.append(await join(midi2, Midi2Client(name="in", rng=seeded(7, "midi2 client"))))
            late = Midi2Client(name="late", rng=seeded(8, "midi2 client"))
            opened.append(await join(midi2, late, until="closed"))
            assert late.bye_reason == BYE_TOO_MANY_SESSIONS
            assert [g.name for g in midi2_guests(running, port)] == ["in"]
            joins = [e.who.name for _, e in running.events if isinstance(e, PeerJoined)]
            assert joins == ["rtp", "in"]
    peer.close()


async def test_a_reload_moves_the_port_and_a_new_key_lets_old_clients_go() -> None:
    port, midi2, moved = free_ports(3)
    peer = PyPeer("rtp")
    async with clients() as opened:
        with running_hub(room(port, midi2, 'key = "first"')) as running:
            await peer.connect(port)
            client = Midi2Client(
                name="keys, first key", secret="first", rng=seeded(9, "midi2 client")
            )
            opened.append(await join(midi2, client))
            send(opened[0], cv1(0x90, 60, 100))
            await wait_for(lambda: len(peer.received) == 1, 10, "the note")
            running.server.reconfigure(make_config(room(port, midi2, 'key = "second"')).spec())
            await wait_for(lambda: client.state == "closed", 10, "the Bye after the key change")
            assert peer.received[1:] == [note_off(0, 60)]
            assert midi2_guests(running, port) == []
            fresh = Midi2Client(
                name="again, second key", secret="second", rng=seeded(10, "midi2 client")
            )
            opened.append(await join(midi2, fresh))
            # [midi2] settings reach the live session; the same credentials keep it.
            tuned = room(port, midi2, 'key = "second"\n[midi2]\nfec = 1\nping_interval = 7\n')
            running.server.reconfigure(make_config(tuned).spec())
            host = running.server.midi2_ports[midi2].host
            (address,) = [g.address for g in midi2_guests(running, port)]
            session = host.session(address)
            assert session is not None and fresh.state == "established"
            assert (session.settings.fec, session.settings.ping_interval) == (1, 7)
            running.server.reconfigure(make_config(room(port, moved, 'key = "second"')).spec())
            await wait_for(lambda: fresh.state == "closed", 10, "the Bye when the port moved")
            assert sorted(running.server.midi2_ports) == [moved]
            moved_client = Midi2Client(
                name="moved, second key", secret="second", rng=seeded(11, "midi2 client")
            )
            opened.append(await join(moved, moved_client))
            assert [g.name for g in midi2_guests(running, port)] == ["moved, second key"]
    peer.close()


class LossyProxy(asyncio.DatagramProtocol):
    """One UDP port between a client and the hub's Network MIDI 2.0 port, dropping a
    seeded share of datagrams both ways once ``lossy`` is set (the handshake passes)."""

    def __init__(self, target: int, rng: random.Random, loss: float) -> None:
        self.target = (LOCALHOST, target)
        self.rng = rng
        self.loss = loss
        self.lossy = False
        self.client: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.dropped = {"to-hub": 0, "to-client": 0}
        self.passed = {"to-hub": 0, "to-client": 0}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.target:
            way, destination = "to-client", self.client
        else:
            self.client = addr
            way, destination = "to-hub", self.target
        if destination is None:
            return
        if self.lossy and self.rng.random() < self.loss:
            self.dropped[way] += 1
            return
        self.passed[way] += 1
        self.transport.sendto(data, destination)


async def test_ten_percent_loss_both_ways_every_message_once_in_order_no_stuck_note() -> None:
    port, midi2 = free_ports(2)
    peer = PyPeer("rtp")
    rng = seeded(23, "midi2 loss proxy")
    loop = asyncio.get_running_loop()
    transport, proxy = await loop.create_datagram_endpoint(
        lambda: LossyProxy(midi2, rng, 0.10), local_addr=(LOCALHOST, 0)
    )
    proxy_port = transport.get_extra_info("sockname")[1]
    async with clients() as opened:
        with running_hub(room(port, midi2)) as running:
            await peer.connect(port)
            udp = await join(proxy_port, Midi2Client(name="lossy", rng=seeded(12, "midi2 client")))
            opened.append(udp)
            core = udp.core
            proxy.lossy = True
            notes = [(n % 16, 36 + n % 60) for n in range(200)]
            played: list[bytes] = []
            for index, (channel, note) in enumerate(notes):  # a datagram each, as played
                send(udp, cv1(0x90 | channel, note, 1 + index % 127), cv1(0x80 | channel, note, 0))
                played += [note_on(channel, note, 1 + index % 127), note_off(channel, note, 0)]
                peer.send(note_on(channel, note, 100), note_off(channel, note))
                await asyncio.sleep(0.005)  # a fast player's pace, not a synchronisation
            want = [m for c, n in notes for m in (cv1(0x90 | c, n, 100), cv1(0x80 | c, n, 0))]

            async def settled() -> bool:
                if len(peer.received) < len(played):
                    udp.core.keepalive()  # carries the FEC copies of the tail
                    udp.flush()
                return len(peer.received) >= len(played) and len(core.received) >= len(want)

            await wait_for(settled, 60, "every message through the loss")
            assert peer.received == played
            assert core.received == want
            assert proxy.dropped["to-hub"] > 10 and proxy.dropped["to-client"] > 10
            assert peer.state.release() == []
            guest = midi2_guests(running, port)[0]
            assert guest.held.release() == []
    transport.close()
    peer.close()


async def test_one_source_is_held_to_sessions_per_source_and_a_panic_reaches_its_clients() -> None:
    port, midi2 = free_ports(2)
    text = room(port, midi2, "[limits]\nsessions_per_source = 2\n")
    async with clients() as opened:
        with running_hub(text) as running:
            for n in range(2):
                client = Midi2Client(name=f"player {n}", rng=seeded(20 + n, "midi2 client"))
                opened.append(await join(midi2, client))
            third = Midi2Client(name="player 2", rng=seeded(22, "midi2 client"))
            opened.append(await join(midi2, third, until="closed"))
            assert third.bye_reason == BYE_TOO_MANY_SESSIONS
            assert running.server.midi2_ports[midi2].refused["source-full"] == 1
            assert len(midi2_guests(running, port)) == 2
            # A panic to the port reaches both clients as UMP: a NoteOff per note of its range.
            running.hub.panic(port, NoteRange.LOW, asyncio.get_running_loop().time(), channels=[9])
            running.server.flush()
            want = [cv1(0x89, note, 0) for note in range(0, 43)]
            for udp in opened[:2]:
                await wait_for(lambda u=udp: len(u.core.received) >= len(want), 10, "the panic")
                assert udp.core.received == want


async def test_a_recording_has_the_clients_track_with_its_release(tmp_path: Path) -> None:
    port, midi2 = free_ports(2)
    peer = PyPeer("rtp")
    async with clients() as opened, recording_hub(room(port, midi2), tmp_path) as hub:
        await peer.connect(port)
        status, rec = await hub.call("POST", "/api/recordings", {"port": port})
        assert status == 201
        udp = await join(midi2, Midi2Client(name="Win MIDI", rng=seeded(30, "midi2 client")))
        opened.append(udp)
        send(udp, cv1(0x90, 60, 100), note2(True, 0, 64, 0xFFFF))
        await wait_for(lambda: len(peer.received) == 2, 10, "the notes")
        udp.core.bye()  # leaves holding both
        udp.flush()
        await wait_for(lambda: len(peer.received) == 4, 10, "the release")
        status, done = await hub.call("POST", f"/api/recordings/{rec['id']}/stop")
        assert status == 200 and done["state"] == "done", done
        path = hub.manager.path_of(rec["id"])
        assert path is not None
        assert tracks_of(path) == {
            "Win MIDI": [note_on(0, 60, 100), note_on(0, 64, 127), note_off(0, 60), note_off(0, 64)]
        }
    peer.close()


async def test_a_user_joins_with_the_password_and_not_without() -> None:
    port, midi2 = free_ports(2)
    text = room(port, midi2, '[midi2.users]\nalice = "correct horse"\n')
    async with clients() as opened:
        with running_hub(text) as running:
            alice = Midi2Client(
                name="alice's keyboard",
                user="alice",
                password="correct horse",
                rng=seeded(40, "midi2 client"),
            )
            opened.append(await join(midi2, alice))
            assert ("auth-required", 0x13, 0) in alice.log  # user authentication asked
            mallory = Midi2Client(
                name="mallory's keyboard",
                user="alice",
                password="battery staple",
                rng=seeded(41, "midi2 client"),
            )
            udp = await UdpMidi2Client.open((LOCALHOST, midi2), mallory)
            opened.append(udp)
            mallory.invite()
            udp.flush()
            await wait_for(lambda: mallory.state == "closed", 10, "the wrong password refused")
            assert ("auth-required", 0x13, 1) in mallory.log
            assert [g.name for g in midi2_guests(running, port)] == ["alice's keyboard"]
