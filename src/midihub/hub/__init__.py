"""The hub's domain: endpoints, routing and (later) note state. No I/O."""

from midihub.hub.endpoint import Endpoint
from midihub.hub.guest import Guest
from midihub.hub.hub import Hub, Outgoing, Reconfigured, display_address, participant_id
from midihub.hub.notes import NoteState, NoteTracker
from midihub.hub.router import Router

__all__ = [
    "Endpoint",
    "Guest",
    "Hub",
    "NoteState",
    "NoteTracker",
    "Outgoing",
    "Reconfigured",
    "Router",
    "display_address",
    "participant_id",
]
