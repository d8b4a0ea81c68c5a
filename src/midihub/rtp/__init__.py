"""Sans-IO RTP MIDI (RFC 6295) and AppleMIDI sessions: bytes and time in, events and
datagrams out. Nothing here opens a socket or reads a clock."""

from midihub.rtp.commands import Command, encode_lists, encode_section
from midihub.rtp.errors import LocalProtocolError, ProtocolError
from midihub.rtp.events import (
    Event,
    LatencyMeasured,
    MidiReceived,
    PacketsLost,
    PeerJoined,
    PeerLeft,
)
from midihub.rtp.host import Host
from midihub.rtp.limits import Counters, Drop, Limits
from midihub.rtp.session import Address, Datagram, PortKind, Role, Session, State, Timing

__all__ = [
    "Address",
    "Command",
    "Counters",
    "Datagram",
    "Drop",
    "Event",
    "Host",
    "LatencyMeasured",
    "Limits",
    "LocalProtocolError",
    "MidiReceived",
    "PacketsLost",
    "PeerJoined",
    "PeerLeft",
    "PortKind",
    "ProtocolError",
    "Role",
    "Session",
    "State",
    "Timing",
    "encode_lists",
    "encode_section",
]
