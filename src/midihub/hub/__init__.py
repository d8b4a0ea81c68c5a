"""The hub's domain: endpoints, participants, routing, links and panic. No I/O."""

from midihub.hub.endpoint import Endpoint
from midihub.hub.guest import Guest
from midihub.hub.hub import Hub, Outgoing, Reconfigured, display_address, participant_id
from midihub.hub.router import Router

__all__ = [
    "Endpoint",
    "Guest",
    "Hub",
    "Outgoing",
    "Reconfigured",
    "Router",
    "display_address",
    "participant_id",
]
