"""One view of the fleet: every hub of the directory, as ``/api/fleet`` and
``midihub status --fleet`` show it.

Built from ``Fleet.hubs()`` (the last directory read, cached: no IO, so an answer never
waits for the database and never blocks the loop) and this hub's own fleet links. A hub
without ``[fleet]`` answers ``{"enabled": false}`` (200, not 404: the route exists, the
feature is off, and a client can tell that apart from an old hub without the route).
Times are the database server's (``started``, ``lastSeen``): no hub's clock is in them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from midihub.fleet.records import HubRecord

if TYPE_CHECKING:
    from midihub.fleet.directory import Fleet
    from midihub.hub import Hub

OFF: dict[str, Any] = {"enabled": False}


def _room_of(hub: HubRecord, port: int) -> str | None:
    return next((room.name for room in hub.rooms if port in room.ports), None)


def hub_row(hub: HubRecord, me: str) -> dict[str, Any]:
    return {
        "name": hub.name,
        "address": hub.address,
        "version": hub.version,
        "up": hub.up,
        "self": hub.name == me,
        "started": hub.started.isoformat(timespec="milliseconds"),
        "lastSeen": hub.last_seen.isoformat(timespec="milliseconds"),
        "rooms": [
            {"name": room.name, "kind": room.kind, "ports": list(room.ports)} for room in hub.rooms
        ],
        "participants": [
            {
                "id": p.id,
                "name": p.name,
                "hub": hub.name,
                "port": p.port,
                "room": _room_of(hub, p.port),
                "transport": p.transport,
                "latency": None if p.rtt_ms is None else round(p.rtt_ms, 1),
            }
            for p in hub.participants
        ],
    }


def link_rows(hubs: tuple[HubRecord, ...], hub: Hub) -> list[dict[str, Any]]:
    """This hub's fleet links (the ones it dials) and whether each is up."""
    rows = []
    for spec in hub.spec.fleet_links:
        link = hub.links.get((spec.remote, spec.port))
        other = next(
            (
                h
                for h in hubs
                if h.address == spec.host and any(spec.remote_port in r.ports for r in h.rooms)
            ),
            None,
        )
        rows.append(
            {
                "hub": None if other is None else other.name,
                "room": None if other is None else _room_of(other, spec.remote_port),
                "port": spec.port,
                "remote": spec.remote,
                "up": link is not None and link.up,
            }
        )
    return rows


def fleet_document(fleet: Fleet | None, hub: Hub) -> dict[str, Any]:
    """``/api/fleet``: the fleet as this hub last read it."""
    if fleet is None:
        return dict(OFF)
    hubs = fleet.hubs()
    me = fleet.spec.name
    return {
        "enabled": True,
        "name": me,
        "connected": fleet.connected,
        "error": fleet.error,
        "hubs": [hub_row(h, me) for h in hubs],
        "links": link_rows(hubs, hub),
    }


def participant_count(document: dict[str, Any]) -> int:
    return sum(len(h["participants"]) for h in document.get("hubs", ()))
