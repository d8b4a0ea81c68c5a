"""The only layer with sockets: UDP port pairs and the server that runs a Hub on them."""

from midihub.net.server import HubServer
from midihub.net.udp import BindError, PortPair

__all__ = ["BindError", "HubServer", "PortPair"]
