"""The UDP sockets of one hub port pair, read with ``add_reader`` and drained in batches.

asyncio's ``DatagramProtocol`` allocates a 256 KiB buffer per datagram on the
standard loop; a non-blocking socket read into one reused buffer, up to
``BATCH`` datagrams per wake-up, is several times faster (see design.md) and
works the same under uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import Final

from midihub.rtp import Address, PortKind

log = logging.getLogger("midihub.net")

BATCH: Final = 64
BUFFER_SIZE: Final = 65536
_EXPECTED: Final = frozenset(
    (
        errno.EAGAIN,  # full buffer
        errno.ECONNREFUSED,  # an ICMP error from an earlier datagram
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EINVAL,
        errno.EAFNOSUPPORT,
        errno.EPERM,  # a firewall
        errno.EMSGSIZE,
        errno.ENOBUFS,
    )
)
"""What UDP does to a datagram every day: dropped and counted, not logged."""

Receiver = Callable[[PortKind, list[tuple[bytes, Address]]], None]


class BindError(OSError):
    """A port could not be opened; the message names it."""


def address_family(bind: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in bind else socket.AF_INET


class PortPair:
    """Control socket on ``port``, data socket on ``port + 1``."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, bind: str, port: int, receiver: Receiver
    ) -> None:
        self.port = port
        self.bind = bind
        self._loop = loop
        self._receiver = receiver
        self._family = address_family(bind)
        self._sockets: list[socket.socket] = []
        self._buffer = bytearray(BUFFER_SIZE)
        self._view = memoryview(self._buffer)
        self._reported: set[int | None] = set()  # unexpected send errnos already logged

    def open(self) -> None:
        try:
            for kind in PortKind:
                sock = socket.socket(self._family, socket.SOCK_DGRAM)
                self._sockets.append(sock)
                if self._family == socket.AF_INET6 and self.bind in ("::", ""):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
                sock.setblocking(False)
                sock.bind((self.bind, self.port + kind))
        except OSError as error:
            self.close()
            raise BindError(
                error.errno,
                f"cannot open UDP {self.bind} port {self.port + kind}: {error.strerror}",
            ) from None
        for kind, sock in zip(PortKind, self._sockets, strict=True):
            self._loop.add_reader(sock.fileno(), self._readable, kind, sock)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()

    def sendto(self, kind: PortKind, data: bytes, addr: Address) -> bool:
        """False when the datagram could not be sent: UDP drops it and the caller counts.
        Never raises for a socket error, so one failing datagram (or port) never costs
        the datagrams sent after it."""
        try:
            self._sockets[kind].sendto(data, addr)
        except OSError as error:
            if error.errno not in _EXPECTED and error.errno not in self._reported:
                self._reported.add(error.errno)  # once per errno: a log line, not a flood
                log.warning("UDP port %d: sendto failed: %s", self.port + kind, error)
            return False
        return True

    def _readable(self, kind: PortKind, sock: socket.socket) -> None:
        batch: list[tuple[bytes, Address]] = []
        view = self._view
        for _ in range(BATCH):
            try:
                size, addr = sock.recvfrom_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. an ICMP error surfacing; the next read goes on
                continue
            batch.append((bytes(view[:size]), addr))
        if batch:
            self._receiver(kind, batch)
