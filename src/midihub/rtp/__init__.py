"""Sans-IO RTP MIDI (RFC 6295) and AppleMIDI sessions: bytes and time in, events and
datagrams out. Nothing here opens a socket or reads a clock."""

from midihub.rtp.commands import Command, Section, encode_lists, encode_section, encode_sections
from midihub.rtp.errors import LocalProtocolError, ProtocolError
from midihub.rtp.events import (
    Event,
    LatencyMeasured,
    LeaveReason,
    MidiReceived,
    NotesReleased,
    PacketsLost,
    Peer,
    PeerJoined,
    PeerLeft,
    Who,
)
from midihub.rtp.limits import Counters, Drop, Limits
from midihub.rtp.session import Address, Datagram, PortKind, Role, Session, SessionSettings, State
from midihub.rtp.table import SessionTable

__all__ = [
    "Address",
    "Command",
    "Counters",
    "Datagram",
    "Drop",
    "Event",
    "LatencyMeasured",
    "LeaveReason",
    "Limits",
    "LocalProtocolError",
    "MidiReceived",
    "NotesReleased",
    "PacketsLost",
    "Peer",
    "PeerJoined",
    "PeerLeft",
    "PortKind",
    "ProtocolError",
    "Role",
    "Section",
    "Session",
    "SessionSettings",
    "SessionTable",
    "State",
    "Who",
    "encode_lists",
    "encode_section",
    "encode_sections",
]
