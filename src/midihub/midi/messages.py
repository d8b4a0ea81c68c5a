"""MIDI 1.0 messages as immutable ``bytes`` values (status byte included).

A hub mostly forwards messages it never needs to look inside, so a message stays
the exact bytes it arrived as: no object per message on the hot path. The
constructors and predicates here are the one place that knows the layout.
"""

from __future__ import annotations

from typing import Final

Message = bytes
"""One complete MIDI message: status byte first (never running status)."""

NOTE_OFF: Final = 0x80
NOTE_ON: Final = 0x90
POLY_PRESSURE: Final = 0xA0
CONTROL_CHANGE: Final = 0xB0
PROGRAM_CHANGE: Final = 0xC0
CHANNEL_PRESSURE: Final = 0xD0
PITCH_BEND: Final = 0xE0

SYSEX_START: Final = 0xF0
MTC_QUARTER_FRAME: Final = 0xF1
SONG_POSITION: Final = 0xF2
SONG_SELECT: Final = 0xF3
TUNE_REQUEST: Final = 0xF6
SYSEX_END: Final = 0xF7
TIMING_CLOCK: Final = 0xF8
START: Final = 0xFA
CONTINUE: Final = 0xFB
STOP: Final = 0xFC
ACTIVE_SENSING: Final = 0xFE
SYSTEM_RESET: Final = 0xFF

PITCH_BEND_CENTRE: Final = 0x2000

CC_SUSTAIN: Final = 64
CC_SOSTENUTO: Final = 66
CC_ALL_SOUND_OFF: Final = 120
CC_RESET_ALL_CONTROLLERS: Final = 121
CC_ALL_NOTES_OFF: Final = 123


def _data_lengths() -> tuple[int, ...]:
    """Data bytes following each status byte; -1 marks SysEx (variable)."""
    table = [0] * 256
    for status in range(0x80, 0xF0):
        kind = status & 0xF0
        table[status] = 1 if kind in (PROGRAM_CHANGE, CHANNEL_PRESSURE) else 2
    table[SYSEX_START] = -1
    table[MTC_QUARTER_FRAME] = 1
    table[SONG_POSITION] = 2
    table[SONG_SELECT] = 1
    return tuple(table)


DATA_LENGTH: Final[tuple[int, ...]] = _data_lengths()
"""``DATA_LENGTH[status]``: how many data bytes a status byte takes (SysEx: -1)."""


def _check_channel(channel: int) -> int:
    if not 0 <= channel <= 15:
        raise ValueError(f"channel must be 0..15 (wire numbering), got {channel}")
    return channel


def _check7(name: str, value: int) -> int:
    if not 0 <= value <= 127:
        raise ValueError(f"{name} must be 0..127, got {value}")
    return value


def note_on(channel: int, note: int, velocity: int) -> Message:
    return bytes(
        (NOTE_ON | _check_channel(channel), _check7("note", note), _check7("velocity", velocity))
    )


def note_off(channel: int, note: int, velocity: int = 0) -> Message:
    return bytes(
        (NOTE_OFF | _check_channel(channel), _check7("note", note), _check7("velocity", velocity))
    )


def control_change(channel: int, control: int, value: int) -> Message:
    return bytes(
        (
            CONTROL_CHANGE | _check_channel(channel),
            _check7("control", control),
            _check7("value", value),
        )
    )


def program_change(channel: int, program: int) -> Message:
    return bytes((PROGRAM_CHANGE | _check_channel(channel), _check7("program", program)))


def pitch_bend(channel: int, value: int) -> Message:
    """``value`` is 0..16383 with 8192 (``PITCH_BEND_CENTRE``) meaning no bend."""
    if not 0 <= value <= 0x3FFF:
        raise ValueError(f"pitch bend must be 0..16383, got {value}")
    return bytes((PITCH_BEND | _check_channel(channel), value & 0x7F, value >> 7))


def sysex(payload: bytes) -> Message:
    """A complete SysEx message around ``payload`` (7-bit data bytes only)."""
    if any(b > 0x7F for b in payload):
        raise ValueError("SysEx payload bytes must be 0..127")
    return bytes((SYSEX_START,)) + payload + bytes((SYSEX_END,))


def validate(message: Message) -> None:
    """Raise ``ValueError`` unless ``message`` is one complete, well-formed MIDI message."""
    if not message:
        raise ValueError("empty MIDI message")
    status = message[0]
    if status < 0x80:
        raise ValueError(f"MIDI message must start with a status byte, got {status:#04x}")
    if status == SYSEX_START:
        if len(message) < 2 or message[-1] != SYSEX_END:
            raise ValueError("SysEx must end with F7")
        if any(b > 0x7F for b in message[1:-1]):
            raise ValueError("SysEx data bytes must be 0..127")
        return
    expected = DATA_LENGTH[status] + 1
    if len(message) != expected:
        raise ValueError(f"status {status:#04x} takes {expected} bytes, got {len(message)}")
    if any(b > 0x7F for b in message[1:]):
        raise ValueError("MIDI data bytes must be 0..127")


_KIND_NAMES: Final = {
    NOTE_OFF: "note_off",
    NOTE_ON: "note_on",
    POLY_PRESSURE: "poly_pressure",
    CONTROL_CHANGE: "control_change",
    PROGRAM_CHANGE: "program_change",
    CHANNEL_PRESSURE: "channel_pressure",
    PITCH_BEND: "pitch_bend",
}
_SYSTEM_NAMES: Final = {
    SYSEX_START: "sysex",
    MTC_QUARTER_FRAME: "mtc_quarter_frame",
    SONG_POSITION: "song_position",
    SONG_SELECT: "song_select",
    0xF4: "undefined_f4",
    0xF5: "undefined_f5",
    TUNE_REQUEST: "tune_request",
    SYSEX_END: "sysex_end",
    TIMING_CLOCK: "clock",
    0xF9: "undefined_f9",
    START: "start",
    CONTINUE: "continue",
    STOP: "stop",
    0xFD: "undefined_fd",
    ACTIVE_SENSING: "active_sensing",
    SYSTEM_RESET: "reset",
}


def kind(message: Message) -> str:
    """A stable lower-case name for the message type, used in logs and the API."""
    status = message[0]
    if status < 0xF0:
        return _KIND_NAMES[status & 0xF0]
    return _SYSTEM_NAMES[status]


def describe(message: Message) -> str:
    """A short human-readable form, for logs and monitors (channels shown 1..16)."""
    from midihub.midi.notes import note_name

    status = message[0]
    name = kind(message)
    if status >= 0xF0:
        if status == SYSEX_START:
            return f"sysex ({len(message)} bytes)"
        return name if len(message) == 1 else f"{name} {message[1:].hex(' ')}"
    channel = (status & 0x0F) + 1
    kind_bits = status & 0xF0
    if kind_bits in (NOTE_ON, NOTE_OFF, POLY_PRESSURE):
        return f"{name} ch{channel} {note_name(message[1])} {message[2]}"
    if kind_bits == CONTROL_CHANGE:
        return f"{name} ch{channel} cc{message[1]}={message[2]}"
    if kind_bits == PITCH_BEND:
        return f"{name} ch{channel} {(message[1] | message[2] << 7) - PITCH_BEND_CENTRE:+d}"
    return f"{name} ch{channel} {message[1]}"
