"""Universal MIDI Packets as tuples of 32-bit words, and the SysEx7 packet forms.

A UMP message stays a plain ``tuple[int, ...]`` (1, 2, 3 or 4 words, the first holding
the message type in its top nibble): the bridge reads fields with shifts and masks and
builds nothing per message but the tuple, as ``midi.messages`` does for MIDI 1.0.
"""

from __future__ import annotations

from typing import Final

UmpMessage = tuple[int, ...]
"""One UMP message: 1, 2, 3 or 4 32-bit words, most significant field first."""

UTILITY: Final = 0x0
SYSTEM: Final = 0x1
MIDI1_VOICE: Final = 0x2
SYSEX7: Final = 0x3
MIDI2_VOICE: Final = 0x4
DATA128: Final = 0x5
FLEX_DATA: Final = 0xD
STREAM: Final = 0xF

WORDS: Final[tuple[int, ...]] = (1, 1, 1, 2, 2, 4, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4)
"""``WORDS[type]``: how many 32-bit words a message of that type has (UMP 1.1 §2.1.4,
the reserved types included, so a receiver can skip them whole)."""

SYSEX7_COMPLETE: Final = 0x0
SYSEX7_START: Final = 0x1
SYSEX7_CONTINUE: Final = 0x2
SYSEX7_END: Final = 0x3
SYSEX7_BYTES: Final = 6  # data bytes one SysEx7 packet can carry


def message_type(message: UmpMessage) -> int:
    return message[0] >> 28


def sysex7_packets(payload: bytes, group: int = 0) -> list[UmpMessage]:
    """A SysEx's data bytes (without F0 and F7) as SysEx7 packets of at most six bytes:
    one Complete packet, or Start, Continue…, End."""
    head = 0x30000000 | (group << 24)
    count = max(1, -(-len(payload) // SYSEX7_BYTES))
    out: list[UmpMessage] = []
    for index in range(count):
        chunk = payload[index * SYSEX7_BYTES : (index + 1) * SYSEX7_BYTES]
        if count == 1:
            status = SYSEX7_COMPLETE
        elif index == 0:
            status = SYSEX7_START
        elif index == count - 1:
            status = SYSEX7_END
        else:
            status = SYSEX7_CONTINUE
        padded = int.from_bytes(chunk.ljust(SYSEX7_BYTES, b"\x00"), "big")
        out.append(
            (
                head | (status << 20) | (len(chunk) << 16) | (padded >> 32),
                padded & 0xFFFFFFFF,
            )
        )
    return out


def sysex7_unpack(message: UmpMessage) -> tuple[int, bytes] | None:
    """One SysEx7 packet's status (Complete, Start, Continue, End) and data bytes, or
    None when it is malformed (status beyond End, more than six bytes, a byte > 127)."""
    word0, word1 = message
    status = (word0 >> 20) & 0x0F
    count = (word0 >> 16) & 0x0F
    if status > SYSEX7_END or count > SYSEX7_BYTES:
        return None
    data = (((word0 & 0xFFFF) << 32) | word1).to_bytes(SYSEX7_BYTES, "big")[:count]
    for byte in data:
        if byte > 0x7F:
            return None
    return status, data
