"""A UDP proxy for one RTP MIDI participant: adds delay and drops packets, both
ways, on 127.0.0.1. Pure asyncio; stands in for a bad Internet path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support import LOCALHOST, free_port_pair

Addr = tuple[str, int]


@dataclass
class PathRules:
    """What happens to datagrams going one way."""

    delay: float = 0.0
    drop: Callable[[bytes, int], bool] = lambda data, index: False
    passed: int = 0
    dropped: int = 0
    rtp_seen: int = 0


def is_rtp(data: bytes) -> bool:
    return not data.startswith(b"\xff\xff")


def every_nth_rtp(n: int) -> Callable[[bytes, int], bool]:
    """Drop every n-th RTP data packet (session packets always pass)."""

    def rule(data: bytes, rtp_index: int) -> bool:
        return is_rtp(data) and rtp_index % n == 0

    return rule


class _Side(asyncio.DatagramProtocol):
    def __init__(self, proxy: UdpProxy, offset: int) -> None:
        self.proxy = proxy
        self.offset = offset  # 0 control, 1 data
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.proxy.relay(self, data, addr)


@dataclass
class UdpProxy:
    """Listens on an even port pair; the participant talks to it as if it were
    ``target``; everything from ``target`` goes back to the participant."""

    target_port: int
    to_target: PathRules = field(default_factory=PathRules)
    to_peer: PathRules = field(default_factory=PathRules)
    port: int = 0
    peer: dict[int, Addr] = field(default_factory=dict)

    async def start(self) -> UdpProxy:
        loop = asyncio.get_running_loop()
        self.port = self.port or free_port_pair()
        self._sides = []
        for offset in (0, 1):
            _, side = await loop.create_datagram_endpoint(
                lambda o=offset: _Side(self, o), local_addr=(LOCALHOST, self.port + offset)
            )
            self._sides.append(side)
        return self

    def relay(self, side: _Side, data: bytes, addr: Addr) -> None:
        from_target = addr[1] in (self.target_port, self.target_port + 1)
        if from_target:
            destination = self.peer.get(side.offset)
            rules = self.to_peer
            if destination is None:
                return
        else:
            self.peer[side.offset] = addr
            destination = (LOCALHOST, self.target_port + side.offset)
            rules = self.to_target
        if is_rtp(data):
            rules.rtp_seen += 1
        if rules.drop(data, rules.rtp_seen):
            rules.dropped += 1
            return
        rules.passed += 1
        transport = side.transport
        assert transport is not None
        if rules.delay:
            asyncio.get_running_loop().call_later(rules.delay, self._send, side, data, destination)
        else:
            transport.sendto(data, destination)

    @staticmethod
    def _send(side: _Side, data: bytes, destination: Addr) -> None:
        if side.transport is not None and not side.transport.is_closing():
            side.transport.sendto(data, destination)

    def close(self) -> None:
        for side in self._sides:
            if side.transport is not None:
                side.transport.close()
