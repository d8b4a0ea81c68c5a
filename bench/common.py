"""Helpers shared by the benchmark runner, the load generator and the baseline relay."""

from __future__ import annotations

import socket
from typing import Final

LOCALHOST: Final = "127.0.0.1"
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


def port_pair_free(port: int, host: str = LOCALHOST) -> bool:
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
        ):
            a.bind((host, port))
            b.bind((host, port + 1))
    except OSError:
        return False
    return True


def free_port_block(count: int, start: int = 21000, stop: int = 60000) -> list[int]:
    """``count`` even control ports P (with P + 1) that are free now, from one region."""
    ports: list[int] = []
    port = start
    while len(ports) < count:
        if port >= stop:
            raise RuntimeError("not enough free UDP port pairs")
        if port_pair_free(port):
            ports.append(port)
        port += 2
    return ports


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


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
