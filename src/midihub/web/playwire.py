"""The browser participants' wire format (docs/protocol.md, "Browser participants").

Browser → hub: a binary WebSocket message is one or more complete MIDI messages back
to back, each with its status byte (no running status, no partial message, no
undefined status). Hub → browser: two bytes (big-endian) naming the sender (an index
the connection's participant list gives, 0 for the hub itself), then the messages.
Two bytes, so that every participant in a browser's view has its own index (a port
holds at most 1024, a group's out port shows two ports) and a message costs one small
frame, never a resent list. JSON text messages carry the rest (hello, welcome,
participants, ping/pong, error).

Everything a browser can be refused for, or dropped for, is a member of a fixed set
(``Refusal``, ``Dropped``): those are the only keys of the counters ``/metrics`` shows.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from midihub.midi.messages import DATA_LENGTH, SYSEX_END, SYSEX_START, Message
from midihub.midi.parser import StreamParser
from midihub.rtp import Command

UNDEFINED_STATUS: Final = frozenset({0xF4, 0xF5, 0xF9, 0xFD})
HUB_SENDER: Final = 0
SENDER_BYTES: Final = 2
MAX_SENDER: Final = (1 << (8 * SENDER_BYTES)) - 1


class _Reason(enum.Enum):
    """A reason as (metric label, WebSocket close code or 0, message for the page)."""

    @property
    def label(self) -> str:
        return str(self.value[0])

    @property
    def code(self) -> int:
        return int(self.value[1])

    @property
    def message(self) -> str:
        return str(self.value[2])


class Refusal(_Reason):
    """Why a browser could not join: (metric label, WebSocket close code, message)."""

    ORIGIN = ("origin", 0, "this page's origin may not open a connection to this hub")
    PER_IP = ("per_ip", 0, "too many connections from your address")
    HELLO = ("hello", 4400, "the first message must be a hello with a name and a port")
    NOT_OPEN = ("not_open", 4404, "that port is not open to browsers")
    KEY = ("key", 4403, "wrong or missing key for that port")
    FULL = ("full", 4409, "that port has no room for another browser")


class Dropped(_Reason):
    """What a joined browser lost, or why it was disconnected."""

    MALFORMED = ("malformed", 0, "a message that is not complete MIDI was dropped")
    RATE = ("rate", 0, "messages beyond the rate limit were dropped")
    LISTEN_ONLY = ("listen_only", 0, "this port only listens: what you play is not sent")
    FRAME_SIZE = ("frame_size", 1009, "a message was larger than the hub accepts")
    FLOOD = ("flood", 4429, "disconnected: too many refused messages")
    OVERFLOW = ("overflow", 4503, "disconnected: your browser did not keep up with the room")
    TIMEOUT = ("timeout", 4408, "disconnected: your browser stopped answering pings")
    GONE = ("gone", 4410, "the hub closed this port to browsers")
    STOPPING = ("stopping", 1001, "the hub is stopping")


GOODBYES: Final = frozenset({Dropped.GONE, Dropped.STOPPING})
"""The hub's own reasons to let a browser go: said to it, not counted as drops."""


@dataclass
class PlayCounters:
    """Totals for ``/metrics``; keys only ever come from the enums above."""

    refused: dict[Refusal, int] = field(default_factory=dict)
    dropped: dict[Dropped, int] = field(default_factory=dict)
    joined: int = 0  # browser participants now

    def refuse(self, reason: Refusal) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def drop(self, reason: Dropped) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def parse_frame(data: bytes) -> list[Message] | None:
    """The complete MIDI messages making up ``data``, or None if it is anything else
    (empty, running status, a cut message, a stray F7, an undefined status): the
    project's stream parser reads it, and what it read must be exactly what came."""
    if not data or data[0] < 0x80:
        return None
    parser = StreamParser()
    messages = parser.feed(data)
    if parser.dropped_bytes or sum(len(m) for m in messages) != len(data):
        return None  # running status (bytes added), a cut or aborted message
    position = 0
    for message in messages:
        status = message[0]
        if status in UNDEFINED_STATUS or data[position : position + len(message)] != message:
            return None  # reordered: a real-time byte inside a message
        if status == SYSEX_START and message[-1] != SYSEX_END:
            return None
        if DATA_LENGTH[status] >= 0 and len(message) != DATA_LENGTH[status] + 1:
            return None
        position += len(message)
    return messages


def encode_frame(sender: int, commands: Sequence[Command]) -> bytes:
    """Hub → browser: the sender's index, then the messages."""
    out = bytearray(sender.to_bytes(SENDER_BYTES, "big"))
    for _, message in commands:
        out += message
    return bytes(out)
