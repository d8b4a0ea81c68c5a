"""An attacker on the UDP side: raw sockets on another loopback address than the
victims' (127.0.0.1), sending whatever it likes and counting what comes back."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from midihub.rtp import PortKind
from midihub.rtp import packets as p
from tests.support import LOCALHOST, free_port_pair


@dataclass
class RawPair:
    """A control/data socket pair bound to ``host`` that records every reply."""

    host: str = "127.0.0.2"
    port: int = 0
    replies: list[tuple[PortKind, bytes]] = field(default_factory=list)
    sent_bytes: int = 0

    def __post_init__(self) -> None:
        self.port = self.port or free_port_pair(self.host)
        self._loop = asyncio.get_running_loop()
        self.sockets: list[socket.socket] = []
        for kind in PortKind:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind((self.host, self.port + kind))
            self.sockets.append(sock)
            self._loop.add_reader(sock.fileno(), self._readable, kind, sock)

    def _readable(self, kind: PortKind, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self.replies.append((kind, data))

    def send(self, kind: PortKind, data: bytes, hub_port: int, host: str = LOCALHOST) -> None:
        self.sent_bytes += len(data)
        self.sockets[kind].sendto(data, (host, hub_port + kind))

    @property
    def received_bytes(self) -> int:
        return sum(len(data) for _, data in self.replies)

    def commands(self) -> list[bytes]:
        return [data[2:4] for _, data in self.replies if p.is_session_packet(data)]

    def close(self) -> None:
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()


def invitation(token: int, ssrc: int, name: str | None = "mallory") -> bytes:
    return p.encode_invitation(p.Invitation(p.INVITATION, token, ssrc, name))


def bye(token: int, ssrc: int) -> bytes:
    return p.encode_invitation(p.Invitation(p.BYE, token, ssrc))
