"""A stateful fuzz of the hub's receive path: several source addresses interleave
IN, OK, CK, RS, BY, RTP and garbage, valid and broken, with honest answers mixed in
(so sessions really join and MIDI really flows). After every step: no session took
a packet from an address not its own, counts stay within limits, what went to an
address that never proved itself is no more than what came from it, and every
datagram fits in 1280 bytes of IP."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from midihub.hub import Endpoint, Hub
from midihub.midi.messages import control_change, note_off, note_on
from midihub.rtp import Drop, MidiReceived, PortKind, Session, encode_lists, encode_section
from midihub.rtp import packets as p
from midihub.rtp.limits import MAX_TRACKED_SOURCES, source_key
from tests.seeds import seeded
from tests.support import make_config

PORT = 5070
SOURCES = [("10.0.0.1", 6000), ("10.0.0.1", 6010), ("10.0.0.2", 6000), ("10.9.9.9", 7000)]
MAX_UDP_PAYLOAD = 1232  # 1280 bytes of IPv6 minus its 40-byte header and UDP's 8
SSRCS = [0x11111111, 0x22222222, 0x33333333]
TOKENS = [0, 1, 0xCAFE]


def addr(source: int, kind: PortKind) -> tuple[str, int]:
    host, port = SOURCES[source]
    return (host, port + kind)


class HubReceivePath(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed: int) -> None:
        self.hub = Hub(make_config(f"[rooms]\nJam = {PORT}\n").spec(), rng=seeded(seed, "hub"))
        self.table = self.hub.endpoints[PORT].table
        self.now = 1000.0
        self.bytes_in: dict[tuple[str, int], int] = {}
        self.bytes_out: dict[tuple[str, int], int] = {}
        self.last_stamp: dict[tuple[tuple[str, int], int], int] = {}  # (addr, count) → stamp
        # Each session's first addresses. Strong keys: the mypyc build's Session takes no
        # weak reference (tools/mypyc_build.py), and one example makes few sessions.
        self.bindings: dict[Session, tuple[object, object]] = {}
        self.current: tuple[str, int] | None = None
        self.violations: list[str] = []
        self.hub.midi_listeners.append(self._midi)

    def _midi(self, endpoint: Endpoint, event: object) -> None:
        assert isinstance(event, MidiReceived)
        session = endpoint.table.find(event.who.public_id)
        if session is None or self.current != session.data_addr:
            self.violations.append(f"MIDI from {self.current} for {session!r}")

    def send(self, source: int, kind: PortKind, data: bytes) -> None:
        where = addr(source, kind)
        self.bytes_in[where] = self.bytes_in.get(where, 0) + len(data)
        self.current = where
        self.hub.receive(PORT, kind, data, where, self.now)
        self.current = None
        self.drain()

    def drain(self) -> None:
        for out in self.hub.drain():
            assert len(out.data) <= MAX_UDP_PAYLOAD, len(out.data)
            self.bytes_out[out.addr] = self.bytes_out.get(out.addr, 0) + len(out.data)
            if out.data[2:4] == b"CK":
                clock = p.decode_session_packet(out.data)
                assert isinstance(clock, p.Clock)
                stamp = clock.timestamps[0] if clock.count == 0 else clock.timestamps[1]
                self.last_stamp[(out.addr, clock.count)] = stamp

    @rule(
        source=st.integers(0, 3),
        kind=st.sampled_from(PortKind),
        ssrc=st.sampled_from(SSRCS),
        token=st.sampled_from(TOKENS),
        name=st.one_of(st.none(), st.text(max_size=80)),
    )
    def invite(self, source: int, kind: PortKind, ssrc: int, token: int, name: str | None) -> None:
        self.send(source, kind, p.encode_invitation(p.Invitation(p.INVITATION, token, ssrc, name)))

    @rule(
        source=st.integers(0, 3),
        kind=st.sampled_from(PortKind),
        ssrc=st.sampled_from(SSRCS),
        token=st.sampled_from(TOKENS),
        command=st.sampled_from([p.BYE, p.ACCEPT, p.REJECT]),
    )
    def other_session_packet(
        self, source: int, kind: PortKind, ssrc: int, token: int, command: bytes
    ) -> None:
        self.send(source, kind, p.encode_invitation(p.Invitation(command, token, ssrc, "x")))

    @rule(
        source=st.integers(0, 3),
        ssrc=st.sampled_from(SSRCS),
        count=st.integers(0, 2),
        honest=st.booleans(),
        stamp=st.integers(0, 2**64 - 1),
    )
    def clock(self, source: int, ssrc: int, count: int, honest: bool, stamp: int) -> None:
        """CK0 with any stamp; CK1/CK2 echoing what the hub sent there (honest) or not."""
        where = addr(source, PortKind.DATA)
        if honest and count == 1:
            stamp = self.last_stamp.get((where, 0), stamp)
        if honest and count == 2:
            stamp = self.last_stamp.get((where, 1), stamp)
        stamps = (stamp, 0, 0) if count < 2 else (0, stamp, 0)
        self.send(source, PortKind.DATA, p.encode_clock(ssrc, count, stamps))

    @rule(
        source=st.integers(0, 3),
        kind=st.sampled_from(PortKind),
        ssrc=st.sampled_from(SSRCS),
        sequence=st.integers(0, 0xFFFF),
    )
    def feedback(self, source: int, kind: PortKind, ssrc: int, sequence: int) -> None:
        self.send(source, kind, p.encode_feedback(ssrc, sequence))

    @rule(
        source=st.integers(0, 3),
        ssrc=st.sampled_from(SSRCS),
        sequence=st.integers(0, 0xFFFF),
        notes=st.lists(st.integers(0, 127), min_size=1, max_size=300),
        sysex=st.booleans(),
    )
    def midi(self, source: int, ssrc: int, sequence: int, notes: list[int], sysex: bool) -> None:
        messages = [
            note_on(n % 16, n, 100) if i % 2 else note_off(n % 16, n) for i, n in enumerate(notes)
        ]
        messages.append(control_change(0, 64, 127))
        if sysex:
            messages.append(bytes([0xF0, *notes, 0xF7]))
        commands = [(0, m) for m in messages]
        for body in encode_lists(commands, 1000):
            header = p.encode_rtp_header(sequence, 0, ssrc)
            self.send(source, PortKind.DATA, header + encode_section(body))
            sequence = (sequence + 1) & 0xFFFF

    @rule(source=st.integers(0, 3), kind=st.sampled_from(PortKind), data=st.binary(max_size=64))
    def garbage(self, source: int, kind: PortKind, data: bytes) -> None:
        self.send(source, kind, data)

    @rule(seconds=st.sampled_from([0.01, 0.3, 1.6, 6.0, 31.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.hub.tick(self.now)
        self.drain()

    @invariant()
    def sessions_stay_bound_and_bounded(self) -> None:
        if not hasattr(self, "hub"):
            return
        assert self.violations == []
        sessions = self.table.sessions
        limits = self.table.limits
        assert self.table.pending <= limits.max_pending
        assert len(self.table.established) <= self.table.max_sessions
        for session in sessions:
            known = self.bindings.get(session)
            if known is not None:
                control, data = known
                assert session.control_addr == control, "a session moved"
                assert data is None or session.data_addr == data, "a stream was redirected"
            self.bindings[session] = (session.control_addr, session.data_addr)
        assert set(self.table.counters.drops) <= set(Drop)
        # Per-source limits hold, and what any sender can make the hub keep is bounded:
        # sessions, remembered reply budgets, a SysEx buffer per session.
        per_source: dict[str, int] = {}
        for session in sessions:
            key = source_key(session.control_addr[0])
            per_source[key] = per_source.get(key, 0) + 1
        assert max(per_source.values(), default=0) <= limits.sessions_per_source
        assert len(sessions) <= self.table.max_sessions + limits.max_pending
        assert len(self.table._replies) <= MAX_TRACKED_SOURCES
        assert all(s.intake.buffered <= limits.max_sysex for s in sessions)

    @invariant()
    def no_reflection_to_unproven_addresses(self) -> None:
        if not hasattr(self, "hub"):
            return
        proven = {s.data_addr for s in self.table.established} | {
            s.control_addr for s in self.table.established
        }
        for where, sent in self.bytes_out.items():
            if where not in proven:
                assert sent <= self.bytes_in.get(where, 0), (where, sent)


# `make test`: 60 repeatable examples. `make fuzz`: MIDIHUB_FUZZ_EXAMPLES of them, new
# each run (HYPOTHESIS_PROFILE=explore; a failure prints the blob that reproduces it).
HubReceivePath.TestCase.settings = settings(
    max_examples=int(os.environ.get("MIDIHUB_FUZZ_EXAMPLES", "60")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_hub_receive_path = HubReceivePath.TestCase
