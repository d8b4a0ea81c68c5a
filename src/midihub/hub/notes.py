"""What each participant is holding down: notes, pedals, pitch bend, per channel.

The hub watches every message it forwards, so when a participant vanishes it can
release exactly what that participant left pressed, and nothing else. A held
note is never released while its player is connected, however long it is held.
"""

from __future__ import annotations

from collections.abc import Iterable

from midihub.midi import messages as m
from midihub.midi.notes import NoteRange
from midihub.midi.state import ChannelState, MidiState
from midihub.rtp import Command

ALL_CHANNELS = range(16)
__all__ = ["ALL_CHANNELS", "ChannelState", "NoteState", "NoteTracker", "panic_commands"]


class NoteState(MidiState):
    """Held notes and pedals of one source, all 16 channels, by the shared rules of
    ``midihub.midi.state`` (the journal sender follows the same ones)."""

    __slots__ = ()

    def update(self, commands: Iterable[Command]) -> None:
        apply = self.apply
        for _, message in commands:
            apply(message)

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
