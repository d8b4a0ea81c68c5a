"""Issue 13, item by item: the failures found reviewing the recovery journal against
RFC 6295 / RFC 4696 / RFC 3550, each reproduced in memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from midihub.hub import Hub
from midihub.midi.held import NoteState
from midihub.midi.notes import NoteRange
from midihub.midi.state import ChannelState
from midihub.rtp import Drop, LatencyMeasured, PacketsLost, PortKind, encode_sections
from midihub.rtp import packets as p
from midihub.rtp.commands import decode_payload
from midihub.rtp.recovery import (
    MAX_DATAGRAM,
    MAX_LIST_LENGTH,
    Journal,
    StreamJournal,
    decode_journal,
    repair,
)
from midihub.rtp.sequence import MAX_DROPOUT, SequenceTracker
from midihub.rtp.session import GUARD_FIRST, RS_INTERVAL
from tests.memnet import MemNet, Wire
from tests.seeds import seeded
from tests.support import make_config
from tests.test_session import Pair, midi

IN, OUT = 5004, 5006


def journal_of(data: bytes) -> Journal | None:
    _, start, end = p.decode_rtp_header(data)
    _, at = decode_payload(data, start, end)
    return None if at is None else decode_journal(data, at, end)


def hub_net(text: str = f"[groups]\nG = [{IN}, {OUT}]", **config: object) -> MemNet:
    net = MemNet(Hub(make_config(text, **config).spec(), rng=seeded(1, "hub")))
    return net


def rtp_to(net: MemNet, name: str) -> list[Wire]:
    host = net.peers[name].addr[0]
    return [w for w in net.hub_sent if w.is_rtp and w.dst[0] == host]


# -- 1. a forward split over packets is journalled packet by packet -------------------


def test_encode_sections_says_which_commands_each_section_carries() -> None:
    big = b"\xf0" + bytes(2000) + b"\xf7"
    commands = [(0, b"\x80\x3c\x00"), (0, big), (0, b"\x90\x3e\x40")]
    sections = encode_sections(commands, MAX_LIST_LENGTH)
    assert len(sections) == 4  # the NoteOff, then the SysEx in three segments
    assert [list(s.commands) for s in sections] == [[commands[0]], [], [], commands[1:]]


def test_every_packet_of_a_split_forward_journals_the_packets_before_it() -> None:
    net = hub_net()
    player = net.add_peer("player", IN)
    net.add_peer("listener", OUT)
    net.run_for(3.5)
    net.send(player, [b"\x90\x3c\x40"])
    net.run_for(0.01)
    before = len(rtp_to(net, "listener"))
    net.send(player, [b"\x80\x3c\x00", b"\xf0" + bytes(2000) + b"\xf7"])
    net.run_for(0.01)
    split = rtp_to(net, "listener")[before:]
    assert len(split) >= 3
    second = journal_of(split[1].data)
    assert second is not None and 0x3C in second.channels[0].notes_off


# -- 2. one set of state rules ----------------------------------------------------------

script_messages = st.lists(
    st.one_of(
        st.builds(
            lambda c, n, v: bytes((0x90 | c, n, v)),
            st.integers(0, 2),
            st.integers(40, 50),
            st.integers(0, 127),
        ),
        st.builds(lambda c, n: bytes((0x80 | c, n, 0)), st.integers(0, 2), st.integers(40, 50)),
        st.builds(
            lambda c, n, v: bytes((0xB0 | c, n, v)),
            st.integers(0, 2),
            st.sampled_from([0, 1, 7, 11, 32, 64, 66, 67, 120, 121, 122, 123, 127]),
            st.integers(0, 127),
        ),
        st.builds(
            lambda c, v: bytes((0xE0 | c, v & 0x7F, v >> 7)),
            st.integers(0, 2),
            st.integers(0, 16383),
        ),
        st.builds(lambda c, v: bytes((0xC0 | c, v)), st.integers(0, 2), st.integers(0, 127)),
        st.just(b"\xff"),
    ),
    max_size=60,
)


@given(script_messages, st.integers(0, 60))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_tracker_and_journal_sender_follow_the_same_rules(script: list[bytes], cut: int) -> None:
    """A receiver that saw the first ``cut`` messages and lost the rest, repaired from
    the journal, holds what the tracker holds: notes, pedals, bend, and every
    controller and program the tracker knows."""
    truth, receiver, sender = NoteState(), NoteState(), StreamJournal()
    for seq, message in enumerate(script):
        sender.record([(0, message)])
        truth.update([(0, message)])
        if seq < cut:
            receiver.update([(0, message)])
    data = sender.journal()
    if data is not None:
        receiver.update(repair(decode_journal(data, 0, len(data)), receiver))
    for ch, want in truth.channels.items():
        have = receiver.channels.get(ch) or ChannelState()
        assert set(have.notes) == set(want.notes)
        assert (have.sustain, have.sostenuto, have.bend) == (
            want.sustain,
            want.sostenuto,
            want.bend,
        )
        assert want.program is None or have.program == want.program
        for number, value in want.controllers.items():
            if number not in (64, 66):
                assert have.controllers.get(number) == value, number
    for ch, have in receiver.channels.items():
        if ch not in truth.channels:
            assert not have.notes and not have.sustain and not have.sostenuto


def _after(*messages: bytes) -> Journal:
    sender = StreamJournal()
    for message in messages:
        sender.record([(0, message)])
    data = sender.journal()
    assert data is not None
    return decode_journal(data, 0, len(data))


def test_reset_all_controllers_lifts_the_pedal_in_the_journal() -> None:
    journal = _after(b"\xb0\x40\x7f", b"\xe0\x00\x50", b"\xb0\x79\x00")
    (cj,) = journal.channels
    assert (64, 0) in cj.controllers and cj.wheel == 8192


def test_system_reset_lifts_pedals_and_ends_notes_in_the_journal() -> None:
    journal = _after(b"\x90\x3c\x40", b"\xb0\x40\x7f", b"\xff")
    (cj,) = journal.channels
    assert (64, 0) in cj.controllers and cj.notes_on == [] and cj.notes_off == {0x3C}


def test_local_control_ends_no_note() -> None:
    journal = _after(b"\x90\x3c\x40", b"\xb0\x7a\x00")
    assert journal.channels[0].notes_on == [(0x3C, 0x40)]
    state = NoteState()
    state.update([(0, b"\x90\x3c\x40"), (0, b"\xb0\x7a\x00")])
    assert state.holds(0, 0x3C)


def test_y_bit_is_kept_on_decode_and_a_stale_note_is_not_replayed() -> None:
    data = bytes((0x20, 0, 1, 0, 9, 0x08, 2, 0xF1, 60, 0x80 | 90, 62, 90))
    journal = decode_journal(data, 0, len(data))
    cj = journal.channels[0]
    assert cj.notes_on == [(60, 90)] and cj.quiet == [(62, 90)]
    assert repair(journal, NoteState()) == [(0, bytes((0x90, 60, 90)))]


def test_stale_held_notes_are_written_with_y_zero() -> None:
    sender = StreamJournal()
    sender.record([(0, b"\x90\x3c\x40")], now=10.0)
    fresh = sender.journal(now=10.5)
    stale = sender.journal(now=11.5)
    assert fresh is not None and stale is not None
    assert decode_journal(fresh, 0, len(fresh)).channels[0].notes_on == [(0x3C, 0x40)]
    assert decode_journal(stale, 0, len(stale)).channels[0].quiet == [(0x3C, 0x40)]


def test_chapter_n_without_offbits_says_low_15_high_1() -> None:
    sender = StreamJournal()
    sender.record([(0, b"\x90\x3c\x40")])
    data = sender.journal()
    assert data is not None and data[3 + 3 : 3 + 5] == bytes((1, 0xF1))
    legacy = bytes((0x20, 0, 1, 0, 7, 0x08, 1, 0x10, 60, 0x81))  # LOW=1 HIGH=0: still read
    assert decode_journal(legacy, 0, len(legacy)).channels[0].notes_on == [(60, 1)]


# -- 3. no datagram over 1232 bytes of UDP payload ------------------------------------------


def test_a_big_forward_with_a_big_journal_stays_within_the_datagram_budget() -> None:
    net = hub_net()
    player = net.add_peer("player", IN)
    net.add_peer("listener", OUT)
    net.run_for(3.5)
    held = [bytes((0x90 | ch, n, 100)) for ch in range(16) for n in range(30, 60)]
    held += [bytes((0xB0 | ch, cc, 5)) for ch in range(16) for cc in range(1, 40)]
    held += [bytes((0xB0 | ch, 64, 127)) for ch in range(16)]
    net.send(player, held)
    net.run_for(0.01)
    before = len(rtp_to(net, "listener"))
    net.hub.panic(OUT, NoteRange.ALL, net.now)
    net.flush_hub()
    net.run_for(2)
    sizes = [len(w.data) for w in net.hub_sent]
    assert max(sizes) <= MAX_DATAGRAM
    panic = rtp_to(net, "listener")[before:]
    journals = [j for w in panic if (j := journal_of(w.data)) is not None]
    assert journals  # trimmed to fit, never left out
    first = journals[0]
    # By priority: a trimmed journal still carries held notes and pedals.
    assert sum(len(c.notes_on) for c in first.channels) > 0
    assert all(any(n == 64 for n, _ in c.controllers) for c in first.channels)
    assert [c.channel for c in first.channels] == list(range(len(first.channels)))


def test_trimmed_journal_keeps_notes_and_pedals_first() -> None:
    sender = StreamJournal()
    commands = [(0, bytes((0xB0 | ch, cc, 9))) for ch in range(16) for cc in range(0, 100)]
    commands += [(0, bytes((0x90 | ch, 60, 100))) for ch in range(16)]
    commands += [(0, bytes((0xB0 | ch, 64, 127))) for ch in range(16)]
    sender.record(commands)
    data = sender.journal(budget=400)
    assert data is not None and len(data) <= 400
    journal = decode_journal(data, 0, len(data))
    assert len(journal.channels) == 16
    for cj in journal.channels:
        assert cj.notes_on == [(60, 100)] and cj.controllers == [(64, 127), (66, 9)]
        assert cj.program is None


# -- 5. RS, sequence resync, random starts, CK sanity -----------------------------------------


def test_rs_is_sent_about_once_a_second_while_the_peer_sends() -> None:
    pair = Pair()
    pair.connect()
    pair.advance(3)
    (responder,) = pair.b.established
    rs_before = sum(1 for d in pair.sent["b"] if d[2:4] == b"RS")
    for _ in range(12):
        pair.a.send([pair.session], midi(b"\x90\x3c\x40"), pair.now)
        pair.pump()
        pair.advance(0.25)
    sent = sum(1 for d in pair.sent["b"] if d[2:4] == b"RS") - rs_before
    assert 2 <= sent <= 4  # 3 s of sending, RS every RS_INTERVAL
    assert RS_INTERVAL == 1.0
    last_rs = [d for d in pair.sent["b"] if d[2:4] == b"RS"][-1]
    assert p.decode_session_packet(last_rs).sequence == responder.sequence.last  # type: ignore[union-attr]


def test_a_big_sequence_jump_resyncs_instead_of_counting_losses() -> None:
    tracker = SequenceTracker()
    assert tracker.accept(100) == 0
    assert tracker.accept(101) == 0
    assert tracker.accept(30_101) is None  # on probation
    assert tracker.accept(30_102) == 1  # resynchronised: only the probation packet lost
    assert tracker.accept(30_105) == 2
    assert tracker.accept(30_104) is None  # late
    assert tracker.accept(30_105 + MAX_DROPOUT) == MAX_DROPOUT - 1


def test_session_counts_a_jump_as_at_most_one_lost_packet() -> None:
    pair = Pair()
    pair.connect()
    pair.advance(3)
    (responder,) = pair.b.established
    session = pair.session
    pair.a.send([session], midi(b"\x90\x3c\x40"), pair.now)
    pair.pump()
    session._seq_out = (session._seq_out + 30_000) & 0xFFFF
    for _ in range(3):
        pair.a.send([session], midi(b"\x80\x3c\x00"), pair.now)
        pair.pump()
    assert responder.packets_lost <= 1
    assert sum(e.count for e in pair.of("b", PacketsLost)) <= 1  # type: ignore[attr-defined]


def test_initial_sequence_and_timestamp_are_random() -> None:
    """Drawn from the host's RNG (SystemRandom in the hub): each seed, another start."""
    seqs, stamps = set(), set()
    for seed in range(8):
        pair = Pair(seed=seed * 10)
        pair.connect()
        seqs.add(pair.session._seq_out)
        stamps.add(pair.session.timestamp(pair.now))
    assert len(seqs) > 4 and len(stamps) > 4 and 0 not in stamps


def test_a_ck2_with_a_bogus_timestamp_is_not_an_rtt() -> None:
    pair = Pair()
    pair.connect()
    pair.advance(5)
    (responder,) = pair.b.established
    before = len(pair.of("b", LatencyMeasured))
    rtt = responder.rtt
    addr = responder.data_addr
    assert addr is not None
    ssrc = responder.peer_ssrc
    for bogus in (0, responder.timestamp(pair.now) + 10**9):
        packet = p.encode_clock(ssrc, 2, (1, bogus, 2))
        pair.events["b"] += pair.b.receive(packet, PortKind.DATA, addr, pair.now)
    assert len(pair.of("b", LatencyMeasured)) == before and responder.rtt == rtt
    assert pair.b.counters.drops.get(Drop.CLOCK_UNMATCHED, 0) >= 2


def test_guard_packets_follow_a_burst_and_stop_at_rs() -> None:
    pair = Pair()
    pair.connect()
    pair.advance(3)
    sent_before = len(pair.sent["a"])
    pair.a.send(
        [pair.session],
        [s for s in encode_sections([(0, b"\x90\x3c\x40")], MAX_LIST_LENGTH)],
        pair.now,
    )
    pair.pump()
    pair.advance(GUARD_FIRST * 3.5)
    guards = [d for d in pair.sent["a"][sent_before + 1 :] if d[:1] == b"\x80" and d[12] == 0x40]
    assert len(guards) == 2  # at 50 and 150 ms
    pair.advance(3)
    after_rs = len(
        [d for d in pair.sent["a"] if d[:1] == b"\x80" and len(d) > 12 and d[12] == 0x40]
    )
    pair.advance(5)
    assert (
        len([d for d in pair.sent["a"] if d[:1] == b"\x80" and len(d) > 12 and d[12] == 0x40])
        == after_rs
    )


# -- 7. journals off per port, link and participant ------------------------------------------


def test_journal_off_by_name_pattern_and_per_room_still_delivers_every_command() -> None:
    text = f"""journal_off = ["rtpmidid*"]
[rooms]
Jam = {IN}
Quiet = {{ port = {OUT}, journal = false }}
"""
    net = hub_net(text)
    player = net.add_peer("player", IN)
    daemon = net.add_peer("rtpmidid on box", IN)
    normal = net.add_peer("ipad", IN)
    net.add_peer("q1", OUT)
    q2 = net.add_peer("q2", OUT)
    net.run_for(3.5)
    for i in range(20):
        net.send(player, [bytes((0x90, 40 + i, 100))])
        net.run_for(0.01)
        net.send(q2, [bytes((0x91, 40 + i, 100))])
        net.run_for(0.01)

    def journalled(name: str) -> list[bool]:
        return [journal_of(w.data) is not None for w in rtp_to(net, name)]

    assert any(journalled("ipad")) and not any(journalled("rtpmidid on box"))
    assert journalled("q1") and not any(journalled("q1"))
    assert daemon.synth.channels[0].notes.keys() == normal.synth.channels[0].notes.keys()
    assert len(daemon.synth.channels[0].notes) == 20
    assert len(net.peers["q1"].synth.channels[1].notes) == 20


def test_journal_off_per_link_is_parsed() -> None:
    text = f'[rooms]\nJam = {IN}\n[[links]]\nremote = "203.0.113.5:5004"\nport = {IN}\n'
    config = make_config(text + "journal = false\n")
    assert config.links[0].journal is False and config.journal_off == []
