"""What the Network MIDI 2.0 host reports to its caller: plain values, never a live
session (like ``midihub.rtp.events``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Address = tuple[Any, ...]
"""A socket address as asyncio gives it: ``(host, port)`` or ``(host, port, flow, scope)``."""

UmpMessage = tuple[int, ...]
"""One Universal MIDI Packet: 1, 2, 3 or 4 32-bit words."""


@dataclass(slots=True)
class Midi2Event:
    addr: Address


@dataclass(slots=True)
class Invited(Midi2Event):
    """An invitation that passed authentication (or needed none). The caller answers
    with ``Midi2Host.accept`` or ``Midi2Host.refuse``."""

    name: str  # cleaned: no control characters, at most 98 octets
    product_id: str


@dataclass(slots=True)
class UmpReceived(Midi2Event):
    """UMP messages from a client, in its order, each exactly once."""

    messages: list[UmpMessage]


@dataclass(slots=True)
class RttMeasured(Midi2Event):
    """A Ping answered: round trip in seconds."""

    rtt: float


@dataclass(slots=True)
class SessionReset(Midi2Event):
    """The client's numbering starts again (its Session Reset, or its Invitation while
    joined): what it sent before may be lost for good (``lost``: the UMP Data commands
    known missing or held for a gap, dropped), so nothing open (a SysEx) may continue."""

    lost: int


@dataclass(slots=True)
class UmpLost(Midi2Event):
    """A gap in the client's numbering that neither FEC nor retransmission filled was
    skipped: ``lost`` UMP Data commands are gone for good (a NoteOff among them would
    leave a note stuck, an open SysEx would be glued), and what came after them follows
    in the next ``UmpReceived``."""

    lost: int


@dataclass(slots=True)
class Departed(Midi2Event):
    """A joined client is gone: Bye either way, silence, or loss it could not repair
    too often (the host sent Bye 0x03). ``reason`` is the Bye reason code; ``proven`` False: it
    never answered the Pings that prove its address and was ended without a Bye."""

    reason: int
    by_client: bool
    proven: bool = True
