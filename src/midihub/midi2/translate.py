"""UMP <-> MIDI 1.0 at the room's boundary: one ``UmpBridge`` per Network MIDI 2.0 client.

A room speaks MIDI 1.0 bytes. Toward it, a client's UMP becomes MIDI 1.0 by the
MIDI 2.0 specification's default translation (top bits kept, registered/assignable
controllers as the RPN/NRPN controller sequences); what has no MIDI 1.0 form is
dropped and counted by kind. Toward the client, MIDI 1.0 goes out in UMP on group 0:
MIDI 1.0 Channel Voice (type 2) unless the client asked for the MIDI 2.0 protocol,
then MIDI 2.0 Channel Voice (type 4) scaled up by min-centre-max bit repetition.
docs/protocol.md ("UMP and MIDI 1.0 at the room's boundary") gives the rules.
"""

from __future__ import annotations

import collections
from typing import Final

from midihub.midi.messages import DATA_LENGTH
from midihub.midi2.stream import PROTOCOL_MIDI1, PROTOCOL_MIDI2, StreamEndpoint
from midihub.midi2.ump import (
    SYSEX7_COMPLETE,
    SYSEX7_CONTINUE,
    SYSEX7_END,
    WORDS,
    UmpMessage,
    sysex7_packets,
    sysex7_unpack,
)

CC_BANK_MSB: Final = 0
CC_DATA_MSB: Final = 6
CC_BANK_LSB: Final = 32
CC_DATA_LSB: Final = 38
CC_NRPN_LSB: Final = 98
CC_NRPN_MSB: Final = 99
CC_RPN_LSB: Final = 100
CC_RPN_MSB: Final = 101
CC_RESET_ALL_CONTROLLERS: Final = 121

# MIDI 2.0 Channel Voice opcodes (the status nibble of a type 4 message).
_REGISTERED: Final = 0x2  # Registered Controller = RPN
_ASSIGNABLE: Final = 0x3  # Assignable Controller = NRPN
_NOTE_OFF: Final = 0x8
_NOTE_ON: Final = 0x9
_NULL_PARAMETER: Final = (0x7F, 0x7F)

# What each type 4 opcode with no MIDI 1.0 form is counted as.
_UNTRANSLATABLE: Final = {
    0x0: "per-note-controller",
    0x1: "per-note-controller",
    0x4: "relative-controller",
    0x5: "relative-controller",
    0x6: "per-note-pitch-bend",
    0x7: "reserved",
    0xF: "per-note-management",
}
# Message types with no MIDI 1.0 form, by how they are counted (0, 1, 2, 3, 4, F: handled).
_TYPE_KIND: Final = {
    0x5: "data128",
    0xD: "flex-data",
    **{kind: "reserved" for kind in (0x6, 0x7, 0x8, 0x9, 0xA, 0xB, 0xC, 0xE)},
}
_QUIET_UTILITY: Final = frozenset((0x0, 0x1, 0x2))  # NOOP, JR Clock, JR Timestamp

SYSEX_SEGMENT: Final = 1024
"""Data bytes of a SysEx the bridge gathers before handing a segment to the Intake:
six-byte pieces would each pay two framing bytes against the participant's SysEx
byte-rate budget (a third more than RTP pays), so packets are joined up to this."""


def _system_lengths() -> tuple[int, ...]:
    """Data bytes of each System status a type 1 message may carry; -1: not one."""
    table = [-1] * 256
    for status in (0xF1, 0xF2, 0xF3, 0xF6, 0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF):
        table[status] = DATA_LENGTH[status]
    return tuple(table)


SYSTEM_LENGTH: Final = _system_lengths()
_SINGLE: Final = tuple(bytes((status,)) for status in range(256))


def scale_up(value: int, source_bits: int, target_bits: int) -> int:
    """The MIDI 2.0 specification's min-centre-max up-scaling: up to the centre value
    a plain shift; above it, the bits below the top one repeat to fill the new low
    bits, so the minimum, centre and maximum map to minimum, centre and maximum."""
    shift = target_bits - source_bits
    scaled = value << shift
    if value <= 1 << (source_bits - 1):
        return scaled
    width = source_bits - 1
    repeat = value & ((1 << width) - 1)
    fill = filled = 0
    while filled < shift:
        fill = (fill << width) | repeat
        filled += width
    return scaled | (fill >> (filled - shift))


_UP_7_16: Final = tuple(scale_up(value, 7, 16) for value in range(128))
_UP_7_32: Final = tuple(scale_up(value, 7, 32) for value in range(128))


class UmpBridge:
    """One Network MIDI 2.0 participant's translator, sans-IO.

    ``from_client`` keeps no state (a room mixes senders, so it never assumes which
    RPN a receiver has selected: each registered/assignable controller is sent as
    the full four-controller sequence). ``to_client`` in protocol 2 keeps per channel
    the RPN/NRPN selection and the pending bank select, so CC 101/100 (99/98) + 6/38
    and CC 0/32 + program change become MIDI 2.0's own messages.
    """

    __slots__ = (
        "_bank_lsb",
        "_bank_msb",
        "_bank_pending",
        "_data_msb",
        "_nrpn",
        "_rpn",
        "_selected",
        "_stream",
        "_sysex",
        "_sysex_started",
        "dropped",
        "protocol",
    )

    def __init__(self, endpoint_name: str, product_id: str) -> None:
        self.protocol = PROTOCOL_MIDI1
        self.dropped: collections.Counter[str] = collections.Counter()
        self._stream = StreamEndpoint(endpoint_name, product_id)
        # A SysEx7 being received: data not yet handed on (None: none open), and
        # whether its first segment (the one with F0) has been.
        self._sysex: bytearray | None = None
        self._sysex_started = False
        # Per channel, for protocol 2 only: the bank select and whether it waits for its
        # program change; the RPN and NRPN numbers [msb, lsb]; which is selected (an
        # opcode, or 0: none); the last Data Entry MSB.
        self._bank_msb = [0] * 16
        self._bank_lsb = [0] * 16
        self._bank_pending = [False] * 16
        self._rpn = [list(_NULL_PARAMETER) for _ in range(16)]
        self._nrpn = [list(_NULL_PARAMETER) for _ in range(16)]
        self._selected = [0] * 16
        self._data_msb = [0] * 16

    # -- from the client, toward the room ------------------------------------------

    def from_client(self, message: UmpMessage) -> tuple[list[bytes], list[UmpMessage]]:
        """One UMP message from the client -> (MIDI 1.0 messages for the room, UMP
        replies). SysEx7 comes out as RTP-style segments for the participant's Intake."""
        if not message or len(message) != WORDS[message[0] >> 28]:
            return self._drop("malformed")
        word0 = message[0]
        kind = word0 >> 28
        if 0x1 <= kind <= 0x4:
            if word0 & 0x0F000000:
                return self._drop("group")
            if kind == 0x2:
                status = (word0 >> 16) & 0xFF
                if status < 0x80 or status >= 0xF0:
                    return self._drop("malformed")
                if DATA_LENGTH[status] == 1:
                    if word0 & 0x8000:
                        return self._drop("malformed")
                    return [((word0 >> 8) & 0xFFFF).to_bytes(2, "big")], []
                if word0 & 0x8080:
                    return self._drop("malformed")
                return [(word0 & 0xFFFFFF).to_bytes(3, "big")], []
            if kind == 0x4:
                return self._down(word0, message[1]), []
            if kind == 0x1:
                return self._system(word0), []
            unpacked = sysex7_unpack(message)
            if unpacked is None:
                return self._drop("malformed")
            return self._sysex7(*unpacked), []
        if kind == 0xF:
            replies, self.protocol = self._stream.answer(message, self.protocol)
            return [], replies
        if kind == 0x0 and (word0 >> 20) & 0xF in _QUIET_UTILITY:
            return [], []
        return self._drop("utility" if kind == 0x0 else _TYPE_KIND[kind])

    def _drop(self, kind: str) -> tuple[list[bytes], list[UmpMessage]]:
        self.dropped[kind] += 1
        return [], []

    def packet_lost(self) -> None:
        """UMP lost for good (a session reset, or a gap given up on): the SysEx being
        gathered is unusable. Call it with the Intake's ``packet_lost``, which drops
        the part already handed on; what never was is counted here."""
        if self._sysex is not None and not self._sysex_started:
            self.dropped["sysex-incomplete"] += 1
        self._sysex = None

    def _sysex7(self, status: int, data: bytes) -> list[bytes]:
        """SysEx7 packets as RTP-style SysEx segments (complete F0…F7, first F0…F0,
        middle F7…F0, last F7…F7) of up to ``SYSEX_SEGMENT`` bytes, so the participant's
        Intake joins, caps and rate-limits them exactly as it does RTP SysEx."""
        pending = self._sysex
        if status in (SYSEX7_CONTINUE, SYSEX7_END):
            close = 0xF7 if status == SYSEX7_END else 0xF0
            if pending is None:  # no start: the Intake counts it incomplete
                return [b"\xf7" + data + bytes((close,))]
            pending += data
            if close == 0xF0 and len(pending) < SYSEX_SEGMENT:
                return []
            segment = bytes((0xF7 if self._sysex_started else 0xF0,)) + pending + bytes((close,))
            if close == 0xF7:
                self._sysex = None
            else:
                pending.clear()
                self._sysex_started = True
            return [segment]
        out: list[bytes] = []
        if pending is not None and not self._sysex_started:
            out.append(b"\xf0" + pending + b"\xf0")  # interrupted: the Intake drops it
        if status == SYSEX7_COMPLETE:
            self._sysex = None
            out.append(b"\xf0" + data + b"\xf7")
        else:  # Start
            self._sysex = bytearray(data)
            self._sysex_started = False
        return out

    def _system(self, word0: int) -> list[bytes]:
        status = (word0 >> 16) & 0xFF
        count = SYSTEM_LENGTH[status]
        if count == 0:
            return [_SINGLE[status]]
        if count < 0 or word0 & (0x8000 if count == 1 else 0x8080):
            self.dropped["malformed"] += 1
            return []
        if count == 1:
            return [((word0 >> 8) & 0xFFFF).to_bytes(2, "big")]
        return [(word0 & 0xFFFFFF).to_bytes(3, "big")]

    def _down(self, word0: int, word1: int) -> list[bytes]:
        """MIDI 2.0 Channel Voice -> MIDI 1.0, the specification's default translation."""
        opcode = (word0 >> 20) & 0xF
        channel = (word0 >> 16) & 0xF
        status = (opcode << 4) | channel
        index = (word0 >> 8) & 0x7F
        if opcode == _NOTE_ON:
            return [bytes((status, index, (word1 >> 25) or 1))]  # 0 would mean note off
        if opcode in (0x8, 0xA, 0xB):  # note off (16-bit velocity), poly pressure, CC
            return [bytes((status, index, word1 >> 25))]
        if opcode == 0xD:
            return [bytes((status, word1 >> 25))]
        if opcode == 0xE:
            bend = word1 >> 18
            return [bytes((status, bend & 0x7F, bend >> 7))]
        if opcode == 0xC:
            program = bytes((status, (word1 >> 24) & 0x7F))
            if not word0 & 0x01:  # bank not valid
                return [program]
            cc = 0xB0 | channel
            return [
                bytes((cc, CC_BANK_MSB, (word1 >> 8) & 0x7F)),
                bytes((cc, CC_BANK_LSB, word1 & 0x7F)),
                program,
            ]
        if opcode in (_REGISTERED, _ASSIGNABLE):
            cc = 0xB0 | channel
            value = word1 >> 18
            msb, lsb = (
                (CC_RPN_MSB, CC_RPN_LSB) if opcode == _REGISTERED else (CC_NRPN_MSB, CC_NRPN_LSB)
            )
            return [
                bytes((cc, msb, index)),
                bytes((cc, lsb, word0 & 0x7F)),
                bytes((cc, CC_DATA_MSB, value >> 7)),
                bytes((cc, CC_DATA_LSB, value & 0x7F)),
            ]
        self.dropped[_UNTRANSLATABLE[opcode]] += 1
        return []

    # -- from the room, toward the client ------------------------------------------

    def to_client(self, message: bytes) -> list[UmpMessage]:
        """One complete MIDI 1.0 message from the room -> UMP on group 0. What UMP
        cannot carry (F4, F5, F9, FD, a stray F7, a wrong length) gives nothing."""
        status = message[0]
        if status < 0xF0:
            if status < 0x80 or len(message) != DATA_LENGTH[status] + 1:
                return []
            if self.protocol == PROTOCOL_MIDI2:
                return self._up(message)
            if len(message) == 3:
                return [(0x20000000 | int.from_bytes(message),)]
            return [(0x20000000 | (int.from_bytes(message) << 8),)]
        if status == 0xF0:
            if len(message) < 2 or message[-1] != 0xF7:
                return []
            return sysex7_packets(message[1:-1])
        count = SYSTEM_LENGTH[status]
        if count < 0 or len(message) != count + 1:
            return []
        return [(0x10000000 | (int.from_bytes(message) << (8 * (2 - count))),)]

    def _up(self, message: bytes) -> list[UmpMessage]:
        """MIDI 1.0 Channel Voice -> MIDI 2.0 Channel Voice (protocol 2)."""
        status = message[0]
        kind = status >> 4
        channel = status & 0x0F
        head = 0x40000000 | (status << 16)
        if kind == 0x9 or kind == 0x8:
            note, velocity = message[1], message[2]
            if kind == 0x9 and velocity == 0:  # MIDI 1.0's note off
                return [(0x40800000 | (channel << 16) | (note << 8), 0)]
            return [(head | (note << 8), _UP_7_16[velocity] << 16)]
        if kind == 0xA:
            return [(head | (message[1] << 8), _UP_7_32[message[2]])]
        if kind == 0xB:
            return self._control(channel, message[1], message[2])
        if kind == 0xC:
            if not self._bank_pending[channel]:
                return [(head, message[1] << 24)]
            self._bank_pending[channel] = False
            bank = (self._bank_msb[channel] << 8) | self._bank_lsb[channel]
            return [(head | 0x01, (message[1] << 24) | bank)]
        if kind == 0xD:
            return [(head, _UP_7_32[message[1]])]
        return [(head, scale_up(message[1] | (message[2] << 7), 14, 32))]

    def _control(self, channel: int, control: int, value: int) -> list[UmpMessage]:
        head = 0x40B00000 | (channel << 16)
        if control in (CC_BANK_MSB, CC_BANK_LSB):
            (self._bank_msb if control == CC_BANK_MSB else self._bank_lsb)[channel] = value
            self._bank_pending[channel] = True
            return []  # carried by the next program change, where MIDI 1.0 applies it
        if control in (CC_RPN_MSB, CC_RPN_LSB, CC_NRPN_MSB, CC_NRPN_LSB):
            registered = control >= CC_RPN_LSB
            number = (self._rpn if registered else self._nrpn)[channel]
            number[0 if control in (CC_RPN_MSB, CC_NRPN_MSB) else 1] = value
            self._selected[channel] = _REGISTERED if registered else _ASSIGNABLE
            return []  # a selection: carried by the next data entry
        if control in (CC_DATA_MSB, CC_DATA_LSB):
            opcode = self._selected[channel]
            number = (self._rpn if opcode == _REGISTERED else self._nrpn)[channel]
            if opcode and tuple(number) != _NULL_PARAMETER:
                if control == CC_DATA_MSB:
                    self._data_msb[channel] = value
                    data = value << 7
                else:
                    data = (self._data_msb[channel] << 7) | value
                return [
                    (
                        0x40000000
                        | (opcode << 20)
                        | (channel << 16)
                        | (number[0] << 8)
                        | number[1],
                        scale_up(data, 14, 32),
                    )
                ]
        elif control == CC_RESET_ALL_CONTROLLERS:
            self._selected[channel] = 0  # RP-015: the selection returns to null
        return [(head | (control << 8), _UP_7_32[value])]
