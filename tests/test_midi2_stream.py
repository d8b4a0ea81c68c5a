"""UMP Stream (type F) answers: Endpoint Discovery, Function Block Discovery, Stream
Configuration. Expected packets written by hand from the UMP 1.1 layout: word 0 is
type F, form (2 bits), status (10 bits), then 16 bits of the message."""

from __future__ import annotations

import pytest

from midihub.midi2.translate import UmpBridge
from midihub.midi2.ump import UmpMessage

INFO = (0xF0010101, 0x81000300, 0, 0)  # UMP 1.1; static, 1 block; MIDI 2.0 + 1.0; no JR
NAME = (0xF0034875, 0x62204A61, 0x6D000000, 0)  # "Hub Jam": "Hu" "b Ja" "m"
PRODUCT_ID = (0xF0046875, 0x622D3100, 0, 0)  # "hub-1"
CONFIG_1 = (0xF0060100, 0, 0, 0)
CONFIG_2 = (0xF0060200, 0, 0, 0)
BLOCK_INFO = (0xF0118033, 0x00010000, 0, 0)  # active, block 0, UI both, not MIDI 1.0, both
BLOCK_NAME = (0xF0120048, 0x7562204A, 0x616D0000, 0)  # block 0, "H", "ub J", "am"


def ask(b: UmpBridge, message: UmpMessage) -> list[UmpMessage]:
    room, replies = b.from_client(message)
    assert room == []
    assert b.dropped == {}
    return replies


def test_endpoint_discovery_answers_everything_asked_for() -> None:
    b = UmpBridge("Hub Jam", "hub-1")
    assert ask(b, (0xF0000101, 0x0000001F, 0, 0)) == [INFO, NAME, PRODUCT_ID, CONFIG_1]


@pytest.mark.parametrize(
    ("filter_bits", "expected"),
    [
        (0x01, [INFO]),
        (0x02, []),  # Device Identity: the hub has no SysEx manufacturer id to give
        (0x04, [NAME]),
        (0x08, [PRODUCT_ID]),
        (0x10, [CONFIG_1]),
        (0x00, []),
    ],
)
def test_endpoint_discovery_filter(filter_bits: int, expected: list[UmpMessage]) -> None:
    assert ask(UmpBridge("Hub Jam", "hub-1"), (0xF0000101, filter_bits, 0, 0)) == expected


def test_a_long_name_spans_start_continue_end_packets() -> None:
    b = UmpBridge("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh", "x")  # 34 bytes: 14 + 14 + 6
    assert ask(b, (0xF0000101, 0x04, 0, 0)) == [
        (0xF4034142, 0x43444546, 0x4748494A, 0x4B4C4D4E),  # form 1 (start): "AB" "CDEF"…
        (0xF8034F50, 0x51525354, 0x55565758, 0x595A6162),  # form 2 (continue)
        (0xFC036364, 0x65666768, 0x00000000, 0x00000000),  # form 3 (end)
    ]


def test_a_utf8_name_is_cut_at_98_bytes_on_a_character_boundary() -> None:
    b = UmpBridge("Jäm" + "é" * 60, "x")  # 4 + 120 bytes
    packets = ask(b, (0xF0000101, 0x04, 0, 0))
    assert packets[0][:2] == (0xF4034AC3, 0xA46DC3A9)  # "J", C3 A4 = ä, "m", C3 A9 = é
    assert len(packets) == 7
    text = b"".join(b"".join(w.to_bytes(4, "big") for w in p)[2:] for p in packets).rstrip(b"\x00")
    assert len(text) == 98 and text.decode("utf-8") == "Jäm" + "é" * 47


def test_product_instance_id_keeps_printable_ascii_up_to_42() -> None:
    b = UmpBridge("Hub", "ab\x07c" + "z" * 50)
    packets = ask(b, (0xF0000101, 0x08, 0, 0))
    assert packets[0] == (0xF4046162, 0x637A7A7A, 0x7A7A7A7A, 0x7A7A7A7A)
    assert len(packets) == 3


def test_an_empty_name_sends_no_name_packets() -> None:
    assert ask(UmpBridge("", ""), (0xF0000101, 0x0C, 0, 0)) == []


@pytest.mark.parametrize("block", [0x00, 0xFF])
def test_function_block_discovery(block: int) -> None:
    b = UmpBridge("Hub Jam", "hub-1")
    assert ask(b, (0xF0100003 | (block << 8), 0, 0, 0)) == [BLOCK_INFO, BLOCK_NAME]
    assert ask(b, (0xF0100001 | (block << 8), 0, 0, 0)) == [BLOCK_INFO]
    assert ask(b, (0xF0100002 | (block << 8), 0, 0, 0)) == [BLOCK_NAME]


def test_no_answer_for_a_block_the_hub_does_not_have() -> None:
    assert ask(UmpBridge("Hub Jam", "hub-1"), (0xF0100103, 0, 0, 0)) == []


def test_stream_configuration_request_switches_the_protocol() -> None:
    b = UmpBridge("Hub Jam", "hub-1")
    assert b.protocol == 1
    assert b.to_client(b"\x90\x3c\x7f") == [(0x20903C7F,)]
    assert ask(b, (0xF0050200, 0, 0, 0)) == [CONFIG_2]
    assert b.protocol == 2
    assert b.to_client(b"\x90\x3c\x7f") == [(0x40903C00, 0xFFFF0000)]
    assert ask(b, (0xF0000101, 0x10, 0, 0)) == [CONFIG_2]
    # JR timestamps asked for (bits 0-1): not offered, so the notification says none
    assert ask(b, (0xF0050103, 0, 0, 0)) == [CONFIG_1]
    assert b.protocol == 1


def test_an_unknown_protocol_keeps_the_current_one_and_says_so() -> None:
    b = UmpBridge("Hub Jam", "hub-1")
    assert ask(b, (0xF0050300, 0, 0, 0)) == [CONFIG_1]
    assert b.protocol == 1


@pytest.mark.parametrize(
    "message",
    [
        INFO,  # the client's own notifications: nothing to answer
        NAME,
        CONFIG_2,
        (0xF0200000, 0, 0, 0),  # Start of Clip
        (0xF4000101, 0x1F, 0, 0),  # a discovery not in Complete form
        (0xF3FF0000, 0, 0, 0),  # unknown status
    ],
)
def test_stream_messages_needing_no_answer_get_none(message: UmpMessage) -> None:
    b = UmpBridge("Hub Jam", "hub-1")
    assert ask(b, message) == []
    assert b.protocol == 1
