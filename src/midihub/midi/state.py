"""The one set of rules for what a MIDI message does to a channel's state.

The hub's note tracker (``midi.held.NoteState``: what to release when a player
leaves, what a journal repair must change) and the recovery-journal sender
(``rtp.recovery.StreamJournal``: what a receiver may have missed) both follow
``classify``; a property test checks they agree after any message script.

- NoteOn (velocity > 0) holds a note; NoteOff or NoteOn velocity 0 ends it.
- CC 0-119 set a controller; 64 (sustain) and 66 (sostenuto) are down at >= 64.
- CC 120 (All Sound Off) and 123-127 (All Notes Off, Omni/Mono/Poly modes) end
  every held note of the channel; CC 122 (Local Control) ends nothing.
- CC 121 (Reset All Controllers) resets the controllers MIDI's RP-015 names
  (modulation, expression, pedals 64-67, RPN/NRPN selection) and centres the bend.
- Program change sets the program; pitch bend the wheel.
- System Reset (FF) returns every channel to power-up: nothing held, pedals up,
  bend centred, controllers and program unknown.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from midihub.midi.messages import Message

PITCH_BEND_CENTRE: Final = 0x2000
CC_SUSTAIN: Final = 64
CC_SOSTENUTO: Final = 66
PEDALS: Final = (CC_SUSTAIN, CC_SOSTENUTO)
ENDS_NOTES: Final = frozenset((120, 123, 124, 125, 126, 127))
RESET_VALUES: Final[dict[int, int]] = {
    1: 0,  # modulation
    11: 127,  # expression
    64: 0,
    65: 0,
    66: 0,
    67: 0,  # sustain, portamento, sostenuto, soft pedal
    98: 127,
    99: 127,
    100: 127,
    101: 127,  # NRPN / RPN null
}
"""What CC 121 sets, per the MIDI Manufacturers Association's RP-015."""


class Effect(enum.IntEnum):
    NONE = 0
    NOTE_ON = 1  # a = note, b = velocity
    NOTE_OFF = 2  # a = note
    END_NOTES = 3
    CONTROLLER = 4  # a = number (0-119), b = value
    RESET_CONTROLLERS = 5
    PROGRAM = 6  # a = program
    BEND = 7  # a = 14-bit value
    RESET_ALL = 8  # System Reset: every channel


def classify(message: Message) -> tuple[Effect, int, int, int]:
    """``(effect, channel, a, b)`` of one complete MIDI message."""
    status = message[0]
    if status >= 0xF0:
        return (Effect.RESET_ALL if status == 0xFF else Effect.NONE), 0, 0, 0
    kind, channel = status & 0xF0, status & 0x0F
    if kind == 0x90:
        if message[2]:
            return Effect.NOTE_ON, channel, message[1], message[2]
        return Effect.NOTE_OFF, channel, message[1], 0
    if kind == 0x80:
        return Effect.NOTE_OFF, channel, message[1], 0
    if kind == 0xB0:
        number = message[1]
        if number < 120:
            return Effect.CONTROLLER, channel, number, message[2]
        if number in ENDS_NOTES:
            return Effect.END_NOTES, channel, 0, 0
        if number == 121:
            return Effect.RESET_CONTROLLERS, channel, 0, 0
        return Effect.NONE, channel, 0, 0  # 122: local control changes no state we track
    if kind == 0xC0:
        return Effect.PROGRAM, channel, message[1], 0
    if kind == 0xE0:
        return Effect.BEND, channel, message[1] | message[2] << 7, 0
    return Effect.NONE, channel, 0, 0  # aftertouch


def pedal_down(value: int) -> bool:
    return value >= 64


@dataclass(slots=True)
class ChannelState:
    """One channel as a synth would have it after the messages seen so far."""

    notes: dict[int, int] = field(default_factory=dict)  # note → velocity
    sustain: bool = False
    sostenuto: bool = False
    bend: int = PITCH_BEND_CENTRE
    controllers: dict[int, int] = field(default_factory=dict)  # last value of each CC 0-119
    program: int | None = None

    def idle(self) -> bool:
        return (
            not self.notes
            and not self.sustain
            and not self.sostenuto
            and self.bend == PITCH_BEND_CENTRE
        )

    def apply(self, effect: Effect, a: int, b: int) -> None:
        """One classified message on this channel (not RESET_ALL: see ``MidiState``)."""
        if effect is Effect.NOTE_ON:
            self.notes[a] = b
        elif effect is Effect.NOTE_OFF:
            self.notes.pop(a, None)
        elif effect is Effect.CONTROLLER:
            self.controllers[a] = b
            if a == CC_SUSTAIN:
                self.sustain = pedal_down(b)
            elif a == CC_SOSTENUTO:
                self.sostenuto = pedal_down(b)
        elif effect is Effect.END_NOTES:
            self.notes.clear()
        elif effect is Effect.RESET_CONTROLLERS:
            for number, value in RESET_VALUES.items():
                if number in self.controllers:
                    self.controllers[number] = value
            self.sustain = self.sostenuto = False
            self.bend = PITCH_BEND_CENTRE
        elif effect is Effect.PROGRAM:
            self.program = a
        elif effect is Effect.BEND:
            self.bend = a


class MidiState:
    """All 16 channels of one MIDI stream."""

    __slots__ = ("channels",)

    def __init__(self) -> None:
        self.channels: dict[int, ChannelState] = {}

    def apply(self, message: Message) -> None:
        effect, channel, a, b = classify(message)
        if effect is Effect.NONE:
            return
        if effect is Effect.RESET_ALL:
            self.channels.clear()
            return
        state = self.channels.get(channel)
        if state is None:
            if effect in (Effect.NOTE_OFF, Effect.END_NOTES, Effect.RESET_CONTROLLERS):
                return  # nothing to end on a channel we know nothing of
            state = self.channels[channel] = ChannelState()
        state.apply(effect, a, b)
