"""MIDI 1.0 messages, a byte-stream parser, note names and ranges. No I/O."""

from midihub.midi.messages import Message, describe, kind, validate
from midihub.midi.notes import NoteRange, note_name, note_number
from midihub.midi.parser import StreamParser

__all__ = [
    "Message",
    "NoteRange",
    "StreamParser",
    "describe",
    "kind",
    "note_name",
    "note_number",
    "validate",
]
