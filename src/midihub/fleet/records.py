"""What the fleet directory holds, as plain frozen values (no database here: the pure
planners and the views import these without psycopg)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """A room (``ports == (port,)``) or a group (``ports == (in, out)``) of a hub."""

    name: str
    kind: Literal["room", "group"]
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ParticipantRecord:
    """A player on a hub (hub-to-hub links are not listed): ``id`` is the hub's
    ``PORT-publicid``, ``rtt_ms`` its latest round trip (None before the first)."""

    id: str
    name: str
    port: int
    transport: str
    rtt_ms: float | None


@dataclass(frozen=True, slots=True)
class HubRecord:
    """One hub as the directory last read it. ``started`` and ``last_seen`` are the
    database server's times (never a hub's clock); ``up``: it renewed within its own
    ``down_after``, by the server's clock."""

    name: str
    address: str
    version: str
    started: datetime
    last_seen: datetime
    up: bool
    rooms: tuple[RoomRecord, ...]
    participants: tuple[ParticipantRecord, ...]
