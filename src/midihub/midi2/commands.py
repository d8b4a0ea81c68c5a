"""Network MIDI 2.0 (UDP, M2-124-UM) datagrams and command packets: bytes in and out.

A datagram is the signature ``MIDI`` followed by command packets. Each command packet
is one 32-bit header word (code, payload length in words, two command-specific data
octets) and its payload. Names and ids in payloads are zero-padded to whole words;
a trailing NUL is optional (amidi2net always writes one, Zephyr only pads), so the
decoder strips NULs and the encoder only pads. docs/protocol.md has the table.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final, NamedTuple

from midihub.rtp.errors import ProtocolError
from midihub.rtp.packets import clean_name

SIGNATURE: Final = b"MIDI"
MAX_DATAGRAM: Final = 1400  # octets, amidi2net's buffer; the largest datagram we send
MAX_NAME: Final = 98  # UMP endpoint name, octets of UTF-8
MAX_PRODUCT_ID: Final = 42  # product instance id, ASCII
NONCE_SIZE: Final = 16
DIGEST_SIZE: Final = 32
HEADER: Final = struct.Struct("!BBBB")
_WORD: Final = struct.Struct("!I")
_SEQ: Final = struct.Struct("!HH")


class Code(enum.IntEnum):
    """Command codes (M2-124-UM §5.5)."""

    INVITATION = 0x01
    INVITATION_AUTH = 0x02
    INVITATION_USER_AUTH = 0x03
    ACCEPTED = 0x10
    PENDING = 0x11
    AUTH_REQUIRED = 0x12
    USER_AUTH_REQUIRED = 0x13
    PING = 0x20
    PING_REPLY = 0x21
    RETRANSMIT_REQUEST = 0x80
    RETRANSMIT_ERROR = 0x81
    SESSION_RESET = 0x82
    SESSION_RESET_REPLY = 0x83
    NAK = 0x8F
    BYE = 0xF0
    BYE_REPLY = 0xF1
    UMP_DATA = 0xFF


KNOWN_CODES: Final = frozenset(int(code) for code in Code)
AMIDI2NET_NAK: Final = 0x7F  # amidi2net's NAK code: read as a NAK, never NAKed (no loop)
NAK_CODES: Final = frozenset({int(Code.NAK), AMIDI2NET_NAK})


class Capability(enum.IntFlag):
    """Invitation CSD2: the authentication methods the client can do."""

    AUTH = 0x01
    USER_AUTH = 0x02


class AuthState(enum.IntEnum):
    """CSD2 of Authentication Required replies."""

    FIRST = 0x00
    INCORRECT = 0x01


class NakReason(enum.IntEnum):
    OTHER = 0x00
    NOT_SUPPORTED = 0x01
    NOT_EXPECTED = 0x02
    MALFORMED = 0x03
    BAD_PING_REPLY = 0x20


class ByeReason(enum.IntEnum):
    """Bye CSD1. 0x00-0x07 either side, 0x4x host to client, 0x80 client to host."""

    UNKNOWN = 0x00
    USER_TERMINATED = 0x01
    POWER_DOWN = 0x02
    TOO_MANY_MISSING = 0x03
    TIMEOUT = 0x04
    SESSION_NOT_ESTABLISHED = 0x05
    NO_PENDING_SESSION = 0x06
    PROTOCOL_ERROR = 0x07
    TOO_MANY_SESSIONS = 0x40
    AUTH_REJECTED = 0x41  # invitation with authentication rejected
    NOT_ACCEPTED = 0x42
    AUTH_FAILED = 0x43
    USER_NOT_FOUND = 0x44
    NO_MATCHING_AUTH = 0x45
    INVITATION_CANCELLED = 0x80


class RetransmitErrorReason(enum.IntEnum):
    UNKNOWN = 0x00
    NO_DATA = 0x01


class CommandPacket(NamedTuple):
    """One command packet. ``payload`` is a whole number of words. (A tuple: one is made
    for every command read, FEC copies included; a frozen dataclass costs twice.)"""

    code: int
    csd1: int = 0
    csd2: int = 0
    payload: bytes = b""

    @property
    def csd(self) -> int:
        """Both command-specific octets as one 16-bit number (UMP Data's sequence)."""
        return (self.csd1 << 8) | self.csd2

    @property
    def header(self) -> bytes:
        """The header word as sent (what a NAK quotes)."""
        return HEADER.pack(self.code, len(self.payload) // 4, self.csd1, self.csd2)

    @property
    def size(self) -> int:
        return 4 + len(self.payload)

    def encode(self) -> bytes:
        if len(self.payload) % 4 or len(self.payload) > 255 * 4:
            raise ValueError(f"payload of {len(self.payload)} octets is not 0..255 words")
        return self.header + self.payload


def with_seq(code: int, seq: int, payload: bytes = b"") -> CommandPacket:
    return CommandPacket(code, (seq >> 8) & 0xFF, seq & 0xFF, payload)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A datagram's command packets, and the header of a truncated last one (whose
    declared payload runs past the datagram's end), if any."""

    commands: list[CommandPacket]
    truncated: bytes | None = None


def decode_datagram(data: bytes) -> Decoded:
    """The command packets of one datagram. Raises ``ProtocolError`` only when it is
    not a Network MIDI 2.0 datagram at all (no signature, or a ragged length)."""
    if len(data) < 4 or data[:4] != SIGNATURE:
        raise ProtocolError("no MIDI signature")
    if len(data) % 4:
        raise ProtocolError(f"datagram of {len(data)} octets is not whole words")
    commands: list[CommandPacket] = []
    at = 4
    end = len(data)
    while at < end:
        code, words, csd1, csd2 = HEADER.unpack_from(data, at)
        stop = at + 4 + 4 * words
        if stop > end:
            return Decoded(commands, bytes(data[at : at + 4]))
        commands.append(CommandPacket(code, csd1, csd2, bytes(data[at + 4 : stop])))
        at = stop
    return Decoded(commands)


def encode_datagram(commands: list[CommandPacket]) -> bytes:
    return SIGNATURE + b"".join(command.encode() for command in commands)


# -- payload pieces ---------------------------------------------------------------


def padded(data: bytes) -> bytes:
    """``data`` zero-padded to whole words (nothing added when already whole)."""
    return data + b"\x00" * (-len(data) % 4)


def text_of(data: bytes, limit: int) -> str:
    """A name or id from the wire: up to the first NUL, cleaned (no control
    characters), at most ``limit`` octets."""
    return clean_name(data.split(b"\x00", 1)[0].decode("utf-8", "replace"), limit)


def cut_utf8(text: str, limit: int) -> bytes:
    """``text`` as UTF-8 cut to at most ``limit`` octets on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")


@dataclass(frozen=True, slots=True)
class Identity:
    """An endpoint as an Invitation or an invitation reply presents it."""

    name: str
    product_id: str
    capabilities: int = 0  # Invitation only


def identity_payload(name: str, product_id: str) -> tuple[int, bytes]:
    """(name length in words, payload) for an Invitation-like command."""
    name_data = padded(cut_utf8(name, MAX_NAME))
    product = padded(product_id.encode("ascii", "replace")[:MAX_PRODUCT_ID])
    return len(name_data) // 4, name_data + product


def decode_identity(command: CommandPacket, skip: int = 0) -> Identity:
    """Name and product id of an Invitation (``skip`` 0) or an Authentication Required
    reply (``skip`` = the nonce's 16 octets); CSD1 is the name's length in words."""
    payload = command.payload[skip:]
    name_end = 4 * command.csd1
    if name_end > len(payload):
        raise ProtocolError("endpoint name longer than the payload")
    return Identity(
        text_of(payload[:name_end], MAX_NAME),
        text_of(payload[name_end:], MAX_PRODUCT_ID),
        command.csd2,
    )


def invitation_reply(code: int, name: str, product_id: str) -> CommandPacket:
    """Invitation (0x01, CSD2 = capabilities: use ``invitation``), Reply: Accepted (0x10)
    or Pending (0x11): name length in CSD1, then name and product id."""
    words, payload = identity_payload(name, product_id)
    return CommandPacket(code, words, 0, payload)


def invitation(name: str, product_id: str, capabilities: int = 0) -> CommandPacket:
    words, payload = identity_payload(name, product_id)
    return CommandPacket(Code.INVITATION, words, capabilities, payload)


def auth_required(code: int, nonce: bytes, state: int, name: str, product_id: str) -> CommandPacket:
    """Authentication Required (0x12) or User Authentication Required (0x13)."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError("a nonce is 16 octets")
    words, payload = identity_payload(name, product_id)
    return CommandPacket(code, words, state, nonce + payload)


def ping(code: int, ping_id: int) -> CommandPacket:
    """Ping (0x20) or Ping Reply (0x21)."""
    return CommandPacket(code, 0, 0, _WORD.pack(ping_id & 0xFFFF_FFFF))


def word_of(command: CommandPacket) -> int:
    """The first payload word (a ping id); ``ProtocolError`` if there is none."""
    if len(command.payload) < 4:
        raise ProtocolError("payload too short")
    value: int = _WORD.unpack_from(command.payload)[0]
    return value


def bye(reason: int, text: str = "") -> CommandPacket:
    """Bye: CSD1 = reason, optional UTF-8 text padded to words."""
    return CommandPacket(Code.BYE, reason & 0xFF, 0, padded(cut_utf8(text, 64)) if text else b"")


def nak(reason: int, header: bytes, text: str = "") -> CommandPacket:
    """NAK: CSD1 = reason, payload = the refused command's header word (+ text)."""
    body = header + (padded(cut_utf8(text, 64)) if text else b"")
    return CommandPacket(Code.NAK, reason & 0xFF, 0, body)


def retransmit_request(seq: int, count: int) -> CommandPacket:
    """Retransmit Request: CSD = first missing sequence number; payload word = number
    of UMP Data commands wanted (16 bits; 0: all from ``seq`` on), 16 reserved bits."""
    return with_seq(Code.RETRANSMIT_REQUEST, seq, _SEQ.pack(count & 0xFFFF, 0))


def retransmit_error(seq: int, reason: int) -> CommandPacket:
    """Retransmit Error: CSD1 = reason; payload word = the sequence number asked for."""
    return CommandPacket(Code.RETRANSMIT_ERROR, reason & 0xFF, 0, _SEQ.pack(seq & 0xFFFF, 0))


def seq_word(command: CommandPacket) -> int:
    """The 16-bit number at the start of the payload (a Retransmit Request's count,
    a Retransmit Error's sequence number)."""
    if len(command.payload) < 4:
        raise ProtocolError("payload too short")
    value: int = _SEQ.unpack_from(command.payload)[0]
    return value


def ump_data(seq: int, words: tuple[int, ...]) -> CommandPacket:
    """UMP Data: CSD = sequence number; payload = UMP words (we send one UMP, 1 to 4
    words; 0 words = keep-alive; Windows MIDI Services sends several in one)."""
    return with_seq(Code.UMP_DATA, seq, b"".join(_WORD.pack(w & 0xFFFF_FFFF) for w in words))


def ump_words(command: CommandPacket) -> tuple[int, ...]:
    return words_of(command.payload)


def words_of(payload: bytes) -> tuple[int, ...]:
    """32-bit big-endian words (``payload`` is a whole number of them)."""
    words = len(payload) // 4
    if words < len(_WORDS):
        return _WORDS[words].unpack(payload)
    return struct.unpack(f"!{words}I", payload)


_WORDS: Final = tuple(struct.Struct(f"!{n}I") for n in range(5))


def empty(code: int) -> CommandPacket:
    """A command without payload or specific data: Session Reset and Bye Reply..."""
    return CommandPacket(code)
