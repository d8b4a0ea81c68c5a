"""Note names (``C4`` = 60, middle C) and the hub's note ranges for panic."""

from __future__ import annotations

import enum
import re

_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_SEMITONE = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_NOTE_RE = re.compile(r"^([A-Ga-g])([#b]?)(-?\d+)$")


def note_name(note: int) -> str:
    """``60`` → ``"C4"``; the octave numbering where middle C is C4 (note 0 is C-1)."""
    if not 0 <= note <= 127:
        raise ValueError(f"note must be 0..127, got {note}")
    return f"{_NAMES[note % 12]}{note // 12 - 1}"


def note_number(name: str) -> int:
    """``"C4"`` → ``60``; accepts sharps (``C#4``) and flats (``Db4``)."""
    match = _NOTE_RE.match(name.strip())
    if not match:
        raise ValueError(f"not a note name: {name!r} (expected e.g. C4, F#3, Bb-1)")
    letter, accidental, octave = match.groups()
    value = _SEMITONE[letter.upper()] + (int(octave) + 1) * 12
    value += {"#": 1, "b": -1, "": 0}[accidental]
    if not 0 <= value <= 127:
        raise ValueError(f"note {name!r} is outside MIDI's 0..127")
    return value


class NoteRange(enum.Enum):
    """The panic ranges musicians already know from the old hub's buttons."""

    LOW = (0, 42)
    MID = (43, 85)
    HIGH = (86, 127)
    ALL = (0, 127)

    @property
    def low(self) -> int:
        return self.value[0]

    @property
    def high(self) -> int:
        return self.value[1]

    def notes(self) -> range:
        return range(self.low, self.high + 1)

    @classmethod
    def parse(cls, text: str) -> NoteRange:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            valid = ", ".join(r.name.title() for r in cls)
            raise ValueError(f"unknown note range {text!r}; valid ranges: {valid}") from None
