"""The baselines: bare UDP relays that forward each datagram unchanged.

One socket per ``--route``; everything a socket receives goes to that route's
destination(s) (one for the pair scenarios, the other room members for the room).
It prints its sockets' ports as a JSON list on the first line, then relays until killed.

Two kinds, so the hub is compared with the fastest relay the same loop allows:

- ``fast`` (the baseline): the hub's own socket technique (``midihub.net.udp``):
  ``loop.add_reader`` on a non-blocking socket, ``recvfrom_into`` one reused buffer, up
  to ``BATCH`` datagrams per wake-up; each is sent straight from the buffer.
- ``protocol``: asyncio's ``DatagramProtocol`` (a new bytes object per datagram; on the
  standard loop a 256 KiB buffer allocation per read), the slow path design.md warns of.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

Address = tuple[str, int]
BATCH = 64  # as midihub.net.udp.BATCH
BUFFER_SIZE = 65536


class Relay(asyncio.DatagramProtocol):
    def __init__(self, destinations: list[Address]) -> None:
        self.destinations = destinations
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        assert self.transport is not None
        for destination in self.destinations:
            self.transport.sendto(data, destination)


class FastRelay:
    """``add_reader`` + ``recvfrom_into`` a reused buffer, batched: the hub's technique."""

    def __init__(self, loop: asyncio.AbstractEventLoop, destinations: list[Address]) -> None:
        self.destinations = destinations
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(("127.0.0.1", 0))
        self._buffer = bytearray(BUFFER_SIZE)
        self._view = memoryview(self._buffer)
        loop.add_reader(self.sock.fileno(), self._readable)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _readable(self) -> None:
        sock, buffer, view, destinations = self.sock, self._buffer, self._view, self.destinations
        for _ in range(BATCH):
            try:
                size, _ = sock.recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            data = view[:size]
            for destination in destinations:
                try:  # noqa: SIM105  (try is free on 3.11; a context manager per send is not)
                    sock.sendto(data, destination)
                except (BlockingIOError, InterruptedError):
                    pass  # UDP: a full send buffer drops, as the hub's PortPair does


async def serve(routes: list[list[Address]], kind: str) -> None:
    loop = asyncio.get_running_loop()
    ports: list[int] = []
    for destinations in routes:
        if kind == "fast":
            ports.append(FastRelay(loop, destinations).port)
            continue
        transport, _ = await loop.create_datagram_endpoint(
            lambda d=destinations: Relay(d),  # type: ignore[misc]
            local_addr=("127.0.0.1", 0),
        )
        ports.append(transport.get_extra_info("sockname")[1])
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


def parse_route(text: str) -> list[Address]:
    out: list[Address] = []
    for item in text.split(","):
        host, _, port = item.rpartition(":")
        out.append((host, int(port)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--kind", choices=["fast", "protocol"], default="fast")
    parser.add_argument("--route", action="append", default=[], help="HOST:PORT[,HOST:PORT...]")
    args = parser.parse_args()
    routes = [parse_route(text) for text in args.route]
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(routes, args.kind))
    else:
        asyncio.run(serve(routes, args.kind))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
