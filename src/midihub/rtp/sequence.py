"""Incoming RTP sequence numbers, per RFC 3550 Appendix A.1.

A gap of up to ``MAX_DROPOUT`` is counted as lost packets; a packet up to
``MAX_MISORDER`` behind is a duplicate or late and is dropped (a MIDI command
played late is worse than never). Anything further away is a jump (the peer
restarted its numbering, or a stray): the first such packet is dropped and
remembered, and only if the next one follows it does the count resynchronise —
so one stray packet cannot make thousands of packets "lost".
"""

from __future__ import annotations

from typing import Final

MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100
_MOD: Final = 0x10000


class SequenceTracker:
    """Where the next packet should be, and what the last one said about losses."""

    __slots__ = ("_bad", "expected", "resyncs")

    def __init__(self) -> None:
        self.expected: int | None = None  # the next sequence number in order
        self._bad: int | None = None  # what must follow a jump for it to count
        self.resyncs = 0

    @property
    def last(self) -> int | None:
        """The highest sequence number accepted in order (what RS reports)."""
        return None if self.expected is None else (self.expected - 1) % _MOD

    def accept(self, seq: int) -> int | None:
        """Packets lost just before ``seq`` (0: in order), or None to drop it."""
        expected = self.expected
        if expected is None:
            self.expected = (seq + 1) % _MOD
            return 0
        gap = (seq - expected) % _MOD
        if gap <= MAX_DROPOUT:
            self.expected = (seq + 1) % _MOD
            self._bad = None
            return gap
        if gap >= _MOD - MAX_MISORDER:
            return None  # a duplicate or a late packet
        if seq == self._bad:  # two in a row after a jump: the sender restarted
            self.expected = (seq + 1) % _MOD
            self._bad = None
            self.resyncs += 1
            return 1  # the packet dropped on probation
        self._bad = (seq + 1) % _MOD
        return None
