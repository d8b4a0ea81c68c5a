"""One room across regions: the hub-to-hub links the fleet directory asks this hub for.

Rooms (and groups) with the same name on several up hubs are one room: every pair of
those hubs is joined by the existing loop-free links (``hub/links.py``: whatever arrives
over a hub link goes to local participants only), so a full mesh per room delivers each
message exactly once to every player, and never back to its sender.

The rule that makes it one link per pair: **the hub whose name sorts first (Python string
order, by code point) dials**, the other answers like any RTP MIDI responder. Both hubs
read the same directory, so both agree on who dials without talking to each other.

- A **room** ``R`` on hubs A < B: A's room port invites B's room port. One link.
- A **group** ``G`` (in, out) on hubs A < B: two links, both dialed by A. A's *out* port
  invites B's *in* port (what A's in-port players play reaches A's out-port listeners
  and, over the link, B's in port, which B routes to its out port), and A's *in* port
  invites B's *out* port (B's out port sends what B's in-port players play to A's in
  port, which A routes to its out port). Each in-port player is heard once on every
  hub's out port; nothing from a link goes back out over another link.

A room on one hub and a group of the same name on another are not joined (they route
differently). Configured ``[[links]]`` always win: a planned link with the same key
(remote, local port) as a configured one is left out, and applying a plan never changes
the configured ones (``Hub._reconfigure_links``). ``plan_links`` is pure: records and
specs in, specs out; ``Mesh`` applies its plans through the hub's one reconfigure path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Protocol

from midihub.fleet.records import HubRecord
from midihub.hub.spec import HubSpec, LinkSpec

log = logging.getLogger("midihub.fleet")

FLEET_LABEL = "fleet"
"""First word of a planned link's name (its label in logs and ``status``)."""


def dials(me: str, other: str) -> bool:
    """Whether this hub (``me``) is the one of the pair that invites ``other``."""
    return me < other


def remote_text(host: str, port: int) -> str:
    """``HOST:PORT`` as ``[[links]] remote`` is written (``[v6]:port`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _link(hub: HubRecord, name: str, remote_port: int, local_port: int) -> LinkSpec:
    return LinkSpec(
        remote=remote_text(hub.address, remote_port),
        host=hub.address,
        remote_port=remote_port,
        port=local_port,
        name=f"{FLEET_LABEL} {hub.name} {name}",
    )


def _valid_port(port: int) -> bool:
    return 0 < port < 65535  # the data port is port + 1


def plan_links(me: str, hubs: Iterable[HubRecord], spec: HubSpec) -> tuple[LinkSpec, ...]:
    """The links this hub (named ``me`` in the fleet) must dial for the rooms and groups
    it shares with the up hubs of ``hubs``, given its own ``spec`` (its rooms now, not
    its possibly older directory row). Nothing until the directory lists this hub up, so two
    hubs link only once each sees the other. Sorted, so equal plans compare equal."""
    hubs = tuple(hubs)
    if not any(hub.name == me and hub.up for hub in hubs):
        return ()  # not (yet) listed up: the others would not dial this hub either
    rooms = {e.owner: e.port for e in spec.endpoints if e.role == "room"}
    configured = {(link.remote, link.port) for link in spec.links}
    planned: dict[tuple[str, int], LinkSpec] = {}
    for hub in hubs:
        if not hub.up or hub.name == me or not dials(me, hub.name) or not hub.address:
            continue
        for room in hub.rooms:
            if not all(_valid_port(port) for port in room.ports):
                continue
            links: list[LinkSpec] = []
            if room.kind == "room" and len(room.ports) == 1 and room.name in rooms:
                links.append(_link(hub, room.name, room.ports[0], rooms[room.name]))
            elif room.kind == "group" and len(room.ports) == 2:
                local = spec.group_ports(room.name)
                if local is not None and room.name not in rooms:
                    their_in, their_out = room.ports
                    my_in, my_out = local
                    links.append(_link(hub, room.name, their_in, my_out))
                    links.append(_link(hub, room.name, their_out, my_in))
            for link in links:
                key = (link.remote, link.port)
                if key not in configured:
                    planned.setdefault(key, link)
    return tuple(planned[key] for key in sorted(planned))


class Timer(Protocol):
    def cancel(self) -> object: ...


class Mesh:
    """Keeps the running hub's fleet links in step with the directory.

    ``changed`` is a ``Fleet`` listener (called on the loop after each directory read
    that changed something); ``planned`` is what a configuration reload passes through,
    so a reload and a directory change both reach the hub as one ``HubSpec`` through
    ``reconfigure`` (``HubServer.reconfigure``: the reload's own path). The hub is
    reconfigured only when the plan differs from the links it runs.

    After the database was away (``hold``), every hub shows down until it renews again,
    which may take it a retry back-off: for ``seconds`` the hubs that were up before keep
    their links (new ones are still made), so an outage never tears the mesh down; then
    the directory decides again."""

    def __init__(
        self,
        me: str,
        spec: Callable[[], HubSpec],
        reconfigure: Callable[[HubSpec], list[str]],
        *,
        clock: Callable[[], float] | None = None,
        call_later: Callable[[float, Callable[[], None]], Timer] | None = None,
    ) -> None:
        self.me = me
        self._spec = spec
        self._reconfigure = reconfigure
        self._clock = clock
        self._call_later = call_later
        self.hubs: tuple[HubRecord, ...] = ()  # the last directory read, as read
        self.applied = 0  # plans that changed the hub's links
        self._held: dict[str, HubRecord] = {}
        self._held_until = 0.0
        self._timer: Timer | None = None
        self._closed = False

    def hold(self, seconds: float) -> None:
        """The database was away: the hubs up in the last read keep their links for
        ``seconds`` whatever the next reads say."""
        if self._clock is None or self._call_later is None:
            return
        self._held = {h.name: h for h in self.hubs if h.up}
        self._held_until = self._clock() + seconds
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._call_later(seconds, self.apply)

    def close(self) -> None:
        """The hub stops: its links change no more."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def holding(self) -> bool:
        return bool(self._held) and self._clock is not None and self._clock() < self._held_until

    def seen(self) -> tuple[HubRecord, ...]:
        """The directory as planned from: the last read, with the held hubs up (as last
        seen up when the outage expired their rows meanwhile)."""
        if not self.holding:
            return self.hubs
        read = {h.name for h in self.hubs}
        missing = tuple(h for name, h in self._held.items() if name not in read)
        return missing + tuple(
            replace(h, up=True) if not h.up and h.name in self._held else h for h in self.hubs
        )

    def planned(self, spec: HubSpec) -> HubSpec:
        """``spec`` with the links the last directory read asks for."""
        return replace(spec, fleet_links=plan_links(self.me, self.seen(), spec))

    def changed(self, hubs: tuple[HubRecord, ...]) -> None:
        self.hubs = hubs
        self.apply()

    def apply(self) -> None:
        if self._closed:
            return
        spec = self._spec()
        wanted = self.planned(spec)
        before, after = set(spec.fleet_links), set(wanted.fleet_links)
        if before == after:
            return
        for problem in self._reconfigure(wanted):
            log.error("fleet: %s", problem)
        self.applied += 1
        for link in sorted(after - before, key=lambda link: (link.remote, link.port)):
            log.info("fleet: %s: port %d invites %s", link.label, link.port, link.remote)
        for link in sorted(before - after, key=lambda link: (link.remote, link.port)):
            log.info("fleet: %s: link from port %d removed", link.label, link.port)
