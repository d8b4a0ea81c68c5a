"""A fleet of hubs sharing one PostgreSQL database (``[fleet]``).

``Fleet`` (directory.py) keeps this hub's row in the shared directory and reads every
hub's back; ``store.py`` holds the SQL (psycopg, loaded only when a fleet starts); the
records are plain frozen values any module may import without the driver. The settings
come in as ``midihub.hub.spec.FleetSpec``, built by ``HubConfig.fleet_spec()`` (a value
of its own, not part of ``HubSpec``: the hub's routing does not depend on it).
"""

from midihub.fleet.directory import Fleet, FleetCounters, Snapshot, hub_snapshot
from midihub.fleet.records import HubRecord, ParticipantRecord, RoomRecord
from midihub.hub.spec import FleetSpec

__all__ = [
    "Fleet",
    "FleetCounters",
    "FleetSpec",
    "HubRecord",
    "ParticipantRecord",
    "RoomRecord",
    "Snapshot",
    "hub_snapshot",
]
