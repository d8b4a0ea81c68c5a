"""A minimal RTP MIDI participant living in the hub's process: the sans-IO ``SessionTable`` in
the initiator role on two loopback UDP sockets. It joins a hub port like any other
musician (so routing, note tracking and release apply to it unchanged), answers and
starts clock syncs on the session's own timers, and can send MIDI."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket

from midihub.rtp import (
    Address,
    Command,
    Event,
    LeaveReason,
    PeerLeft,
    PortKind,
    Session,
    SessionSettings,
    SessionTable,
    encode_sections,
)
from midihub.rtp.recovery import MAX_LIST_LENGTH

READ_BATCH = 64


def loopback_for(bind: str) -> str:
    """Where a local participant reaches a hub bound to ``bind``."""
    if bind in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


class Participant:
    """``connect()`` joins; ``send()`` plays; ``close()`` says BY and closes the sockets."""

    def __init__(self, name: str, host: str, *, rng: random.Random | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self.table = SessionTable(
            name, rng=rng or random.SystemRandom(), settings=SessionSettings(), accept=False
        )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sockets: list[socket.socket] = []
        for kind in PortKind:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind((host, 0))
            self._sockets.append(sock)
            self._loop.add_reader(sock.fileno(), self._readable, kind, sock)
        self.session: Session | None = None
        self.left: LeaveReason | None = None  # why the session ended, once it has
        self._timer: asyncio.TimerHandle | None = None
        self._joined = self._loop.create_future()

    async def connect(self, addr: Address, timeout: float = 5.0) -> Session:
        """Invite the hub port at ``addr`` (its control port); raises TimeoutError or
        ConnectionError (refused) when it cannot join."""
        self.session = self.table.connect(addr, self._loop.time())
        self._flush()
        self._arm()
        await asyncio.wait_for(asyncio.shield(self._joined), timeout)
        return self.session

    def send(self, commands: list[Command]) -> None:
        session = self.session
        if session is None or not session.established:
            return
        sections = encode_sections(commands, MAX_LIST_LENGTH)
        self.table.send([session], sections, self._loop.time())
        self._flush()

    def close(self) -> None:
        """BY on both ports, then the sockets go."""
        self._handle(self.table.close(LeaveReason.CLOSED))
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
        for sock in self._sockets:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        if not self._joined.done():
            self._joined.set_exception(ConnectionError("closed before joining"))
            self._joined.exception()  # retrieved: nobody may be waiting

    # -- plumbing ----------------------------------------------------------------

    def _readable(self, kind: PortKind, sock: socket.socket) -> None:
        now = self._loop.time()
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            self._handle(self.table.receive(data, kind, addr, now))
        self._flush()
        self._arm()

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            session = self.session
            if session is None or event.who.public_id != session.public_id:
                continue
            if session.established and not self._joined.done():
                self._joined.set_result(None)
            if isinstance(event, PeerLeft):
                self.left = event.reason
                if not self._joined.done():
                    self._joined.set_exception(ConnectionError(f"not joined: {event.reason}"))

    def _tick(self) -> None:
        self._timer = None
        self._handle(self.table.tick(self._loop.time()))
        self._flush()
        self._arm()

    def _arm(self) -> None:
        """Wake at the session's next timer (invitation retry, clock sync, timeout)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._sockets:
            return
        due = self.table.next_deadline()
        if due is not None:
            self._timer = self._loop.call_at(max(due, self._loop.time() + 0.001), self._tick)

    def _flush(self) -> None:
        for kind, data, addr in self.table.datagrams_to_send():
            if not self._sockets:
                return
            with contextlib.suppress(OSError):  # UDP: a refused or full send is a loss
                self._sockets[kind].sendto(data, addr)
