"""What one participant is holding down: notes, pedals, pitch bend, per channel.

Kept by the participant's session (for an RTP peer, by the sans-IO ``Session``, which
also repairs it from recovery journals after a loss) or guest, from every message it
sends, so when it vanishes the hub releases exactly what it left pressed, and
nothing else. A held note is never released while its player is connected.
"""

from __future__ import annotations

from collections.abc import Iterable

from midihub.midi import messages as m
from midihub.midi.state import ChannelState, MidiState

__all__ = ["NoteState"]


class NoteState(MidiState):
    """Held notes and pedals of one source, all 16 channels, by the shared rules of
    ``midihub.midi.state`` (the journal sender follows the same ones)."""

    __slots__ = ()

    def update(self, commands: Iterable[tuple[int, bytes]]) -> None:
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

    def channels_held(self) -> dict[int, ChannelState]:
        """Channels with anything held, for monitors and the API."""
        return {ch: st for ch, st in sorted(self.channels.items()) if not st.idle()}

    def release(self) -> list[tuple[int, bytes]]:
        """The messages that undo everything held, and forget it: NoteOffs, then pedals
        up, then pitch bend centred."""
        out: list[tuple[int, bytes]] = []
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
