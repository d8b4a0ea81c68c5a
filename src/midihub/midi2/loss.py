"""UMP Data sequence numbers both ways: what we sent (for FEC and retransmission) and
what we received (duplicates dropped, early arrivals held until the gap fills).

Sequence numbers are 16 bits and wrap; comparisons are by signed 16-bit difference.
An empty UMP Data command (a keep-alive) takes a number like any other (amidi2net,
Microsoft): it carries nothing to deliver but closes the gap before it.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Generic, TypeVar

T = TypeVar("T")

MOD: Final = 0x10000
MAX_AHEAD: Final = 256  # commands held past a gap (at most 1 KiB each); further: dropped


def diff(a: int, b: int) -> int:
    """``a - b`` as a signed 16-bit distance."""
    d = (a - b) % MOD
    return d - MOD if d >= MOD // 2 else d


class SendHistory(Generic[T]):
    """Our UMP Data commands (whatever the sender keeps of each: the session keeps them
    encoded, so FEC copies cost a join), newest last, at most ``size`` of them."""

    __slots__ = ("_entries", "next_seq")

    def __init__(self, size: int) -> None:
        self.next_seq = 0
        self._entries: deque[tuple[int, T]] = deque(maxlen=max(1, size))

    def add(self, item: T) -> int:
        """File ``item`` under the next sequence number (``next_seq`` before the call)."""
        seq = self.next_seq
        self._entries.append((seq, item))
        self.next_seq = (seq + 1) % MOD
        return seq

    def before(self, seq: int, count: int) -> list[tuple[int, T]]:
        """Up to ``count`` commands just before ``seq``, oldest first (the FEC part).
        The history holds consecutive numbers, so positions are arithmetic."""
        entries = self._entries
        if count <= 0 or not entries:
            return []
        end = len(entries) - diff(self.next_seq, seq)  # index of ``seq`` itself
        if end <= 0 or end > len(entries):
            return []
        return [entries[i] for i in range(max(0, end - count), end)]

    def since(self, seq: int, count: int) -> list[tuple[int, T]] | None:
        """Commands from ``seq`` on (``count`` of them; 0: all we sent), or None if
        ``seq`` itself is no longer (or not yet) here."""
        entries = self._entries
        start = len(entries) - diff(self.next_seq, seq)
        if not entries or start < 0 or start >= len(entries):
            return None
        stop = len(entries) if not count else min(len(entries), start + count)
        return [entries[i] for i in range(start, stop)]

    def resize(self, size: int) -> None:
        self._entries = deque(self._entries, maxlen=max(1, size))

    def reset(self) -> None:
        self._entries.clear()
        self.next_seq = 0

    def __len__(self) -> int:
        return len(self._entries)


class ReceiveWindow:
    """The next sequence number we deliver, and commands that came before their turn.

    The first command seen sets the start (amidi2net starts at 1, Zephyr at 0; after a
    Session Reset both start again)."""

    __slots__ = ("_ahead", "expected", "refused")

    def __init__(self) -> None:
        self.expected: int | None = None
        self.refused = 0  # commands dropped for being too far ahead
        self._ahead: dict[int, bytes] = {}  # UMP Data payloads by sequence number

    def accept(self, seq: int, payload: bytes) -> list[bytes] | None:
        """The commands now deliverable in order (possibly none: it came early), or None
        for a duplicate or one too far ahead (``refused`` counts those)."""
        expected = self.expected
        if expected is None:
            expected = seq
        d = diff(seq, expected)
        if d < 0 or seq in self._ahead:
            return None
        if d > 0:
            if d > MAX_AHEAD or len(self._ahead) >= MAX_AHEAD:
                self.refused += 1
                return None
            self.expected = expected
            self._ahead[seq] = payload
            return []
        out = [payload]
        seq = (seq + 1) % MOD
        while seq in self._ahead:
            out.append(self._ahead.pop(seq))
            seq = (seq + 1) % MOD
        self.expected = seq
        return out

    def gap(self) -> tuple[int, int] | None:
        """(first missing, how many up to the earliest held command), or None."""
        if not self._ahead or self.expected is None:
            return None
        expected = self.expected
        first = min(diff(seq, expected) for seq in self._ahead)
        return expected, first

    def skip(self) -> tuple[int, list[bytes]]:
        """Give the first gap up: (how many commands it lost, the held ones now
        deliverable in order, up to the next gap if any)."""
        gap = self.gap()
        if gap is None:
            return 0, []
        expected, missing = gap
        seq = (expected + missing) % MOD
        out: list[bytes] = []
        while seq in self._ahead:
            out.append(self._ahead.pop(seq))
            seq = (seq + 1) % MOD
        self.expected = seq
        return missing, out

    def reset(self) -> int:
        """Start again; returns how many commands were missing or held (now lost)."""
        gap = self.gap()
        lost = gap[1] + len(self._ahead) if gap else 0
        self.expected = None
        self._ahead.clear()
        return lost
