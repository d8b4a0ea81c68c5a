"""One Network MIDI 2.0 UDP port on a real socket: a ``UdpPort`` and the sans-IO
``Midi2Port`` (its ``Midi2Host`` and clients). ``HubServer`` owns these, flushes them
with the hub's RTP ports and keeps their timers in its one timer."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from midihub.hub import Hub
from midihub.hub.midi2 import Midi2Port
from midihub.hub.spec import EndpointSpec
from midihub.net.udp import UdpPort
from midihub.rtp import Address


class Midi2Server:
    """``flush`` is the ``HubServer``'s: what a datagram made the hub send (RTP to the
    room, UMP to other clients) goes out before the next read."""

    def __init__(
        self,
        hub: Hub,
        loop: asyncio.AbstractEventLoop,
        bind: str,
        spec: EndpointSpec,
        rng: random.Random,
        flush: Callable[[], None],
        on_forward: Callable[[float], None] | None = None,
    ) -> None:
        assert spec.midi2 is not None
        self.hub = hub
        self._loop = loop
        self._flush = flush
        self.on_forward = on_forward
        self.port = Midi2Port(hub, spec.midi2, spec, rng, loop.time())
        self.socket = UdpPort(loop, bind, spec.midi2, self._receive)

    @property
    def number(self) -> int:
        return self.port.midi2_port

    def open(self) -> None:
        self.socket.open()

    def _receive(self, batch: list[tuple[bytes, Address]]) -> None:
        started = time.perf_counter()
        now = self._loop.time()
        forwarded = self.hub.messages_forwarded
        receive = self.port.receive
        for data, addr in batch:
            receive(data, addr, now)
        self._flush()
        if self.on_forward is not None and self.hub.messages_forwarded != forwarded:
            self.on_forward(time.perf_counter() - started)

    def send_all(self) -> float | None:
        """Everything the host has to send (a datagram the socket refuses is counted);
        returns the host's next deadline."""
        port, sock = self.port, self.socket
        port.dirty = False
        for data, addr in port.datagrams_to_send():
            if not sock.sendto(data, addr):
                port.send_errors += 1
        return port.next_deadline()

    def close(self) -> None:
        self.socket.close()

    def __repr__(self) -> str:
        return f"<Midi2Server {self.port!r}>"
