"""The hub's domain: endpoints, routing and (later) note state. No I/O."""

from midihub.hub.endpoint import Endpoint
from midihub.hub.guest import Guest
from midihub.hub.hub import Hub, Outgoing, Reconfigured, display_address, participant_id
from midihub.hub.notes import NoteState
from midihub.hub.router import Router

__all__ = [
    "Endpoint",
    "Guest",
    "Hub",
    "NoteState",
    "Outgoing",
    "Reconfigured",
    "Router",
    "display_address",
    "participant_id",
]
