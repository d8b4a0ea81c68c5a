"""Encode/decode AppleMIDI session packets and the RTP header of RTP MIDI data packets.

Pure functions over ``bytes``. Every decoder raises only ``ProtocolError``.
Layouts: docs/protocol.md ("Session packets", "RTP header").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, NamedTuple

from midihub.rtp.errors import ProtocolError

SIGNATURE: Final = b"\xff\xff"
PROTOCOL_VERSION: Final = 2
RTP_VERSION_BITS: Final = 0x80  # V=2, P=0, X=0, CC=0
PAYLOAD_TYPE: Final = 0x61  # dynamic type 97, what AppleMIDI peers use

_INVITE = struct.Struct("!2s2sIII")  # signature, command, version, token, ssrc
INVITATION_HEAD: Final = _INVITE.size
_CLOCK = struct.Struct("!2s2sIB3xQQQ")
_FEEDBACK = struct.Struct("!2s2sIH2x")
_BITRATE = struct.Struct("!2s2sII")
_RTP_HEADER = struct.Struct("!BBHII")

MAX_NAME_BYTES: Final = 64
"""Longest session name kept (UTF-8 bytes); longer ones are cut on a character boundary."""

INVITATION: Final = b"IN"
ACCEPT: Final = b"OK"
REJECT: Final = b"NO"
BYE: Final = b"BY"
CLOCK: Final = b"CK"
FEEDBACK: Final = b"RS"
BITRATE: Final = b"RL"

_INVITE_KINDS: Final = (INVITATION, ACCEPT, REJECT, BYE)


@dataclass(frozen=True, slots=True)
class Invitation:
    """IN, OK, NO or BY: the four packets that carry version, token and SSRC."""

    command: bytes
    token: int
    ssrc: int
    name: str | None = None
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Clock:
    """CK: ``count`` 0, 1 or 2 says how many of the timestamps are filled in."""

    ssrc: int
    count: int
    timestamps: tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Feedback:
    """RS: the receiver has every packet up to ``sequence``."""

    ssrc: int
    sequence: int


@dataclass(frozen=True, slots=True)
class BitrateLimit:
    """RL: the peer asks us to stay under ``limit`` bits per second."""

    ssrc: int
    limit: int


SessionPacket = Invitation | Clock | Feedback | BitrateLimit


def is_session_packet(data: bytes) -> bool:
    return data[:2] == SIGNATURE


def encode_invitation(packet: Invitation) -> bytes:
    head = _INVITE.pack(SIGNATURE, packet.command, packet.version, packet.token, packet.ssrc)
    if packet.name is None or packet.command == BYE:
        return head
    return head + packet.name.encode("utf-8") + b"\x00"


def encode_clock(ssrc: int, count: int, timestamps: tuple[int, int, int]) -> bytes:
    ts1, ts2, ts3 = timestamps
    return _CLOCK.pack(SIGNATURE, CLOCK, ssrc, count, ts1, ts2, ts3)


def encode_feedback(ssrc: int, sequence: int) -> bytes:
    return _FEEDBACK.pack(SIGNATURE, FEEDBACK, ssrc, sequence & 0xFFFF)


def decode_session_packet(data: bytes) -> SessionPacket:
    """Decode any AppleMIDI session packet (the caller checked ``is_session_packet``)."""
    if len(data) < 4 or data[:2] != SIGNATURE:
        raise ProtocolError("not an AppleMIDI session packet")
    command = data[2:4]
    if command in _INVITE_KINDS:
        return _decode_invitation(command, data)
    if command == CLOCK:
        if len(data) < _CLOCK.size:
            raise ProtocolError(f"CK packet too short: {len(data)} bytes, need {_CLOCK.size}")
        _, _, ssrc, count, ts1, ts2, ts3 = _CLOCK.unpack_from(data)
        if count > 2:
            raise ProtocolError(f"CK count must be 0, 1 or 2, got {count}")
        return Clock(ssrc, count, (ts1, ts2, ts3))
    if command == FEEDBACK:
        if len(data) < _FEEDBACK.size:
            raise ProtocolError(f"RS packet too short: {len(data)} bytes")
        _, _, ssrc, sequence = _FEEDBACK.unpack_from(data)
        return Feedback(ssrc, sequence)
    if command == BITRATE:
        if len(data) < _BITRATE.size:
            raise ProtocolError(f"RL packet too short: {len(data)} bytes")
        _, _, ssrc, limit = _BITRATE.unpack_from(data)
        return BitrateLimit(ssrc, limit)
    raise ProtocolError(f"unknown AppleMIDI command {command!r}")


def _decode_invitation(command: bytes, data: bytes) -> Invitation:
    if len(data) < _INVITE.size:
        raise ProtocolError(
            f"{command.decode()} packet too short: {len(data)} bytes, need {_INVITE.size}"
        )
    _, _, version, token, ssrc = _INVITE.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported AppleMIDI protocol version {version}")
    name: str | None = None
    rest = data[_INVITE.size :]
    if rest and command != BYE:
        # Names are UTF-8 by convention; a peer sending Latin-1 still gets in.
        name = clean_name(
            rest[: MAX_NAME_BYTES * 4].split(b"\x00", 1)[0].decode("utf-8", "replace")
        )
    return Invitation(command, token, ssrc, name, version)


def clean_name(text: str, limit: int = MAX_NAME_BYTES) -> str:
    """A session name safe for logs, the database, the API and terminals: control and
    bidirectional-override characters removed, at most ``limit`` bytes of UTF-8."""
    kept = "".join(c for c in text if c.isprintable() or c == " ").strip()
    data = kept.encode("utf-8")
    if len(data) <= limit:
        return kept
    return data[:limit].decode("utf-8", "ignore").rstrip()


class RtpHeader(NamedTuple):
    """A tuple: one is made for every data packet read (a dataclass cost 4 % of the
    pair benchmark's profile)."""

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int


RTP_HEADER_SIZE: Final = _RTP_HEADER.size


def encode_rtp_header(sequence: int, timestamp: int, ssrc: int) -> bytes:
    return _RTP_HEADER.pack(
        RTP_VERSION_BITS, PAYLOAD_TYPE, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc
    )


def decode_rtp_header(data: bytes) -> tuple[RtpHeader, int, int]:
    """Return the header and where the payload starts and ends (CSRCs, extension and
    padding excluded)."""
    if len(data) < RTP_HEADER_SIZE:
        raise ProtocolError(f"RTP packet too short: {len(data)} bytes")
    first, second, sequence, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise ProtocolError(f"RTP version must be 2, got {first >> 6}")
    offset = RTP_HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:  # header extension: skip it by its own length
        if len(data) < offset + 4:
            raise ProtocolError("RTP header extension truncated")
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    end = len(data)
    if first & 0x20:  # padding: last byte counts the padding bytes
        end -= data[-1]
    if offset > end or end > len(data) or offset >= len(data):
        raise ProtocolError("RTP packet has no room for a MIDI payload")
    header = RtpHeader(bool(second & 0x80), second & 0x7F, sequence, timestamp, ssrc)
    return header, offset, end
