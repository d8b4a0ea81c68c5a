"""What each participant is holding down: notes, pedals, pitch bend, per channel.

The hub watches every message it forwards, so when a participant vanishes it can
release exactly what that participant left pressed, and nothing else. A held
note is never released while its player is connected, however long it is held.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from midihub.midi import messages as m
from midihub.midi.notes import NoteRange
from midihub.rtp import Command

ALL_CHANNELS = range(16)


@dataclass(slots=True)
class ChannelState:
    notes: dict[int, int] = field(default_factory=dict)  # note → velocity
    sustain: bool = False
    sostenuto: bool = False
    bend: int = m.PITCH_BEND_CENTRE
    controllers: dict[int, int] = field(default_factory=dict)  # last value of each CC
    program: int | None = None

    def idle(self) -> bool:
        return (
            not self.notes
            and not self.sustain
            and not self.sostenuto
            and self.bend == m.PITCH_BEND_CENTRE
        )


class NoteState:
    """Held notes and pedals of one source, all 16 channels."""

    __slots__ = ("channels",)

    def __init__(self) -> None:
        self.channels: dict[int, ChannelState] = {}

    def update(self, commands: Iterable[Command]) -> None:
        for _, message in commands:
            status = message[0]
            kind = status & 0xF0
            if kind == m.NOTE_ON:
                state = self._channel(status & 0x0F)
                if message[2]:
                    state.notes[message[1]] = message[2]
                else:  # velocity 0 is a NoteOff
                    state.notes.pop(message[1], None)
            elif kind == m.NOTE_OFF:
                known = self.channels.get(status & 0x0F)
                if known is not None:
                    known.notes.pop(message[1], None)
            elif kind == m.CONTROL_CHANGE:
                self._control(status & 0x0F, message[1], message[2])
            elif kind == m.PROGRAM_CHANGE:
                self._channel(status & 0x0F).program = message[1]
            elif kind == m.PITCH_BEND:
                self._channel(status & 0x0F).bend = message[1] | (message[2] << 7)
            elif status == m.SYSTEM_RESET:
                self.channels.clear()

    def _control(self, channel: int, control: int, value: int) -> None:
        if control < 120:
            self._channel(channel).controllers[control] = value
        if control == m.CC_SUSTAIN:
            self._channel(channel).sustain = value >= 64
        elif control == m.CC_SOSTENUTO:
            self._channel(channel).sostenuto = value >= 64
        elif control in (m.CC_ALL_NOTES_OFF, m.CC_ALL_SOUND_OFF) or 124 <= control <= 127:
            # All Notes Off and the mode messages that imply it (MIDI 1.0 §"Channel Mode").
            state = self.channels.get(channel)
            if state is not None:
                state.notes.clear()
        elif control == m.CC_RESET_ALL_CONTROLLERS:
            state = self.channels.get(channel)
            if state is not None:
                state.sustain = state.sostenuto = False
                state.bend = m.PITCH_BEND_CENTRE

    def _channel(self, channel: int) -> ChannelState:
        state = self.channels.get(channel)
        if state is None:
            state = self.channels[channel] = ChannelState()
        return state

    # What the recovery journal's repair asks (``midihub.rtp.recovery.HeldState``).
    def holds(self, channel: int, note: int) -> bool:
        state = self.channels.get(channel)
        return state is not None and note in state.notes

    def pedal(self, channel: int, controller: int) -> bool:
        state = self.channels.get(channel)
        if state is None:
            return False
        return state.sustain if controller == m.CC_SUSTAIN else state.sostenuto

    def wheel(self, channel: int) -> int:
        state = self.channels.get(channel)
        return m.PITCH_BEND_CENTRE if state is None else state.bend

    def controller(self, channel: int, number: int) -> int | None:
        state = self.channels.get(channel)
        return None if state is None else state.controllers.get(number)

    def program(self, channel: int) -> int | None:
        state = self.channels.get(channel)
        return None if state is None else state.program

    def held(self) -> dict[int, ChannelState]:
        """Channels with anything held, for monitors and the API."""
        return {ch: st for ch, st in sorted(self.channels.items()) if not st.idle()}

    def release(self) -> list[Command]:
        """The messages that undo everything held, and forget it: NoteOffs, then pedals
        up, then pitch bend centred."""
        out: list[Command] = []
        for channel, state in sorted(self.channels.items()):
            out += [(0, m.note_off(channel, note)) for note in sorted(state.notes)]
            if state.sustain:
                out.append((0, m.control_change(channel, m.CC_SUSTAIN, 0)))
            if state.sostenuto:
                out.append((0, m.control_change(channel, m.CC_SOSTENUTO, 0)))
            if state.bend != m.PITCH_BEND_CENTRE:
                out.append((0, m.pitch_bend(channel, m.PITCH_BEND_CENTRE)))
        self.channels.clear()
        return out


def panic_commands(note_range: NoteRange, channels: Iterable[int] = ALL_CHANNELS) -> list[Command]:
    """The manual "all notes off" of the old hub's buttons, but exact: a NoteOff for
    every note of the range on each channel, and for ``All`` the sustain pedal up and
    All Notes Off too (synths that ignore stray NoteOffs honour CC 123)."""
    out: list[Command] = []
    for channel in channels:
        out += [(0, m.note_off(channel, note)) for note in note_range.notes()]
        if note_range is NoteRange.ALL:
            out.append((0, m.control_change(channel, m.CC_SUSTAIN, 0)))
            out.append((0, m.control_change(channel, m.CC_ALL_NOTES_OFF, 0)))
    return out


NoteTracker = NoteState
"""The name the stuck-notes design uses for the same thing."""
