"""Manual stuck-note repair: the NoteOffs of a panic.

What each participant holds is ``midihub.midi.held.NoteState``, kept by its session
(or guest); the hub releases it when the participant goes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from midihub.midi import messages as m
from midihub.midi.held import NoteState
from midihub.midi.notes import NoteRange
from midihub.rtp import Command, Event, Who

ALL_CHANNELS = range(16)

HUB: Who = Who("hub", "midihub", (), "hub")
"""Who a panic to everyone on a port names: the hub itself, no participant."""


@dataclass(slots=True)
class Panicked(Event):
    """The hub sent a panic's NoteOffs on a port, to everyone there (``who`` is
    ``HUB``) or to one participant (``who``). Listeners that keep a port's notes
    (the recorder) end what the panic ended."""

    note_range: NoteRange
    channels: tuple[int, ...]

    @property
    def everyone(self) -> bool:
        return self.who is HUB


@dataclass(slots=True)
class Released(Event):
    """The hub sent, for participant ``who``, the NoteOffs, pedal-ups and bend centre
    of what it still held (it left, or the hub is stopping): what the room heard in
    its name, for listeners that keep what each participant played (the recorder)."""

    commands: tuple[Command, ...]


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


def ended_by_panic(held: NoteState, note_range: NoteRange, channels: Iterable[int]) -> list[bytes]:
    """What of ``held`` a panic of ``note_range`` on ``channels`` ends (the NoteOffs,
    and for ``All`` the sustain pedal up), as the messages that end it, and forget it."""
    out: list[bytes] = []
    for channel in channels:
        state = held.channels.get(channel)
        if state is None:
            continue
        out += [
            m.note_off(channel, note)
            for note in sorted(state.notes)
            if note_range.low <= note <= note_range.high
        ]
        if note_range is NoteRange.ALL and state.sustain:
            out.append(m.control_change(channel, m.CC_SUSTAIN, 0))
    for message in out:
        held.apply(message)
    return out
