"""Session state machine, without sockets: two session tables on the shared in-memory
network (tests/memnet.py), with a clock we control; some tests take an exchange apart
by hand (as aioquic's connection tests do)."""

from __future__ import annotations

import dataclasses

from midihub.rtp import (
    Drop,
    LatencyMeasured,
    MidiReceived,
    PacketsLost,
    PeerJoined,
    PeerLeft,
    PortKind,
    Role,
    Session,
    SessionSettings,
    SessionTable,
    State,
    encode_lists,
    encode_section,
)
from midihub.rtp import packets as p
from midihub.rtp.events import Event
from tests.memnet import MemNet, TableNode, Wire
from tests.seeds import seeded

A = ("10.0.0.1", 5004)  # the initiator's control address
B = ("10.0.0.2", 5040)  # the responder's control address


class Pair:
    """Initiator ``a`` and responder ``b`` (each with its own settings) on a lossless,
    instant memnet, from t = 100 s: ``pump`` delivers what is in flight, ``advance``
    lets time pass, ``drop_next_from`` loses a side's next datagram; ``sent`` and
    ``events`` are each side's, by "a" and "b"; ``session`` is the initiator's."""

    def __init__(self, settings: SessionSettings | None = None, seed: int = 1) -> None:
        settings = settings or SessionSettings()
        self.a = SessionTable(
            "alice", rng=seeded(seed, "Pair a"), settings=dataclasses.replace(settings)
        )
        self.b = SessionTable(
            "hub", rng=seeded(seed + 1, "Pair b"), settings=dataclasses.replace(settings)
        )
        self.net = MemNet(rule=self._rule, latency=0.0, start=100.0)
        self.nodes = {
            "a": self.net.attach(TableNode(self.a, A)),
            "b": self.net.attach(TableNode(self.b, B)),
        }
        self.events: dict[str, list[Event]] = {side: n.events for side, n in self.nodes.items()}
        self.drop_next_from: set[str] = set()

    def _rule(self, wire: Wire, position: int, count: int) -> list[float]:
        side = "a" if wire.src[0] == A[0] else "b"
        if side in self.drop_next_from:
            self.drop_next_from.discard(side)
            return []
        return [0.0]

    @property
    def now(self) -> float:
        return self.net.now

    @property
    def sent(self) -> dict[str, list[bytes]]:
        return {side: [w.data for w in node.sent] for side, node in self.nodes.items()}

    def pump(self) -> None:
        """Everything in flight delivered, and every answer to it (no time passes)."""
        self.net.run_for(0.0)

    def advance(self, seconds: float) -> None:
        self.net.run_for(seconds)

    def connect(self) -> None:
        self.session = self.a.connect(B, self.now)
        self.pump()

    def of(self, side: str, kind: type[Event]) -> list[Event]:
        return [e for e in self.events[side] if isinstance(e, kind)]


def midi(*messages: bytes) -> list[bytes]:
    return [encode_section(b) for b in encode_lists([(0, m) for m in messages], 1200)]


def test_handshake_joins_both_sides_with_names() -> None:
    pair = Pair()
    pair.connect()
    assert [type(e) for e in pair.events["a"]][:1] == [PeerJoined]
    assert len(pair.of("b", PeerJoined)) == 1
    (responder,) = pair.b.established
    assert responder.peer_name == "alice" and pair.session.peer_name == "hub"
    assert responder.control_addr == A and responder.data_addr == (A[0], A[1] + 1)
    assert pair.session.state is State.ESTABLISHED


def test_one_ssrc_per_session_for_ok_ck_and_rtp() -> None:
    pair = Pair()
    pair.connect()
    pair.advance(2)
    (responder,) = pair.b.established
    pair.b.send([responder], midi(b"\x90\x3c\x64"), pair.now)
    pair.pump()
    ssrcs = set()
    for data in pair.sent["b"]:
        packet = p.decode_session_packet(data) if p.is_session_packet(data) else None
        if isinstance(packet, p.Invitation | p.Clock):
            ssrcs.add(packet.ssrc)
        elif packet is None:
            ssrcs.add(p.decode_rtp_header(data)[0].ssrc)
    assert ssrcs == {responder.local_ssrc}


def test_initiator_measures_rtt_and_responder_too() -> None:
    pair = Pair()
    pair.connect()
    assert pair.of("a", LatencyMeasured) and pair.of("b", LatencyMeasured)
    assert all(e.rtt == 0 for e in pair.of("a", LatencyMeasured))  # instant wire


def test_rtt_reflects_wire_delay() -> None:
    pair = Pair()
    pair.connect()
    # One clock sync, started by the initiator now, with 40 ms on each leg.
    (responder,) = pair.b.established
    pair.net.latency = 0.040
    before = {side: len(events) for side, events in pair.events.items()}
    pair.a.sync_clock(pair.session, pair.now)
    pair.advance(0.5)  # CK1 back at 80 ms, CK2 there at 120 ms; the next sync is at 1.5 s
    events = pair.events["a"][before["a"] :]
    assert [round(e.rtt, 4) for e in events if isinstance(e, LatencyMeasured)] == [0.08]
    events = pair.events["b"][before["b"] :]
    assert [round(e.rtt, 4) for e in events if isinstance(e, LatencyMeasured)] == [0.08]
    assert responder.rtt is not None and round(responder.rtt, 4) == 0.08


def test_ck2_never_starts_a_new_exchange() -> None:
    pair = Pair()
    pair.connect()
    ck2 = p.encode_clock(pair.session.local_ssrc, 2, (1, 2, 3))
    pair.b.receive(ck2, PortKind.DATA, (A[0], A[1] + 1), pair.now)
    assert pair.b.datagrams_to_send() == []


def test_a_ck2_across_the_32_bit_wrap_of_our_stamps_measures_the_rtt() -> None:
    """Our CK stamps start at a random 32-bit offset, so their low 32 bits wrap within
    five days of any session's start: a CK2 echoing a CK1 stamp from just before the
    wrap, answered just after it, is an RTT like any other, whether the peer echoes
    all 64 bits or only the low 32."""
    data_a = (A[0], A[1] + 1)
    for echo_mask in (2**64 - 1, 2**32 - 1):
        session = Session(
            role=Role.RESPONDER,
            local_ssrc=0x1111,
            local_name="hub",
            token=7,
            control_addr=A,
            now=100.0,
            settings=SessionSettings(),
            clock_offset=2**32 - 10,  # 1 ms before the wrap
        )
        invitation = p.Invitation(p.INVITATION, 7, 0x5555, "alice")
        session.invited_by(0x5555)
        session.on_invitation(invitation, PortKind.CONTROL, A, 100.0, 64)
        session.on_invitation(invitation, PortKind.DATA, data_a, 100.0, 64)
        session.datagrams_to_send()
        session.on_clock(p.Clock(0x5555, 0, (123, 0, 0)), PortKind.DATA, data_a, 100.0)
        ((_, ck1, _),) = session.datagrams_to_send()
        ck1_packet = p.decode_session_packet(ck1)
        assert isinstance(ck1_packet, p.Clock)
        stamp = ck1_packet.timestamps[1]
        assert stamp == 2**32 - 10
        ck2 = p.Clock(0x5555, 2, (123, stamp & echo_mask, 999))
        events = session.on_clock(ck2, PortKind.DATA, data_a, 100.5)  # 5000 ticks later
        assert [e.rtt for e in events if isinstance(e, LatencyMeasured)] == [0.5]
        assert session.timestamp(100.5) > 2**32  # the wrap happened in between


def test_midi_flows_both_ways_in_order() -> None:
    pair = Pair()
    pair.connect()
    notes = [bytes((0x90, n, 100)) for n in range(20)]
    pair.a.send([pair.session], midi(*notes), pair.now)
    pair.pump()
    (responder,) = pair.b.established
    pair.b.send([responder], midi(b"\xb0\x40\x7f"), pair.now)
    pair.pump()
    received_b = [m for e in pair.of("b", MidiReceived) for _, m in e.commands]
    received_a = [m for e in pair.of("a", MidiReceived) for _, m in e.commands]
    assert received_b == notes and received_a == [b"\xb0\x40\x7f"]


def test_sequence_gap_is_reported_and_late_packets_dropped() -> None:
    pair = Pair()
    pair.connect()
    pair.a.send([pair.session], midi(b"\x90\x01\x01"), pair.now)
    pair.pump()
    pair.a.send([pair.session], midi(b"\x90\x02\x01"), pair.now)
    late = pair.a.datagrams_to_send()  # held back
    pair.a.send([pair.session], midi(b"\x90\x03\x01"), pair.now)
    pair.pump()
    assert [e.count for e in pair.of("b", PacketsLost)] == [1]
    for _, data, _ in late:
        pair.b.receive(data, PortKind.DATA, (A[0], A[1] + 1), pair.now)
    received = [m for e in pair.of("b", MidiReceived) for _, m in e.commands]
    assert received == [b"\x90\x01\x01", b"\x90\x03\x01"]
    (responder,) = pair.b.established
    assert responder.packets_lost == 1 and responder.packets_received == 2


def test_sysex_across_packets_is_reassembled() -> None:
    pair = Pair()
    pair.connect()
    big = b"\xf0" + bytes(range(100)) * 30 + b"\xf7"
    pair.a.send(
        [pair.session],
        [encode_section(b) for b in encode_lists([(0, big), (0, b"\x90\x3c\x40")], 1200)],
        pair.now,
    )
    pair.pump()
    received = [m for e in pair.of("b", MidiReceived) for _, m in e.commands]
    assert received == [big, b"\x90\x3c\x40"]


def test_a_sysex_missing_a_lost_segment_is_dropped_and_counted() -> None:
    pair = Pair()
    pair.connect()
    big = b"\xf0" + bytes(range(100)) * 30 + b"\xf7"
    lists = encode_lists([(0, big), (0, b"\x90\x3c\x40")], 1200)
    pair.a.send([pair.session], [encode_section(b) for b in lists], pair.now)
    packets = [data for kind, data, _ in pair.a.datagrams_to_send() if kind is PortKind.DATA]
    assert len(packets) >= 3  # the SysEx's start, middle (lost here) and end
    events = [
        event
        for data in (packets[0], *packets[2:])
        for event in pair.b.receive(data, PortKind.DATA, (A[0], A[1] + 1), pair.now)
    ]
    received = [m for e in events if isinstance(e, MidiReceived) for _, m in e.commands]
    assert received == [b"\x90\x3c\x40"]  # nothing half-forwarded, the rest intact
    # Counted twice: the open start at the loss, then the end that came without it.
    assert pair.b.counters.drops[Drop.SYSEX_INCOMPLETE] == 2


def test_bye_ends_the_session_on_both_sides() -> None:
    pair = Pair()
    pair.connect()
    pair.a.close()
    pair.pump()
    assert [e.reason for e in pair.of("b", PeerLeft)] == ["bye"]
    assert pair.b.established == [] and pair.b.counters.drops == {
        Drop.UNKNOWN_SESSION: 1
    }  # the second BY
    byes = [d for d in pair.sent["a"] if d[2:4] == b"BY"]
    assert len(byes) == 2  # one on each port


def test_silent_peer_times_out_with_bye() -> None:
    pair = Pair(SessionSettings(timeout=30, ck_interval=10))
    pair.connect()
    pair.net.die(pair.nodes["a"])  # the initiator vanishes without a word
    pair.advance(29)
    assert pair.of("b", PeerLeft) == []
    pair.advance(3)
    assert [e.reason for e in pair.of("b", PeerLeft)] == ["timeout"]
    assert pair.sent["b"][-1][2:4] == b"BY"


def test_peer_that_keeps_syncing_never_times_out() -> None:
    pair = Pair(SessionSettings(timeout=30, ck_interval=10))
    pair.connect()
    pair.advance(120)
    assert pair.of("a", PeerLeft) == [] and pair.of("b", PeerLeft) == []
    assert len(pair.of("a", LatencyMeasured)) >= 12


def test_responder_starts_clock_sync_for_a_peer_that_never_does() -> None:
    pair = Pair(SessionSettings(timeout=30, ck_interval=10))
    pair.connect()
    pair.a.settings.ck_interval = 10_000  # the initiator stops syncing after its burst
    pair.advance(25)
    responder_ck0 = [d for d in pair.sent["b"] if d[2:4] == b"CK" and d[8] == 0]
    assert responder_ck0
    assert pair.of("b", PeerLeft) == []


def test_invitation_retries_then_gives_up() -> None:
    pair = Pair()
    pair.session = pair.a.connect(("10.0.0.9", 5040), pair.now)  # nobody there
    pair.advance(50)
    attempts = sum(1 for d in pair.sent["a"] if d[2:4] == b"IN")
    assert attempts == 12
    assert [e.reason for e in pair.of("a", PeerLeft)] == ["no-answer"]


def test_lost_invitation_is_retried() -> None:
    pair = Pair()
    pair.drop_next_from.add("a")
    pair.connect()
    assert not pair.session.established
    pair.advance(2)
    assert pair.session.established


def test_rejected_when_full() -> None:
    pair = Pair()
    pair.b.max_sessions = 0
    pair.connect()
    assert [e.reason for e in pair.of("a", PeerLeft)] == ["rejected"]
    assert pair.b.counters.drops[Drop.PORT_FULL] == 1


def test_data_invitation_without_control_invitation_is_rejected() -> None:
    host = SessionTable("hub", rng=seeded(1, "hub"))
    invite = p.encode_invitation(p.Invitation(p.INVITATION, 5, 6, "x"))
    host.receive(invite, PortKind.DATA, A, 1.0)
    ((kind, data, addr),) = host.datagrams_to_send()
    assert data[2:4] == b"NO" and kind is PortKind.DATA and addr == A


def test_malformed_packets_are_counted_not_raised() -> None:
    host = SessionTable("hub", rng=seeded(1, "hub"))
    for data in (b"", b"\xff\xffXX", b"\x80", b"\x80\x61\x00\x01" + bytes(8) + b"\x0f"):
        assert host.receive(data, PortKind.DATA, A, 1.0) == []
    assert host.counters.malformed == 4


def test_rtp_from_an_unknown_ssrc_is_stray_not_malformed() -> None:
    host = SessionTable("hub", rng=seeded(1, "hub"))
    packet = p.encode_rtp_header(1, 0, 1234) + encode_section(b"\x00\x90\x3c\x40")
    host.receive(packet, PortKind.DATA, A, 1.0)
    assert host.counters.drops == {Drop.UNKNOWN_SESSION: 1} and host.counters.malformed == 0


def test_reinvitation_with_a_live_ssrc_is_refused_until_the_old_session_ends() -> None:
    """A new token for a live SSRC (a restart, or someone else) never replaces the
    live session; once the old one times out, the same IN gets a fresh session."""
    pair = Pair(SessionSettings(timeout=5.0, ck_interval=1.0))
    pair.connect()
    old = pair.b.established[0]
    ssrc = pair.session.local_ssrc
    invite = p.encode_invitation(p.Invitation(p.INVITATION, 999, ssrc, "alice"))
    assert pair.b.receive(invite, PortKind.CONTROL, A, pair.now) == []
    (reply,) = pair.b.datagrams_to_send()
    assert p.decode_session_packet(reply[1]).command == p.REJECT
    assert pair.b.established == [old] and pair.b.counters.drops[Drop.SSRC_IN_USE] == 1
    pair.net.die(pair.nodes["a"])  # the old side vanishes without a word
    pair.advance(10)
    assert [e.reason for e in pair.of("b", PeerLeft)] == ["timeout"]
    assert pair.b.receive(invite, PortKind.CONTROL, A, pair.now) == []
    assert pair.b.pending == 1
