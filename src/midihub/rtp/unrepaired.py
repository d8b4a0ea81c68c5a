"""Notes a sender without recovery journals may have left stuck by a lost packet.

rtpmidid and npm ``rtpmidi`` send no journal: after a loss the hub knows packets went
missing but not what they carried, so a lost NoteOff leaves its note sounding at
everyone behind the hub. With ``release_after`` (opt-in, per port) each note such a
sender held when the loss was seen becomes a suspect; a suspect it neither ends nor
strikes again within ``release_after`` seconds, and still holds, is released then.
Sans-IO: ``deadline`` is part of the session's next deadline, and its table's ``tick``
asks ``due(now)`` (``Session.release_unrepaired``).
"""

from __future__ import annotations

from collections.abc import Iterable

from midihub.midi import messages as m
from midihub.midi.held import NoteState
from midihub.midi.state import Effect, classify
from midihub.rtp.commands import Command


class UnrepairedNotes:
    """Suspect notes of one sender, each with the time it is released if still held."""

    __slots__ = ("_due", "deadline")

    def __init__(self) -> None:
        self._due: dict[tuple[int, int], float] = {}  # (channel, note) -> release time
        self.deadline: float | None = None  # the earliest of them; None: no suspects

    def lost(self, held: NoteState, release_at: float) -> None:
        """A loss nothing can repair: every note ``held`` now is a suspect (one already
        suspect keeps its earlier time)."""
        due = self._due
        for channel, state in held.channels.items():
            for note in state.notes:
                due.setdefault((channel, note), release_at)
        if due:
            self.deadline = min(due.values())

    def heard(self, commands: Iterable[Command]) -> None:
        """What the sender played after the loss: a note it ends or strikes again is no
        longer a suspect (its own NoteOff arrived, or it is held anew)."""
        due = self._due
        for _, message in commands:
            effect, channel, note, _ = classify(message)
            if effect is Effect.NOTE_ON or effect is Effect.NOTE_OFF:
                due.pop((channel, note), None)
        if not due:
            self.deadline = None

    def due(self, held: NoteState, now: float) -> list[Command]:
        """The NoteOffs for suspects whose time has come and that ``held`` still
        holds; ``held`` is updated and they are forgotten."""
        if self.deadline is None or now < self.deadline:
            return []
        out: list[Command] = []
        for key, at in sorted(self._due.items()):
            if at <= now:
                del self._due[key]
                if held.holds(*key):
                    out.append((0, m.note_off(*key)))
        held.update(out)
        self.deadline = min(self._due.values(), default=None)
        return out

    def clear(self) -> None:
        self._due.clear()
        self.deadline = None
