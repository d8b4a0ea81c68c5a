"""What the sans-IO protocol reports to its caller. One dataclass per happening.

Events are plain values: who (a ``Who``: ids, name, address), numbers, messages.
(Not frozen: on the packet path a frozen dataclass costs 0.4 µs more per event,
about 2 % of a forwarded datagram; nothing mutates them.)
They never hand out a live session, so a listener (log, API, monitor, metrics,
recorder) cannot reach into protocol state, and it may keep an event as long as it
likes. To ask about a participant now, listeners go through the hub's queries
(``Endpoint.participants``), which answer with the ``Peer`` face below.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from midihub.midi.held import NoteState
from midihub.rtp.commands import Command
from midihub.rtp.recovery import Journal


@dataclass(frozen=True, slots=True)
class Who:
    """A participant as events name it: a snapshot taken when it joined."""

    public_id: str  # random, drawn by the hub; unique on its port (never the SSRC)
    name: str  # as it introduced itself, cleaned (no control characters)
    address: tuple[Any, ...]  # (host, port, ...) as the socket layer gives it
    transport: str  # rtp, browser...


class Peer(Protocol):
    """What the hub's queries (API, monitor, panic) may know of a participant now."""

    @property
    def who(self) -> Who:
        """Its identity, as its events carry it."""

    @property
    def public_id(self) -> str:
        """Random, drawn by the hub: safe to publish (unlike an SSRC)."""

    @property
    def name(self) -> str:
        """As the participant introduced itself, cleaned (no control characters)."""

    @property
    def address(self) -> tuple[Any, ...]:
        """Where it is: ``(host, port, ...)`` as the socket layer gives it."""

    @property
    def transport(self) -> str:
        """``rtp`` (an RTP MIDI session, a replay or hub link among them), ``browser``..."""

    @property
    def joined_at(self) -> float | None: ...

    @property
    def created(self) -> float: ...

    @property
    def rtt(self) -> float | None: ...

    @property
    def packets_received(self) -> int: ...

    @property
    def packets_lost(self) -> int: ...

    @property
    def held(self) -> NoteState:
        """What it holds down now (notes, pedals, bend): released when it goes."""


class LeaveReason(enum.StrEnum):
    """Why a participant is gone (a ``str``: logs and the API show the value)."""

    BYE = "bye"  # it said so
    TIMEOUT = "timeout"  # silent, or stopped answering clock syncs
    REJECTED = "rejected"  # our invitation was refused
    NO_ANSWER = "no-answer"  # our invitation was never answered
    HANDSHAKE_TIMEOUT = "handshake-timeout"  # never proved its address
    EVICTED = "evicted"  # an unfinished invitation made room for another
    CLOSED = "closed"  # we ended it
    REMOVED = "removed"  # its port was removed by a reload
    SHUTDOWN = "shutdown"  # the hub is stopping
    OVERFLOW = "overflow"  # it could not keep up with what it was sent
    LIMIT = "limit"  # it broke a limit (message rate, frame size)
    UNRESOLVED = "unresolved"  # an outbound link's remote name did not resolve
    FULL = "full"  # it proved its address when the port had no place left (max_participants)


@dataclass(slots=True)
class Event:
    who: Who


@dataclass(slots=True)
class PeerJoined(Event):
    """Both handshakes are done and its address is proven: it can carry MIDI."""


@dataclass(slots=True)
class MidiReceived(Event):
    """Complete MIDI messages (SysEx reassembled) with their delta times, in order:
    after a loss, first those ``repaired`` from the packet's recovery journal (the
    session already brought what the participant holds up to date)."""

    commands: list[Command]
    repaired: int = 0  # how many of ``commands`` came from the journal
    journal: Journal | None = None  # the journal read after a loss, for observers


@dataclass(slots=True)
class LatencyMeasured(Event):
    """A CK exchange finished; ``rtt`` in seconds (0.1 ms resolution, the CK clock's)."""

    rtt: float


@dataclass(slots=True)
class PacketsLost(Event):
    """A gap in the peer's RTP sequence numbers: ``count`` packets never arrived."""

    count: int


@dataclass(slots=True)
class NotesReleased(Event):
    """Notes a sender without recovery journals still held ``release_after`` seconds
    after a loss (their NoteOff may have been lost): the NoteOffs, for the hub to send
    its listeners as it sends a departure's release. Its held state is updated."""

    release: tuple[Command, ...]


@dataclass(slots=True)
class PeerLeft(Event):
    """The participant is gone, for ``reason``. ``joined``: it had been a participant
    (False: an invitation of ours that failed). ``release``: the NoteOffs, pedal-ups
    and bend centre for what it still held, for the hub to send its listeners."""

    reason: LeaveReason
    joined: bool = True
    release: tuple[Command, ...] = ()
