"""Which ports hear what: groups send ``in`` → ``out``; a room sends to itself,
never back to the sender. Pure data, rebuilt on every reload."""

from __future__ import annotations

from collections.abc import Iterable

from midihub.hub.spec import EndpointSpec


class Router:
    """``targets(port)``: the ports that receive MIDI arriving on ``port``."""

    __slots__ = ("_routes",)

    def __init__(self, specs: Iterable[EndpointSpec]) -> None:
        routes: dict[int, tuple[int, ...]] = {}
        ins: dict[str, int] = {}
        outs: dict[str, int] = {}
        for spec in specs:
            routes.setdefault(spec.port, ())
            if spec.role == "room":
                routes[spec.port] = (spec.port,)
            elif spec.role == "in":
                ins[spec.owner] = spec.port
            else:
                outs[spec.owner] = spec.port
        for owner, port in ins.items():
            if owner in outs:
                routes[port] = (outs[owner],)
        self._routes = routes

    def targets(self, port: int) -> tuple[int, ...]:
        """Destination ports; the sender's own session is always excluded by the caller."""
        return self._routes.get(port, ())
