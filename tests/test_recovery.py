"""Recovery journal: reading (shared vector, garbage), what the hub's one writer
(``StreamJournal``) says, its bounds, and repair under loss against a control without
journals."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midihub.midi.held import NoteState
from midihub.rtp import ProtocolError
from midihub.rtp import packets as p
from midihub.rtp.commands import decode_payload
from midihub.rtp.recovery import (
    MAX_JOURNAL,
    MAX_UNACKED,
    ChannelJournal,
    Journal,
    JournalCursor,
    StreamJournal,
    decode_journal,
    repair,
)
from tests.performances import random_packets
from tests.seeds import seeded

VECTOR = bytes.fromhex(
    "80610005000000 20aabbccdd 43803e40 200003 000808 01773ce402".replace(" ", "")
)


def test_shared_vector_decodes_and_the_hub_writes_it_for_the_same_history() -> None:
    header, start, end = p.decode_rtp_header(VECTOR)
    commands, journal_at = decode_payload(VECTOR, start, end)
    assert header.sequence == 5 and commands == [(0, bytes((0x80, 62, 64)))]
    assert journal_at is not None
    journal = decode_journal(VECTOR, journal_at, end)
    assert journal.checkpoint == 3 and not journal.single_loss
    (channel,) = journal.channels
    assert channel.channel == 0 and channel.notes_on == [(60, 100)]
    assert channel.notes_off == {62}
    stream = StreamJournal()
    stream.record([(0, bytes((0x90, 62, 64))), (0, bytes((0x90, 60, 100)))])
    stream.record([(0, bytes((0x80, 62, 64)))])
    written = stream.journal()
    assert written is not None  # the checkpoint field is each receiver's: 3 here
    assert written[:1] + bytes((0, 3)) + written[3:] == VECTOR[journal_at:]


@given(st.binary(max_size=120))
@settings(max_examples=500, deadline=None)
def test_garbage_raises_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_journal(data, 0, len(data))


def test_unknown_chapters_and_system_journal_are_skipped() -> None:
    system = bytes((0b1000_0000 | 0, 5, 0x11, 0x22, 0x33))  # S, length 5 incl. header
    # Channel 2 with chapters M (length 4), N, E (2 logs), T, A (1 log).
    m = bytes((0x00, 4, 0xAA, 0xBB))
    n = bytes((1, 0x77, 60, 0x80 | 90, 0x02))
    e = bytes((1, 1, 2, 3, 4))
    t = bytes((0x40,))
    a = bytes((0, 10, 20))
    body = m + n + e + t + a
    toc = 0x20 | 0x08 | 0x04 | 0x02 | 0x01
    first = bytes((2 << 3, 3 + len(body), toc)) + body
    second = _channel(5, 0x10, bytes((0x00, 0x40)))  # W: centre
    data = bytes((0x40 | 0x20 | 1, 0, 9)) + system + first + second
    journal = decode_journal(data, 0, len(data))
    assert [c.channel for c in journal.channels] == [2, 5]
    assert journal.channels[0].notes_on == [(60, 90)] and journal.channels[0].notes_off == {62}
    assert journal.channels[1].wheel == 8192


def _channel(channel: int, toc: int, body: bytes) -> bytes:
    return bytes((channel << 3, 3 + len(body), toc)) + body


@pytest.mark.parametrize(
    "data",
    [
        bytes((0x20, 0, 1)),  # says one channel journal, none follows
        bytes((0x20, 0, 1, 0, 2, 0)),  # channel journal length shorter than its header
        bytes((0x20, 0, 1, 0, 9, 0x08, 1, 0x77)),  # runs past the end
        bytes((0x20, 0, 1, 0, 5, 0x08, 5, 0x77)),  # chapter N longer than its channel journal
        bytes((0x40, 0, 1, 0, 1)),  # system journal length 1
    ],
)
def test_malformed_journals_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_journal(data, 0, len(data))


def test_sender_stays_bounded_without_feedback_and_lists_what_is_held() -> None:
    rng = seeded(7, "journal sender")
    sender = StreamJournal()
    truth = NoteState()
    for _ in range(10_000):
        channel = rng.randrange(4)
        note = rng.randrange(40, 90)
        message = rng.choice(
            [
                bytes((0x90 | channel, note, rng.randrange(1, 128))),
                bytes((0x80 | channel, note, 0)),
                bytes((0xB0 | channel, 64, rng.choice((0, 127)))),
                bytes((0xB0 | channel, 7, rng.randrange(128))),
            ]
        )
        journal = sender.journal()
        assert journal is None or len(journal) <= MAX_JOURNAL
        sender.record([(0, message)])
        truth.update([(0, message)])
    data = sender.journal()
    assert data is not None
    decoded = decode_journal(data, 0, len(data))
    held = {(c.channel, n) for c in decoded.channels for n, _ in c.notes_on}
    assert held == {(ch, n) for ch, st_ in truth.channels.items() for n in st_.notes}
    pedals = {(c.channel, v >= 64) for c in decoded.channels for n, v in c.controllers if n == 64}
    for channel, state in truth.channels.items():
        if state.sustain:
            assert (channel, True) in pedals


def test_feedback_moves_the_checkpoint_and_forgets_old_noteoffs() -> None:
    stream, cursor = StreamJournal(), JournalCursor("r")
    cursor.attach(stream)
    on = [(0, bytes((0x90, n, 100))) for n in (60, 61, 62)]
    cursor.sent(stream.record(on), 100)
    cursor.sent(stream.record([(0, bytes((0x80, 60, 0)))]), 101)
    cursor.sent(stream.record([(0, bytes((0x80, 61, 0)))]), 102)
    before = stream.journal()
    assert before is not None and cursor.checkpoint == 100  # its first packet, inclusive
    assert decode_journal(before, 0, len(before)).channels[0].notes_off == {60, 61}
    cursor.acknowledge(101, 103)
    after = stream.journal()
    assert after is not None and cursor.checkpoint == 101 and not cursor.acknowledged
    # The checkpoint packet is part of the history it covers: its NoteOff stays.
    assert decode_journal(after, 0, len(after)).channels[0].notes_off == {60, 61}
    cursor.acknowledge(102, 103)
    after = stream.journal()
    assert after is not None and cursor.checkpoint == 102 and cursor.acknowledged
    journal = decode_journal(after, 0, len(after))
    assert journal.channels[0].notes_off == {61} and journal.channels[0].notes_on == [(62, 100)]
    cursor.acknowledge(5000, 103)  # about a packet never sent: ignored
    assert cursor.checkpoint == 102


def test_a_change_made_in_the_checkpoint_packet_stays_in_the_journal() -> None:
    """RFC 6295 §4: the checkpoint history includes the checkpoint packet itself. When
    ``MAX_UNACKED`` packets pass without RS and the checkpoint moves on to packet C, a
    controller or program change made in C must still be journalled."""
    stream = StreamJournal()
    while True:
        number = stream.last + 1
        if number == MAX_UNACKED // 2:
            stream.record([(0, bytes((0xB0, 7, 99))), (0, bytes((0xC0, 5)))])
        else:
            stream.record([])
        if stream.checkpoint == MAX_UNACKED // 2:
            break
    data = stream.journal()
    assert data is not None
    (channel,) = decode_journal(data, 0, len(data)).channels
    assert channel.controllers == [(7, 99)] and channel.program == (5, None, None)
    stream.record([])  # the checkpoint passes it: out
    stream.settle()
    for _ in range(MAX_UNACKED // 2):
        stream.record([])
    assert stream.checkpoint > MAX_UNACKED // 2 and stream.journal() is None


def test_repair_is_exact_and_never_applied_twice() -> None:
    state = NoteState()
    state.update([(0, bytes((0x90, 62, 80))), (0, bytes((0x90, 70, 80)))])
    journal = Journal(
        3,
        [
            ChannelJournal(
                0, notes_on=[(60, 100), (70, 80)], notes_off={62}, controllers=[(64, 127)]
            )
        ],
    )
    fixes = repair(journal, state)
    assert fixes == [
        (0, bytes((0x80, 62, 0))),
        (0, bytes((0x90, 60, 100))),
        (0, bytes((0xB0, 64, 127))),
    ]
    state.update(fixes)
    assert repair(journal, state) == []


def replay(seed: int, use_journal: bool, loss: float = 0.1) -> NoteState:
    """Send through a lossy channel; the receiver repairs from journals when it can."""
    rng = seeded(seed, "loss")
    sender = StreamJournal()
    receiver = NoteState()
    lost = False
    for packet in random_packets(
        seed, channels=3, keys=(30, 100), max_held=6, release=0.4, pedal_every=17, bend_every=23
    ):
        data = sender.journal() if use_journal else None
        sender.record([(0, m) for m in packet])
        if rng.random() < loss:
            lost = True
            continue
        commands = [(0, m) for m in packet]
        if lost and data:
            commands = repair(decode_journal(data, 0, len(data)), receiver) + commands
        lost = False
        receiver.update(commands)
    return receiver


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ten_percent_loss_leaves_nothing_stuck_with_the_journal(seed: int) -> None:
    assert replay(seed, use_journal=True).channels_held() == {}


def test_the_same_loss_without_journal_leaves_stuck_notes() -> None:
    stuck = [replay(seed, use_journal=False).channels_held() for seed in (1, 2, 3)]
    assert all(held for held in stuck)  # the control: the journal is what repairs


def test_127_held_notes_without_noteoffs_round_trip() -> None:
    """127 logs and no bitfield must not read back as RFC 6295's 128-log form."""
    stream = StreamJournal()
    stream.record([(0, bytes((0x90, n, 64))) for n in range(127)])
    data = stream.journal()
    assert data is not None
    (channel,) = decode_journal(data, 0, len(data)).channels
    assert channel.notes_on == [(n, 64) for n in range(127)] and not channel.notes_off


def test_repair_does_not_resend_what_the_receiver_already_has() -> None:
    state = NoteState()
    state.update([(0, bytes((0xB0, 7, 100))), (0, bytes((0xC0, 5)))])
    same = Journal(1, [ChannelJournal(0, program=(5, None, None), controllers=[(7, 100)])])
    assert repair(same, state) == []  # a program change would restart the synth's voice
    changed = Journal(1, [ChannelJournal(0, program=(6, None, None), controllers=[(7, 90)])])
    assert repair(changed, state) == [(0, bytes((0xB0, 7, 90))), (0, bytes((0xC0, 6)))]


def test_a_long_outage_without_feedback_still_releases_ended_notes() -> None:
    """A peer that never sends RS and misses 300 packets (the NoteOff among them)
    repairs from the first packet it gets: the bitfield still says the note ended."""
    sender = StreamJournal()
    receiver = NoteState()
    sender.record([(0, bytes((0x90, 60, 100)))])
    receiver.update([(0, bytes((0x90, 60, 100)))])
    sender.record([(0, bytes((0x80, 60, 0)))])  # lost, with everything after it
    for seq in range(2, 300):
        sender.record([(0, bytes((0xB0, 1, seq & 0x7F)))])
    data = sender.journal()
    assert data is not None
    receiver.update(repair(decode_journal(data, 0, len(data)), receiver))
    assert not receiver.holds(0, 60)


@given(
    st.lists(
        st.tuples(
            st.sampled_from((0x80, 0x90, 0xB0, 0xFF)), st.integers(0, 3), st.integers(0, 127)
        ),
        max_size=300,
    )
)
@settings(max_examples=100, deadline=None)
def test_sender_journal_says_exactly_what_is_held_and_what_ended(
    script: list[tuple[int, int, int]],
) -> None:
    """Against a plain model: chapter N lists every held note, and the bitfield every
    note released (and not pressed again) since the first packet."""
    sender = StreamJournal()
    held: dict[tuple[int, int], int] = {}
    ended: set[tuple[int, int]] = set()
    for kind, channel, value in script:
        if kind == 0xFF:
            message = b"\xff"
            ended |= set(held)
            held.clear()
        elif kind == 0xB0:
            message = bytes((0xB0 | channel, 123, 0))  # all notes off
            ended |= {key for key in held if key[0] == channel}
            held = {k: v for k, v in held.items() if k[0] != channel}
        elif kind == 0x90:
            message = bytes((0x90 | channel, value, 1 + value % 127))
            held[(channel, value)] = 1 + value % 127
            ended.discard((channel, value))
        else:
            message = bytes((0x80 | channel, value, 0))
            if held.pop((channel, value), None) is not None:
                ended.add((channel, value))
        sender.record([(0, message)])
    data = sender.journal()
    if not held and not ended:
        assert data is None
        return
    assert data is not None
    journal = decode_journal(data, 0, len(data))
    assert {(c.channel, n): v for c in journal.channels for n, v in c.notes_on} == held
    assert {(c.channel, n) for c in journal.channels for n in c.notes_off} == ended


def test_a_receiver_without_rs_and_guards_after_every_packet_stays_bounded_and_mapped() -> None:
    """Each guard packet shifts the map from stream numbers to the receiver's sequence
    numbers (a new run); without RS the checkpoint still moves every 64 packets, and
    the runs before it go, while its checkpoint stays the right sequence number."""
    stream, cursor = StreamJournal(), JournalCursor("r")
    cursor.attach(stream)
    sequence = 65_000  # wraps past 0xFFFF on the way
    sent: dict[int, int] = {}
    for _ in range(2_000):
        number = stream.record([(0, b"\x90\x3c\x40")])
        cursor.sent(number, sequence & 0xFFFF)
        sent[number] = sequence & 0xFFFF
        sequence += 2  # a guard packet of its own follows every packet
        assert cursor.checkpoint == sent[max(stream.checkpoint, 0)]
    assert len(cursor._runs) <= MAX_UNACKED + 1
    cursor.acknowledge(sent[stream.last], (sequence - 1) & 0xFFFF)
    assert cursor.acknowledged and stream.checkpoint == stream.last
