"""What a participant sends, on its way into the hub: the same caps for every transport.

An RTP session's packets and a browser's WebSocket frames both pass one ``Intake``
(one per participant) before the hub hears them, so a SysEx is reassembled within
``max_sysex`` and held to ``sysex_rate`` whoever sends it, and each refusal is counted
on the port's counters under the same ``Drop`` reasons (docs/security.md).
"""

from __future__ import annotations

from midihub.rtp.commands import Command, SysexAssembler
from midihub.rtp.limits import Counters, Drop, Limits, TokenBucket


class Intake:
    """One participant's SysEx assembler, its size cap and its byte-rate bucket."""

    __slots__ = ("_budget", "_counters", "_sysex")

    def __init__(self, limits: Limits, counters: Counters, now: float) -> None:
        self._sysex = SysexAssembler(limits.max_sysex)
        self._budget = TokenBucket(limits.sysex_rate, max(limits.max_sysex, 1), now)
        self._counters = counters

    def configure(self, limits: Limits, now: float) -> None:
        """New ``[limits]`` (a reload), live: the length cap applies from the next
        segment; the rate bucket keeps what this participant already spent."""
        self._sysex.max_size = limits.max_sysex
        self._budget.configure(limits.sysex_rate, max(limits.max_sysex, 1), now)

    @property
    def buffered(self) -> int:
        """Bytes held for a SysEx being assembled (at most ``max_sysex``)."""
        return self._sysex.buffered

    def packet_lost(self) -> None:
        """A sequence gap: a SysEx open across it is unusable (dropped whole)."""
        before = self._sysex.too_long, self._sysex.incomplete
        self._sysex.packet_lost()
        self._count_drops(*before)

    def accept(self, commands: list[Command], now: float) -> list[Command]:
        """``commands`` as the hub may hear them: complete SysEx only (segments joined),
        none longer than ``max_sysex`` and none beyond the participant's ``sysex_rate``;
        every other message passes untouched, in order."""
        for _, message in commands:
            if message[0] in (0xF0, 0xF7):
                break
        else:
            return commands  # the common case: no SysEx
        out: list[Command] = []
        sysex = self._sysex
        for delta, message in commands:
            if message[0] not in (0xF0, 0xF7):
                out.append((delta, message))
                continue
            starts = message[0] == 0xF0
            if (sysex.skipping and not starts) or len(message) > sysex.max_size:
                before = sysex.too_long, sysex.incomplete
                sysex.push(message)  # the rest of a SysEx we gave up on, or too long
                self._count_drops(*before)  # whatever the rate: it could never pass
                continue
            if not self._budget.take(len(message), now):
                self._counters.drop(Drop.SYSEX_RATE)
                if not (starts and message[-1] == 0xF7):
                    sysex.abort()  # the rest of this SysEx goes with it
                continue
            before = sysex.too_long, sysex.incomplete
            whole = sysex.push(message)
            self._count_drops(*before)
            if whole is not None:
                out.append((delta, whole))
        return out

    def _count_drops(self, too_long: int, incomplete: int) -> None:
        """Count, as drop reasons, what the assembler gave up since these counts."""
        if self._sysex.too_long != too_long:
            self._counters.drop(Drop.SYSEX_TOO_LONG)
        if self._sysex.incomplete != incomplete:
            self._counters.drop(Drop.SYSEX_INCOMPLETE)
