"""Helpers shared by the benchmark runner, the load generator and the baseline relay."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/run.py`: the repo root is not on it
    sys.path.insert(0, str(ROOT))

from tests.ports import LOCALHOST as LOCALHOST  # noqa: E402  one free-port helper for both
from tests.ports import free_port_block as free_port_block  # noqa: E402
from tests.ports import free_tcp_port as free_tcp_port  # noqa: E402

MAX_IDS: Final = 16 * 128 * 127 * 2
"""Distinct MIDI messages the generator can tell apart (NoteOn/NoteOff x channel x note x
velocity): every message sent in one measurement step carries a unique one."""


def message(k: int) -> bytes:
    """The k-th benchmark message. Even k: NoteOn; k + 1: the matching NoteOff, so a sender
    holds at most one note and the hub's journals stay as small as in real playing."""
    pair = k >> 1
    note = pair & 0x7F
    velocity = (pair >> 7) % 127 + 1
    channel = (pair // (128 * 127)) & 0x0F
    status = (0x80 if k & 1 else 0x90) | channel
    return bytes((status, note, velocity))


def message_id(status: int, note: int, velocity: int) -> int:
    """Inverse of ``message``."""
    pair = ((status & 0x0F) * 127 + (velocity - 1)) * 128 + note
    return pair * 2 + (1 if status & 0xF0 == 0x80 else 0)


def parse_id(data: bytes) -> int:
    """The message id in an RTP MIDI packet (the hub's re-encoded one or the relay's copy of
    ours), or -1 for anything else (guard packets with an empty list, foreign MIDI)."""
    if len(data) < 16:
        return -1
    pos = 12 + 4 * (data[0] & 0x0F)  # CSRCs (nobody sends an extension here)
    flags = data[pos]
    if flags & 0x80:
        length = ((flags & 0x0F) << 8) | data[pos + 1]
        pos += 2
    else:
        length = flags & 0x0F
        pos += 1
    if length < 3:
        return -1
    if flags & 0x20:  # Z: a delta time precedes the first command
        while data[pos] & 0x80:
            pos += 1
        pos += 1
    if pos + 3 > len(data):
        return -1
    status = data[pos]
    if status & 0xE0 != 0x80:
        return -1
    velocity = data[pos + 2]
    if velocity == 0:
        return -1
    return message_id(status, data[pos + 1], velocity)


def udp_drops(ports: set[int]) -> dict[int, int]:
    """Datagrams the kernel dropped on each local IPv4 UDP port (receive buffer full),
    from /proc/net/udp; missing ports are left out."""
    drops: dict[int, int] = {}
    try:
        with open("/proc/net/udp") as table:
            next(table)
            for line in table:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if port in ports:
                    drops[port] = drops.get(port, 0) + int(fields[-1])
    except OSError:
        pass
    return drops


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, int(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]
