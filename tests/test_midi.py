"""MIDI values, note names and the byte-stream parser, checked against mido."""

from __future__ import annotations

import mido
import pytest
from hypothesis import given
from hypothesis import strategies as st

from midihub.midi import NoteRange, StreamParser, describe, note_name, note_number, validate
from midihub.midi import messages as m
from tests.strategies import channel_messages, messages


def test_note_names() -> None:
    assert note_name(60) == "C4"
    assert note_name(0) == "C-1" and note_name(127) == "G9"
    assert note_number("C4") == 60 and note_number("F#3") == 54 and note_number("Db4") == 61
    with pytest.raises(ValueError, match="not a note name"):
        note_number("H2")
    with pytest.raises(ValueError, match="outside"):
        note_number("A9")


@given(st.integers(0, 127))
def test_note_name_round_trip(note: int) -> None:
    assert note_number(note_name(note)) == note


def test_ranges_cover_the_keyboard_without_overlap() -> None:
    parts = [NoteRange.LOW, NoteRange.MID, NoteRange.HIGH]
    assert sorted(n for r in parts for n in r.notes()) == list(NoteRange.ALL.notes())
    assert (NoteRange.LOW.low, NoteRange.LOW.high) == (0, 42)
    assert NoteRange.parse("mid") is NoteRange.MID
    with pytest.raises(ValueError, match="Low, Mid, High, All"):
        NoteRange.parse("treble")


def test_constructors_match_mido() -> None:
    assert m.note_on(2, 60, 100) == bytes(
        mido.Message("note_on", channel=2, note=60, velocity=100).bytes()
    )
    assert m.note_off(0, 61) == bytes(mido.Message("note_off", note=61, velocity=0).bytes())
    assert m.control_change(15, 64, 127) == bytes(
        mido.Message("control_change", channel=15, control=64, value=127).bytes()
    )
    assert m.program_change(3, 5) == bytes(
        mido.Message("program_change", channel=3, program=5).bytes()
    )
    for value in (0, 8192, 16383):
        assert m.pitch_bend(1, value) == bytes(
            mido.Message("pitchwheel", channel=1, pitch=value - 8192).bytes()
        )
    assert m.sysex(b"\x7e\x01") == bytes(mido.Message("sysex", data=[0x7E, 1]).bytes())
    with pytest.raises(ValueError):
        m.note_on(16, 60, 1)


def test_describe() -> None:
    assert describe(m.note_on(0, 60, 100)) == "note_on ch1 C4 100"
    assert describe(m.pitch_bend(1, 8192 + 100)) == "pitch_bend ch2 +100"
    assert describe(b"\xf8") == "clock"
    assert describe(m.sysex(b"\x01\x02")) == "sysex (4 bytes)"


@given(messages)
def test_generated_messages_are_valid(message: bytes) -> None:
    validate(message)


@pytest.mark.parametrize(
    "bad", [b"", b"\x3c", b"\x90\x3c", b"\x90\x3c\x80", b"\xf0\x01", b"\xf0\x81\xf7"]
)
def test_validate_rejects(bad: bytes) -> None:
    with pytest.raises(ValueError):
        validate(bad)


def running_status_stream(items: list[bytes]) -> bytes:
    out = bytearray()
    running = 0
    for message in items:
        if message[0] == running and message[0] < 0xF0:
            out += message[1:]
        else:
            out += message
        running = message[0] if message[0] < 0xF0 else (running if message[0] >= 0xF8 else 0)
    return bytes(out)


@given(st.lists(messages, max_size=40), st.integers(1, 7))
def test_stream_parser_agrees_with_mido(items: list[bytes], chunk: int) -> None:
    stream = running_status_stream(items)
    parser = StreamParser()
    ours = []
    for i in range(0, len(stream), chunk):
        ours += parser.feed(stream[i : i + chunk])
    assert ours == items
    oracle = mido.Parser()  # mido knows no running status: give it every status byte
    oracle.feed(b"".join(items))
    assert ours == [bytes(msg.bytes()) for msg in oracle]


@given(st.lists(channel_messages, min_size=2, max_size=10))
def test_realtime_inside_a_message_does_not_break_it(items: list[bytes]) -> None:
    stream = running_status_stream(items)
    interleaved = bytes(b for byte in stream for b in (byte, 0xF8))
    parsed = StreamParser().feed(interleaved)
    assert [x for x in parsed if x != b"\xf8"] == items
    assert parsed.count(b"\xf8") == len(stream)


def test_stray_data_bytes_are_dropped_and_counted() -> None:
    parser = StreamParser()
    assert parser.feed(b"\x3c\x40\x90\x3c") == []
    assert parser.dropped_bytes == 2
    assert parser.feed(b"\x40") == [b"\x90\x3c\x40"]
