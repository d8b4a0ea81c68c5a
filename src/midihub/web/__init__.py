"""The hub's web side: JSON API (and dashboard), served from the hub's own loop."""

from midihub.web.api import Api, openapi_document
from midihub.web.server import WebServer

__all__ = ["Api", "WebServer", "openapi_document"]
