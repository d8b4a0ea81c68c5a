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


class UdpPort:
    """One non-blocking UDP socket read in batches into a reused buffer: half an RTP
    port pair, or a Network MIDI 2.0 port."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        bind: str,
        port: int,
        receiver: Callable[[list[tuple[bytes, Address]]], None],
        buffer: bytearray | None = None,
    ) -> None:
        self.port = port
        self.bind = bind
        self._loop = loop
        self._receiver = receiver
        self._family = address_family(bind)
        self._socket: socket.socket | None = None
        self._buffer = buffer if buffer is not None else bytearray(BUFFER_SIZE)
        self._view = memoryview(self._buffer)
        self._reported: set[int | None] = set()  # unexpected send errnos already logged

    def open(self) -> None:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            if self._family == socket.AF_INET6 and self.bind in ("::", ""):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
            sock.setblocking(False)
            sock.bind((self.bind, self.port))
        except OSError as error:
            sock.close()
            raise BindError(
                error.errno, f"cannot open UDP {self.bind} port {self.port}: {error.strerror}"
            ) from None
        self._socket = sock
        self._loop.add_reader(sock.fileno(), self._readable, sock)

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is None:
            return
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock.fileno())
        sock.close()

    def sendto(self, data: bytes, addr: Address) -> bool:
        """False when the datagram could not be sent: UDP drops it and the caller counts.
        Never raises for a socket error, so one failing datagram (or port) never costs
        the datagrams sent after it."""
        if self._socket is None:
            return False
        try:
            self._socket.sendto(data, addr)
        except OSError as error:
            if error.errno not in _EXPECTED and error.errno not in self._reported:
                self._reported.add(error.errno)  # once per errno: a log line, not a flood
                log.warning("UDP port %d: sendto failed: %s", self.port, error)
            return False
        return True

    def _readable(self, sock: socket.socket) -> None:
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
            self._receiver(batch)


class PortPair:
    """Control socket on ``port``, data socket on ``port + 1`` (one read buffer)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, bind: str, port: int, receiver: Receiver
    ) -> None:
        self.port = port
        self.bind = bind
        buffer = bytearray(BUFFER_SIZE)
        self._sockets = [
            UdpPort(loop, bind, port + kind, self._batch_of(receiver, kind), buffer)
            for kind in PortKind
        ]

    @staticmethod
    def _batch_of(
        receiver: Receiver, kind: PortKind
    ) -> Callable[[list[tuple[bytes, Address]]], None]:
        return lambda batch: receiver(kind, batch)

    def open(self) -> None:
        try:
            for sock in self._sockets:
                sock.open()
        except BindError:
            self.close()
            raise

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()

    def sendto(self, kind: PortKind, data: bytes, addr: Address) -> bool:
        """False when the datagram could not be sent (``UdpPort.sendto``)."""
        return self._sockets[kind].sendto(data, addr)
