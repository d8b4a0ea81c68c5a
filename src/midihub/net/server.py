"""Runs a ``Hub`` on real sockets: one ``PortPair`` per endpoint, and one timer that is
re-armed after every flush for the hub's next deadline (guard packets, RS, clock
sync, retries), so nothing waits for a fixed tick. A flush only brings it forward
(``Hub.pending_deadline``: the top of each drained port's timer heap, no session asked,
never later than the real deadline); after it fires it is set for ``next_deadline()``.
Network MIDI 2.0 ports (``Midi2Server``) are flushed and timed with them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from midihub.hub import Endpoint, Hub
from midihub.hub.links import Link
from midihub.hub.spec import HubSpec
from midihub.net.udp import BindError, PortPair, address_family
from midihub.rtp import Address, LeaveReason, PortKind

if TYPE_CHECKING:  # Network MIDI 2.0 loads with the first such port (its own package)
    from midihub.hub.midi2 import Midi2Port
    from midihub.net.midi2 import Midi2Server

log = logging.getLogger("midihub.net")

MAX_SLEEP: Final = 1.0  # seconds; a safety net, the hub's deadlines normally come first
MIN_SLEEP: Final = 0.001  # never spin on a deadline already past


class HubServer:
    """``on_forward(seconds)``, when set, is told for each batch of datagrams that
    made the hub forward MIDI how long it took from reading them to sending."""

    def __init__(
        self,
        hub: Hub,
        loop: asyncio.AbstractEventLoop | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.hub = hub
        self.bind = hub.spec.bind
        self._loop = loop or asyncio.get_running_loop()
        self._rng = rng or random.SystemRandom()
        self._pairs: dict[int, PortPair] = {}
        self._midi2: dict[int, Midi2Server] = {}  # by Network MIDI 2.0 UDP port
        self._ticker: asyncio.TimerHandle | None = None
        self._ticker_at = 0.0
        self._lookups: set[asyncio.Task[None]] = set()
        self._failures: set[type[Exception]] = set()  # unexpected send errors already logged
        self.on_forward: Callable[[float], None] | None = None

    @property
    def pairs(self) -> dict[int, PortPair]:
        return self._pairs

    @property
    def midi2_ports(self) -> dict[int, Midi2Port]:
        """The Network MIDI 2.0 ports open now, by UDP port."""
        return {number: server.port for number, server in self._midi2.items()}

    def start(self) -> None:
        """Open every port; if one cannot be opened, close all and raise BindError."""
        try:
            for endpoint in self.hub.endpoints.values():
                self._open(endpoint)
            problems = self._sync_midi2(self._loop.time())
            if problems:
                raise BindError(0, problems[0])
        except BindError:
            self.close_sockets()
            raise
        self._rearm(self._next_deadline())

    def _sync_midi2(self, now: float) -> list[str]:
        """Network MIDI 2.0 ports as the hub's spec asks, at start and at each reload
        alike: a kept port takes the new settings live (``Midi2Port.configure``); a port
        gone, or now joined to another hub port, releases its clients and says Bye.
        Returns the ports that could not be opened."""
        hub = self.hub
        wanted = {
            spec.midi2: spec
            for spec in hub.spec.endpoints
            if spec.midi2 is not None and spec.port in hub.endpoints
        }
        for number, server in list(self._midi2.items()):
            spec = wanted.get(number)
            if spec is not None and spec.port == server.port.endpoint_port:
                server.port.configure(hub.spec, spec, now)
                continue
            server.port.close(LeaveReason.REMOVED, now)
            self.flush()  # its Byes, from its own socket
            server.close()
            del self._midi2[number]
        problems: list[str] = []
        for number, spec in wanted.items():
            if number in self._midi2:
                continue
            from midihub.net.midi2 import Midi2Server

            server = Midi2Server(
                hub, self._loop, self.bind, spec, self._rng, self.flush, self._forwarded
            )
            try:
                server.open()
            except BindError as error:
                problems.append(str(error))
                continue
            self._midi2[number] = server
        return problems

    def _forwarded(self, seconds: float) -> None:
        if self.on_forward is not None:
            self.on_forward(seconds)

    def _next_deadline(self) -> float | None:
        """The earliest of the hub's deadline and every Network MIDI 2.0 host's."""
        deadline = self.hub.next_deadline()
        for server in self._midi2.values():
            deadline = _earliest(deadline, server.port.next_deadline())
        return deadline

    def _open(self, endpoint: Endpoint) -> None:
        port = endpoint.port

        def receive(kind: PortKind, batch: list[tuple[bytes, Address]]) -> None:
            started = time.perf_counter()
            now = self._loop.time()
            hub = self.hub
            hub.stamp = time.monotonic()  # what a recording hears is stamped with it
            forwarded = hub.messages_forwarded
            hub_receive = hub.receive
            for data, addr in batch:
                hub_receive(port, kind, data, addr, now)
            self.flush()  # the batch's datagrams go out, then its events to the listeners
            if self.on_forward is not None and hub.messages_forwarded != forwarded:
                self.on_forward(time.perf_counter() - started)

        pair = PortPair(self._loop, self.bind, port, receive)
        pair.open()
        self._pairs[port] = pair

    def flush(self) -> None:
        pairs = self._pairs
        hub = self.hub
        for out in hub.drain():
            pair = pairs.get(out.endpoint.port)
            if pair is None:
                continue
            try:
                sent = pair.sendto(out.kind, out.data, out.addr)
            except Exception as error:  # a bug, not the network: the rest still go out
                sent = False
                if type(error) not in self._failures:  # logged once per kind, not a flood
                    self._failures.add(type(error))
                    log.exception("sending to %s on port %d failed", out.addr, pair.port)
            if not sent:
                out.endpoint.table.counters.send_errors += 1
        deadline = hub.pending_deadline
        for server in self._midi2.values():
            # Only a port something happened to may have new datagrams or an earlier
            # timer: the others' deadlines are in the timer already (as drain's are).
            if server.port.dirty:
                deadline = _earliest(deadline, server.send_all())
        if pairs:
            self._rearm(deadline)

    def _rearm(self, deadline: float | None) -> None:
        """Keep one timer, for the earliest of ``deadline`` and the one already set
        (the aioquic way: every flush may bring a deadline forward)."""
        now = self._loop.time()
        when = now + MAX_SLEEP if deadline is None else min(deadline, now + MAX_SLEEP)
        when = max(when, now + MIN_SLEEP)
        ticker = self._ticker
        if ticker is not None:
            if self._ticker_at <= when:
                return
            ticker.cancel()
        self._ticker_at = when
        self._ticker = self._loop.call_at(when, self._tick)

    def reconfigure(self, config: HubSpec) -> list[str]:
        """Apply a new config; returns problems (ports that could not be opened)."""
        problems: list[str] = []
        if config.bind != self.bind:
            problems.append(
                f"bind address change to {config.bind} needs a restart; kept {self.bind}"
            )
        config = dataclasses.replace(config, bind=self.bind)
        now = self._loop.time()
        change = self.hub.reconfigure(config, now)
        self.flush()  # BYs to the participants of removed ports, on their old sockets
        for endpoint in change.removed:
            pair = self._pairs.pop(endpoint.port, None)
            if pair is not None:
                pair.close()
        for endpoint in change.added:
            try:
                self._open(endpoint)
            except BindError as error:
                problems.append(str(error))
                self.hub.endpoints.pop(endpoint.port, None)
        problems += self._sync_midi2(now)
        self._rearm(self._next_deadline())  # new links are invited at once
        return problems

    def _tick(self) -> None:
        self._ticker = None
        try:
            now = self._loop.time()
            self.hub.tick(now)
            for server in list(self._midi2.values()):
                port = server.port
                when = port.next_deadline()
                if when is not None and when <= now:
                    port.tick(now)
            for link in self.hub.due_links(now):
                task = self._loop.create_task(self._connect_link(link))
                self._lookups.add(task)
                task.add_done_callback(self._lookups.discard)
            self.flush()
        finally:
            if self._pairs:
                self._rearm(self._next_deadline())

    async def _connect_link(self, link: Link) -> None:
        """Look the remote up (without blocking the hub) and invite it."""
        host, port = link.spec.address
        family = address_family(self.bind)
        flags = socket.AI_V4MAPPED if family == socket.AF_INET6 else 0
        try:
            infos = await self._loop.getaddrinfo(
                host, port, family=family, type=socket.SOCK_DGRAM, flags=flags
            )
        except OSError as error:
            log.warning("link %s: cannot resolve %s: %s", link.spec.label, host, error)
            self.hub.link_failed(link, self._loop.time(), LeaveReason.UNRESOLVED)
            return
        if link.attempts == 0 or link.attempts % 10 == 0:
            log.info(
                "link %s: inviting %s from port %d",
                link.spec.label,
                link.spec.remote,
                link.spec.port,
            )
        self.hub.connect_link(link, tuple(infos[0][4]), self._loop.time())
        self.flush()

    async def aclose(self) -> None:
        """``close``, then wait for the address lookups it cancelled."""
        lookups = list(self._lookups)
        self.close()
        await asyncio.gather(*lookups, return_exceptions=True)

    def close(self) -> None:
        """BY to everyone, then close every socket."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for task in self._lookups:
            task.cancel()
        self.hub.close(self._loop.time())
        self.flush()
        self.close_sockets()
        if self._ticker is not None:  # the last flush re-armed it
            self._ticker.cancel()
            self._ticker = None

    def close_sockets(self) -> None:
        for pair in self._pairs.values():
            pair.close()
        self._pairs.clear()
        for server in self._midi2.values():
            server.close()
        self._midi2.clear()

    def __repr__(self) -> str:
        return f"<HubServer {self.bind} ports={sorted(self._pairs)}>"


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)
