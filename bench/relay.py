"""The baseline: a bare asyncio UDP relay that forwards each datagram unchanged.

One socket per ``--route``; everything a socket receives goes to that route's
destination(s) (one for the pair scenarios, the other room members for the room).
It prints its sockets' ports as a JSON list on the first line, then relays until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

Address = tuple[str, int]


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


async def serve(routes: list[list[Address]]) -> None:
    loop = asyncio.get_running_loop()
    ports: list[int] = []
    for destinations in routes:
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
    parser.add_argument("--route", action="append", default=[], help="HOST:PORT[,HOST:PORT...]")
    args = parser.parse_args()
    routes = [parse_route(text) for text in args.route]
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(routes))
    else:
        asyncio.run(serve(routes))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
