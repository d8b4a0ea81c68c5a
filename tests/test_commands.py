"""The RTP MIDI command section: delta times, running status, SysEx segments."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midihub.rtp import ProtocolError
from midihub.rtp.commands import (
    SysexAssembler,
    decode_command_section,
    encode_delta,
    encode_lists,
    encode_section,
)
from tests.strategies import commands, messages, sysex


def decode(section: bytes) -> list[tuple[int, bytes]]:
    result, journal = decode_command_section(section, 0, len(section))
    assert not journal
    return result


def reassemble(sections: list[bytes]) -> list[tuple[int, bytes]]:
    assembler = SysexAssembler()
    out: list[tuple[int, bytes]] = []
    for section in sections:
        for delta, message in decode(section):
            if message[0] in (0xF0, 0xF7):
                whole = assembler.push(message)
                if whole is not None:
                    out.append((delta, whole))
            else:
                out.append((delta, message))
    return out


@given(commands)
def test_round_trip_in_one_list(items: list[tuple[int, bytes]]) -> None:
    sections = [encode_section(body) for body in encode_lists(items, 4095)]
    assert len(sections) == 1
    assert decode(sections[0]) == items


@given(commands, st.integers(16, 300))
def test_round_trip_split_across_lists(items: list[tuple[int, bytes]], size: int) -> None:
    bodies = encode_lists(items, size)
    assert all(len(body) <= size for body in bodies)
    assert [m for _, m in reassemble([encode_section(b) for b in bodies])] == [m for _, m in items]


@settings(max_examples=50)
@given(sysex, st.integers(16, 1200))
def test_long_sysex_is_segmented_and_reassembled(message: bytes, size: int) -> None:
    bodies = encode_lists([(5, message)], size)
    if len(message) + 1 > size:
        assert len(bodies) > 1
        assert bodies[0][1] == 0xF0 and bodies[0][-1] == 0xF0  # first segment F0…F0
        assert all(b[1] == 0xF7 and b[-1] == 0xF0 for b in bodies[1:-1])  # middle F7…F0
        assert bodies[-1][1] == 0xF7 and bodies[-1][-1] == 0xF7  # last F7…F7
    # A SysEx is delivered when its last segment arrives, with that segment's delta.
    ((_, whole),) = reassemble([encode_section(b) for b in bodies])
    assert whole == message


def test_running_status_is_used_on_encode_and_understood_on_decode() -> None:
    items = [(0, b"\x90\x3c\x64"), (0, b"\x90\x3e\x64"), (3, b"\x80\x3c\x00")]
    (body,) = encode_lists(items, 100)
    assert body == bytes.fromhex("00 903c64 00 3e64 03 803c00")
    assert decode(encode_section(body)) == items


def test_realtime_between_running_status_commands() -> None:
    section = encode_section(bytes.fromhex("00 903c64 00 f8 00 3e64"))
    assert decode(section) == [(0, b"\x90\x3c\x64"), (0, b"\xf8"), (0, b"\x90\x3e\x64")]


def test_system_common_cancels_running_status() -> None:
    with pytest.raises(ProtocolError, match="running status"):
        decode(encode_section(bytes.fromhex("00 903c64 00 f305 00 3e64")))


def test_z_flag_clear_means_first_command_has_no_delta() -> None:
    section = bytes((0x05,)) + bytes.fromhex("903c64 0a f8")
    assert decode(section) == [(0, b"\x90\x3c\x64"), (10, b"\xf8")]


def test_twelve_bit_length() -> None:
    items = [(0, bytes((0x90, n, 100))) for n in range(100)]
    section = encode_section(encode_lists(items, 4095)[0])
    assert section[0] & 0x80  # B flag
    assert decode(section) == items


def test_realtime_inside_sysex_is_delivered_before_it() -> None:
    section = encode_section(bytes.fromhex("00 f0 01 02 f8 03 f7"))
    assert decode(section) == [(0, b"\xf8"), (0, bytes.fromhex("f0010203f7"))]


def test_delta_encoding() -> None:
    assert encode_delta(0) == b"\x00"
    assert encode_delta(0x80) == b"\x81\x00"
    assert encode_delta(0x0FFFFFFF) == b"\xff\xff\xff\x7f"
    with pytest.raises(ValueError):
        encode_delta(0x10000000)


def test_sysex_assembler_drops_a_sysex_with_a_lost_segment() -> None:
    assembler = SysexAssembler()
    assert assembler.push(b"\xf0\x01\xf0") is None
    assembler.packet_lost()
    assert assembler.push(b"\xf7\x02\xf7") is None
    assert assembler.incomplete == 2
    assert assembler.push(b"\xf0\x01\xf0") is None
    assert assembler.push(b"\xf7\x02\xf4") is None  # cancelled by the sender
    assert assembler.push(b"\xf0\x05\xf7") == b"\xf0\x05\xf7"


@pytest.mark.parametrize(
    "section",
    [
        b"",
        b"\x05\x90\x3c",  # length beyond the packet
        b"\x80",  # B set, second length byte missing
        b"\x22\x00\x3c",  # running status with no status before it
        b"\x22\x00\x90",  # truncated note on
        b"\x25\x80\x80\x80\x80\x00",  # delta of five bytes
        b"\x24\x00\x90\x3c\x90",  # status inside a command's data
        b"\x24\x00\xf0\x01\x02",  # SysEx with no end
        b"\x24\x00\xf0\x91\xf7",  # channel status inside SysEx
        b"\x62\x00\xf8",  # J set but no journal follows
        b"\x21\x00",  # delta with no command
    ],
)
def test_malformed_sections_raise_protocol_error(section: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_command_section(section, 0, len(section))


@given(st.binary(max_size=80))
def test_arbitrary_sections_raise_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_command_section(data, 0, len(data))


@given(st.lists(messages, min_size=1, max_size=30))
def test_every_decoded_message_is_complete(items: list[bytes]) -> None:
    from midihub.midi import validate

    for _, message in decode(encode_section(encode_lists([(0, m) for m in items], 4095)[0])):
        validate(message)
