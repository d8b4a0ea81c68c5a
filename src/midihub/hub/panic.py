"""Manual stuck-note repair: the NoteOffs of a panic.

What each participant holds is ``midihub.midi.held.NoteState``, kept by its session
(or guest); the hub releases it when the participant goes.
"""

from __future__ import annotations

from collections.abc import Iterable

from midihub.midi import messages as m
from midihub.midi.notes import NoteRange
from midihub.rtp import Command

ALL_CHANNELS = range(16)


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
