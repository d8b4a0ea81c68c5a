"""Sans-IO Network MIDI 2.0 (UDP, M2-124-UM): bytes and time in, events and datagrams
out, like ``midihub.rtp``. Nothing here opens a socket or reads a clock."""

from midihub.midi2.commands import ByeReason, Code, NakReason
from midihub.midi2.events import (
    Address,
    Departed,
    Invited,
    Midi2Event,
    RttMeasured,
    SessionReset,
    UmpLost,
    UmpMessage,
    UmpReceived,
)
from midihub.midi2.host import Midi2Host
from midihub.midi2.session import Count, Midi2Session, Midi2Settings, State

__all__ = [
    "Address",
    "ByeReason",
    "Code",
    "Count",
    "Departed",
    "Invited",
    "Midi2Event",
    "Midi2Host",
    "Midi2Session",
    "Midi2Settings",
    "NakReason",
    "RttMeasured",
    "SessionReset",
    "State",
    "UmpLost",
    "UmpMessage",
    "UmpReceived",
]
