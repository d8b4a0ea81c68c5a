"""UMP Stream messages (type F): what the hub answers about itself as a UMP Endpoint.

A Network MIDI 2.0 client asks who it is talking to (Endpoint Discovery), what
blocks the endpoint has (Function Block Discovery) and which protocol to speak
(Stream Configuration Request). The hub is one static endpoint with one function
block on group 0 carrying the room, both directions, either protocol.
"""

from __future__ import annotations

from typing import Final

from midihub.midi2.ump import UmpMessage

ENDPOINT_DISCOVERY: Final = 0x000
ENDPOINT_INFO: Final = 0x001
DEVICE_IDENTITY: Final = 0x002
ENDPOINT_NAME: Final = 0x003
PRODUCT_INSTANCE_ID: Final = 0x004
STREAM_CONFIG_REQUEST: Final = 0x005
STREAM_CONFIG: Final = 0x006
FUNCTION_BLOCK_DISCOVERY: Final = 0x010
FUNCTION_BLOCK_INFO: Final = 0x011
FUNCTION_BLOCK_NAME: Final = 0x012

# Endpoint Discovery filter bits (word 1) and Function Block Discovery filter bits.
WANT_INFO: Final = 0x01
WANT_DEVICE_IDENTITY: Final = 0x02
WANT_NAME: Final = 0x04
WANT_PRODUCT_INSTANCE_ID: Final = 0x08
WANT_STREAM_CONFIG: Final = 0x10
WANT_BLOCK_INFO: Final = 0x01
WANT_BLOCK_NAME: Final = 0x02

PROTOCOL_MIDI1: Final = 0x01
PROTOCOL_MIDI2: Final = 0x02

MAX_NAME: Final = 98  # bytes of UTF-8: seven Endpoint Name packets of 14
MAX_PRODUCT_ID: Final = 42  # ASCII: three packets of 14
MAX_BLOCK_NAME: Final = 91  # seven Function Block Name packets of 13
ALL_BLOCKS: Final = 0xFF

_FORM_COMPLETE, _FORM_START, _FORM_CONTINUE, _FORM_END = 0, 1, 2, 3


def _header(status: int, form: int = _FORM_COMPLETE) -> int:
    return 0xF0000000 | (form << 26) | (status << 16)


def clip_utf8(text: str, limit: int) -> bytes:
    """``text`` as UTF-8 of at most ``limit`` bytes, never cutting a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore").encode("utf-8")


def text_packets(status: int, text: bytes, prefix: bytes = b"") -> list[UmpMessage]:
    """``text`` split over as many 128-bit packets as it needs: each holds ``prefix``
    (the function block number for a block name) and then up to 14 - len(prefix)
    bytes, zero-padded; one packet is Complete, more are Start, Continue…, End."""
    room = 14 - len(prefix)
    chunks = [text[i : i + room] for i in range(0, len(text), room)] or [b""]
    out: list[UmpMessage] = []
    for index, chunk in enumerate(chunks):
        if len(chunks) == 1:
            form = _FORM_COMPLETE
        elif index == 0:
            form = _FORM_START
        elif index == len(chunks) - 1:
            form = _FORM_END
        else:
            form = _FORM_CONTINUE
        body = (prefix + chunk).ljust(14, b"\x00")
        value = (_header(status, form) << 96) | int.from_bytes(body, "big")
        out.append(tuple((value >> shift) & 0xFFFFFFFF for shift in (96, 64, 32, 0)))
    return out


def stream_configuration(protocol: int) -> UmpMessage:
    """Stream Configuration Notification: ``protocol`` (1 or 2), no JR timestamps."""
    return (_header(STREAM_CONFIG) | (protocol << 8), 0, 0, 0)


class StreamEndpoint:
    """The hub's answers, precomputed: they depend only on the endpoint's name and id."""

    __slots__ = ("_block", "_info", "_name", "_product_id")

    def __init__(self, name: str, product_id: str) -> None:
        # UMP 1.1; one static function block; MIDI 1.0 and MIDI 2.0 protocols; no JR.
        self._info: UmpMessage = (_header(ENDPOINT_INFO) | 0x0101, 0x81000300, 0, 0)
        encoded = clip_utf8(name, MAX_NAME)
        self._name = text_packets(ENDPOINT_NAME, encoded) if encoded else []
        ascii_id = bytes(b for b in product_id.encode("ascii", "ignore") if 0x20 <= b <= 0x7E)
        ascii_id = ascii_id[:MAX_PRODUCT_ID]
        self._product_id = text_packets(PRODUCT_INSTANCE_ID, ascii_id) if ascii_id else []
        # Block 0: active, UI hint and direction both ways (3), not a MIDI 1.0 port (0);
        # first group 0, one group, no MIDI-CI, no SysEx8 streams.
        block_info: UmpMessage = (
            _header(FUNCTION_BLOCK_INFO) | 0x8000 | 0x30 | 0x03,
            0x00010000,
            0,
            0,
        )
        block_name = clip_utf8(name, MAX_BLOCK_NAME)
        self._block: tuple[UmpMessage, list[UmpMessage]] = (
            block_info,
            text_packets(FUNCTION_BLOCK_NAME, block_name, b"\x00") if block_name else [],
        )

    def answer(self, message: UmpMessage, protocol: int) -> tuple[list[UmpMessage], int]:
        """The replies to one Stream message and the protocol from now on. Messages
        that need no answer (the client's own notifications) get none."""
        word0 = message[0]
        form = (word0 >> 26) & 0x03
        status = (word0 >> 16) & 0x03FF
        replies: list[UmpMessage] = []
        if status == STREAM_CONFIG_REQUEST:
            requested = (word0 >> 8) & 0xFF
            if requested in (PROTOCOL_MIDI1, PROTOCOL_MIDI2):
                protocol = requested
            replies.append(stream_configuration(protocol))
        elif form != _FORM_COMPLETE:
            pass  # a discovery is always one Complete packet
        elif status == ENDPOINT_DISCOVERY:
            wanted = message[1] & 0xFF
            if wanted & WANT_INFO:
                replies.append(self._info)
            if wanted & WANT_NAME:
                replies += self._name
            if wanted & WANT_PRODUCT_INSTANCE_ID:
                replies += self._product_id
            if wanted & WANT_STREAM_CONFIG:
                replies.append(stream_configuration(protocol))
        elif status == FUNCTION_BLOCK_DISCOVERY and ((word0 >> 8) & 0xFF) in (0, ALL_BLOCKS):
            info, name = self._block
            if word0 & WANT_BLOCK_INFO:
                replies.append(info)
            if word0 & WANT_BLOCK_NAME:
                replies += name
        return replies, protocol
