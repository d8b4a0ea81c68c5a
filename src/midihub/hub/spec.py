"""What the hub is asked to be: plain frozen values built from the configuration.

The hub and the socket layer take these and know nothing of how they were written
(TOML, the legacy JSON, pydantic validation: all in ``midihub.config``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from midihub.rtp import Limits

Role = Literal["in", "out", "room"]


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One hub port pair: a room, or one side of a group."""

    port: int
    owner: str  # the group or room name
    role: Role
    journal: bool = True  # send recovery journals to this port's peers
    record: Literal["off", "auto"] = "off"
    browser: bool = False  # browsers may join it over WebSocket (/play)
    key: str | None = None  # ... when they know this
    release_after: float | None = None  # seconds: notes stuck by a loss without journal
    midi2: int | None = None  # its Network MIDI 2.0 UDP port (``key``: the shared secret)

    def __repr__(self) -> str:  # never the key (logs, tracebacks)
        midi2 = "" if self.midi2 is None else f", midi2={self.midi2}"
        return f"EndpointSpec({self.port}, {self.label!r}, browser={self.browser}{midi2})"

    @property
    def label(self) -> str:
        return self.owner if self.role == "room" else f"{self.owner} {self.role}"


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A remote RTP MIDI endpoint the hub invites to one of its ports."""

    remote: str  # HOST:PORT as written, the link's key
    host: str
    remote_port: int
    port: int  # the hub port it joins
    name: str | None = None
    journal: bool = True

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.remote_port

    @property
    def label(self) -> str:
        return self.name or self.remote


@dataclass(frozen=True, slots=True)
class Midi2Spec:
    """``[midi2]``: what every Network MIDI 2.0 port of the hub shares."""

    fec: int = 3  # previous UMP Data commands repeated in each datagram
    ping_interval: float = 5.0  # seconds between pings (the RTT the API shows)
    product_id: str = ""  # the hub's ProductInstanceId; empty: the hub name and the port
    users: tuple[tuple[str, str], ...] = ()  # (user, password) for user authentication

    def __repr__(self) -> str:  # never a password (logs, tracebacks)
        return f"Midi2Spec(fec={self.fec}, users={len(self.users)})"


@dataclass(frozen=True, slots=True)
class HubSpec:
    name: str = "midihub"
    bind: str = "0.0.0.0"
    timeout: float = 30.0
    ck_interval: float = 10.0
    journal: bool = True
    journal_off: tuple[str, ...] = ()
    max_participants: int = 64
    limits: Limits = field(default_factory=Limits)
    endpoints: tuple[EndpointSpec, ...] = ()
    links: tuple[LinkSpec, ...] = ()  # the configured ``[[links]]``
    fleet_links: tuple[LinkSpec, ...] = ()  # planned from the fleet directory (fleet/mesh.py)
    midi2: Midi2Spec = field(default_factory=Midi2Spec)

    def group_ports(self, owner: str) -> tuple[int, int] | None:
        """A group's (in, out) ports; None for a room or an unknown name."""
        ports = {e.role: e.port for e in self.endpoints if e.owner == owner}
        if "in" in ports and "out" in ports:
            return ports["in"], ports["out"]
        return None


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """This hub's place in a fleet (``[fleet]``): the shared PostgreSQL database, its
    name there, the address the other hubs reach its ports at, and the directory's timers
    (seconds). The URL may hold a password: ``repr`` and ``display`` leave it out."""

    database: str
    name: str
    address: str
    heartbeat: float = 5.0
    down_after: float = 15.0
    expire_after: float = 600.0

    def __repr__(self) -> str:  # never the password (logs, tracebacks)
        return (
            f"FleetSpec({self.display!r}, name={self.name!r}, address={self.address!r}, "
            f"heartbeat={self.heartbeat}, down_after={self.down_after})"
        )

    @property
    def display(self) -> str:
        """The database as logs may show it: user@host:port/name, no password."""
        return redact_url(self.database)


def redact_url(url: str) -> str:
    """A database URL without its password (nor any query, which may carry one)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(an unreadable database URL)"
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or "(local socket)"
    return f"{user}{host}{f':{port}' if port else ''}{parts.path or '/'}"
