"""Free local ports, for the tests and the benchmark (bench/common.py imports this
module: it needs nothing but the standard library)."""

from __future__ import annotations

import os
import socket

LOCALHOST = "127.0.0.1"


def port_pair_free(port: int, host: str = LOCALHOST) -> bool:
    """Whether UDP ``port`` and ``port + 1`` can both be bound on ``host`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with (
            socket.socket(family, socket.SOCK_DGRAM) as a,
            socket.socket(family, socket.SOCK_DGRAM) as b,
        ):
            a.bind((host, port))
            b.bind((host, port + 1))
    except OSError:
        return False
    return True


# Ports the tests take come from below the kernel's ephemeral range (32768-60999 here),
# so no socket bound to port 0 (a peer, a client, another process's) can take one between
# the check and the hub's bind. Under pytest-xdist each worker walks its own slice of the
# range (worker gwN of M: the N-th of M equal slices), so two workers never even try the
# same port; a hub one worker just closed is never another's "free" port. Within the
# slice a cursor starts where this process's id points, so other test runs on the machine
# rarely try the same port either.
LOW, HIGH = 20000, 32760


def worker_range(
    worker: str | None = None, count: str | None = None, low: int = LOW, high: int = HIGH
) -> tuple[int, int]:
    """The even-aligned [low, high) slice of ports for an xdist worker (``PYTEST_XDIST_WORKER``
    like ``gw1``, ``PYTEST_XDIST_WORKER_COUNT``); the whole range outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER") if worker is None else worker
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT") if count is None else count
    if not worker or not count or not worker.startswith("gw"):
        return low, high
    index, total = int(worker[2:]), max(int(count), 1)
    width = (high - low) // total // 2 * 2
    return low + index * width, low + (index + 1) * width


_LOW, _HIGH = worker_range()
_cursor = _LOW + (os.getpid() * 7919) % ((_HIGH - _LOW) // 2) * 2


def _next_candidate() -> int:
    global _cursor
    port = _cursor
    _cursor = _LOW if _cursor + 2 >= _HIGH else _cursor + 2
    return port


def free_port_pair(host: str = LOCALHOST) -> int:
    """An even port P with P and P+1 both free for UDP on ``host`` now."""
    for _ in range((_HIGH - _LOW) // 2):
        port = _next_candidate()
        if port_pair_free(port, host):
            return port
    raise RuntimeError("no free UDP port pair")


def free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """``count`` free even port pairs, none adjacent to another."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port_pair(host)
        if all(abs(port - other) > 1 for other in ports):
            ports.append(port)
    return ports


def free_port_block(count: int, start: int = 21000, stop: int = 60000) -> list[int]:
    """``count`` even control ports P (with P + 1) that are free now, from one region
    (the benchmark wants its ports together, out of the kernel's ephemeral range)."""
    ports: list[int] = []
    port = start
    while len(ports) < count:
        if port >= stop:
            raise RuntimeError("not enough free UDP port pairs")
        if port_pair_free(port):
            ports.append(port)
        port += 2
    return ports


def free_tcp_port(host: str = LOCALHOST) -> int:
    """A TCP port free on ``host`` now (for a web server started with it), from the
    same range as the UDP ports."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range((_HIGH - _LOW) // 2):
        port = _next_candidate()
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port")
