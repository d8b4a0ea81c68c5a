"""What the sans-IO protocol reports to its caller. One dataclass per happening."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from midihub.rtp.commands import Command
from midihub.rtp.recovery import Journal

if TYPE_CHECKING:
    from midihub.rtp.session import Session


@dataclass(slots=True)
class Event:
    session: Session


@dataclass(slots=True)
class PeerJoined(Event):
    """Both handshakes are done: the session can carry MIDI."""


@dataclass(slots=True)
class MidiReceived(Event):
    """Complete MIDI messages (SysEx reassembled) with their delta times, in order."""

    commands: list[Command]
    # Set when packets were lost just before this one and it carried a recovery
    # journal: the receiver repairs its state from it before playing ``commands``.
    journal: Journal | None = None


@dataclass(slots=True)
class LatencyMeasured(Event):
    """A CK exchange finished; ``rtt`` in seconds (0.1 ms resolution, the CK clock's)."""

    rtt: float


@dataclass(slots=True)
class PacketsLost(Event):
    """A gap in the peer's RTP sequence numbers: ``count`` packets never arrived."""

    count: int


@dataclass(slots=True)
class PeerLeft(Event):
    """The session is over. ``reason``: bye, timeout, rejected, no-answer, closed."""

    reason: str
