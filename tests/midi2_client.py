"""An independent Network MIDI 2.0 (UDP) client for tests: written from the spec facts
in docs/protocol.md, sharing no code with ``midihub.midi2`` (its own byte layouts, its
own sequence handling), so tests check the host against a second implementation.

``Midi2Client`` is sans-IO: feed it the host's datagrams (``receive``) and the time
(``tick``), and send what ``take()`` returns. It answers pings, authentication
challenges (with its secret or user/password) and the host's Retransmit Requests by
itself; it sends UMP Data with FEC, delivers what it receives exactly once in order,
and asks for gaps with Retransmit Request; like amidi2net, it gives a gap up after
``retransmit_tries`` requests or on a Retransmit Error (Session Reset: both sides number
again, the gap is lost), and ends with Bye 0x03 if the reset is never answered.
``UdpMidi2Client`` runs one over a real UDP socket in asyncio (for end-to-end tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"MIDI"
INV, INV_AUTH, INV_USER = 0x01, 0x02, 0x03
ACCEPTED, PENDING, AUTH_REQ, USER_AUTH_REQ = 0x10, 0x11, 0x12, 0x13
PING, PING_REPLY = 0x20, 0x21
RETR_REQ, RETR_ERR, RESET, RESET_REPLY = 0x80, 0x81, 0x82, 0x83
NAK, BYE, BYE_REPLY, DATA = 0x8F, 0xF0, 0xF1, 0xFF


def command(code: int, b2: int = 0, b3: int = 0, payload: bytes = b"") -> bytes:
    """One command packet: code, payload words, two specific octets, payload."""
    assert len(payload) % 4 == 0
    return bytes([code, len(payload) // 4, b2, b3]) + payload


def pad(data: bytes) -> bytes:
    while len(data) % 4:
        data += b"\x00"
    return data


def split(datagram: bytes) -> list[tuple[int, int, int, bytes]]:
    """(code, octet 2, octet 3, payload) of each command; asserts the framing."""
    assert datagram[:4] == MAGIC, datagram
    out = []
    i = 4
    while i < len(datagram):
        words = datagram[i + 1]
        end = i + 4 + 4 * words
        assert end <= len(datagram), "truncated command from the host"
        out.append((datagram[i], datagram[i + 2], datagram[i + 3], datagram[i + 4 : end]))
        i += 4 + 4 * words
    return out


def words_of(payload: bytes) -> tuple[int, ...]:
    return tuple(struct.unpack(f">{len(payload) // 4}I", payload))


@dataclass
class Midi2Client:
    name: str = "test client"
    product_id: str = "tc-1"
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    fec: int = 3
    secret: str | None = None
    user: str | None = None
    password: str = ""
    capabilities: int | None = None  # None: from secret/user
    retransmit_wait: float = 0.05
    retransmit_tries: int = 5  # requests for one gap before giving it up (amidi2net: 5)
    invite_retry: float = 0.5  # the Invitation again while no answer lets us in
    first_seq: int = 0

    def __post_init__(self) -> None:
        self.out: list[bytes] = []
        self.state = "idle"  # idle, inviting, established, closed
        self.host_name = ""
        self.host_product_id = ""
        self.received: list[tuple[int, ...]] = []  # UMP messages, in order, once each
        self.log: list[tuple[Any, ...]] = []  # everything else the host said, in order
        self.bye_reason: int | None = None
        self.nonces: list[bytes] = []
        self.rtts: list[float] = []
        self.keepalives = 0
        self.duplicates = 0
        self.requests_sent = 0
        self.gaps_given_up = 0
        self.lost = 0  # UMP Data commands missing or held when a gap was given up
        self._gap_tries = 0
        self._gap_first: int | None = None  # the gap those tries were for
        self.resetting = False  # a Session Reset awaits its reply
        self._reset_at: float | None = None  # when to send it again
        self._reset_tries = 0
        self._sent: dict[int, bytes] = {}  # seq -> encoded UMP Data command (history)
        self._order: list[int] = []
        self._next = self.first_seq
        self._expect: int | None = None
        self._early: dict[int, tuple[int, ...]] = {}
        self._gap_at: float | None = None
        self._pings: dict[int, float] = {}
        self._invite_at: float | None = None
        self.invitations = 0

    # -- what the client sends ----------------------------------------------------------

    def take(self) -> list[bytes]:
        out, self.out = self.out, []
        return out

    def _emit(self, *commands: bytes) -> None:
        self.out.append(MAGIC + b"".join(commands))

    def invite(self, now: float | None = None) -> None:
        """Send the Invitation. Given ``now``, ``tick`` sends it again every
        ``invite_retry`` until Reply Accepted or a Bye (lost datagrams: a digest is
        sent again in answer to the challenge the repeated Invitation brings)."""
        self._invite_at = None if now is None else now + self.invite_retry
        self.invitations += 1
        caps = self.capabilities
        if caps is None:
            caps = (1 if self.secret is not None else 0) | (2 if self.user is not None else 0)
        name = pad(self.name.encode())
        body = name + pad(self.product_id.encode())
        self.state = "inviting"
        self._emit(command(INV, len(name) // 4, caps, body))

    def ping(self, now: float) -> int:
        ping_id = self.rng.getrandbits(32)
        self._pings[ping_id] = now
        self._emit(command(PING, 0, 0, struct.pack(">I", ping_id)))
        return ping_id

    def bye(self, reason: int = 0x01) -> None:
        self.state = "closed"
        self._invite_at = None
        self._emit(command(BYE, reason, 0))

    def reset(self, now: float | None = None) -> None:
        """Session Reset: both sides number from the start again. UMP Data that
        arrives before the Reply has the old numbers and is dropped. Given ``now``,
        ``tick`` repeats the reset until answered, then says Bye 0x03."""
        self._next = self.first_seq
        self._sent.clear()
        self._order.clear()
        self._expect = None
        self._early.clear()
        self._gap_at = None
        self._gap_tries = 0
        self.resetting = True
        self._reset_at = None if now is None else now + 2 * self.retransmit_wait
        self._emit(command(RESET))

    def _give_up(self, now: float) -> None:
        """A gap the host cannot (Retransmit Error) or does not fill: it is lost for
        good; what came after it is delivered (in order), then both sides reset."""
        expect = self._expect
        assert expect is not None
        self.gaps_given_up += 1
        for seq in sorted(self._early, key=lambda s: (s - expect) & 0xFFFF):
            self.lost += (seq - expect) & 0xFFFF
            self._deliver(self._early.pop(seq))
            expect = (seq + 1) & 0xFFFF
        self._reset_tries = 0
        self.reset(now)

    def retransmit_request(self, seq: int, count: int) -> None:
        self.requests_sent += 1
        self._emit(command(RETR_REQ, seq >> 8, seq & 0xFF, struct.pack(">HH", count, 0)))

    def send(self, messages: list[tuple[int, ...]]) -> None:
        """Each message a UMP Data command; one datagram per call, led by FEC copies."""
        fresh = []
        for words in messages:
            seq = self._next
            self._next = (seq + 1) & 0xFFFF
            cmd = command(DATA, seq >> 8, seq & 0xFF, b"".join(struct.pack(">I", w) for w in words))
            self._sent[seq] = cmd
            self._order.append(seq)
            fresh.append(cmd)
        if len(self._order) > 1024:
            for old in self._order[:-1024]:
                self._sent.pop(old, None)
            self._order = self._order[-1024:]
        before = self._order[-len(fresh) - self.fec : -len(fresh)] if self.fec else []
        self._emit(*[self._sent[s] for s in before], *fresh)

    def send_packed(self, messages: list[tuple[int, ...]]) -> None:
        """All ``messages`` in ONE UMP Data command (one sequence number), as Windows
        MIDI Services does; no FEC copies."""
        seq = self._next
        self._next = (seq + 1) & 0xFFFF
        words = [w for message in messages for w in message]
        cmd = command(DATA, seq >> 8, seq & 0xFF, struct.pack(f">{len(words)}I", *words))
        self._sent[seq] = cmd
        self._order.append(seq)
        self._emit(cmd)

    def keepalive(self) -> None:
        self.send([()])

    # -- what the host sends ------------------------------------------------------------

    def receive(self, datagram: bytes, now: float) -> None:
        for code, b2, b3, payload in split(datagram):
            self._on(code, b2, b3, payload, now)
        self._check_gap(now)

    def _on(self, code: int, b2: int, b3: int, payload: bytes, now: float) -> None:
        if code == ACCEPTED:
            self.state = "established"
            self._invite_at = None
            self.host_name = payload[: 4 * b2].rstrip(b"\x00").decode()
            self.host_product_id = payload[4 * b2 :].rstrip(b"\x00").decode()
            self.log.append(("accepted", self.host_name, self.host_product_id))
        elif code in (AUTH_REQ, USER_AUTH_REQ):
            nonce = payload[:16]
            self.nonces.append(nonce)
            self.log.append(("auth-required", code, b3))
            if code == AUTH_REQ and self.secret is not None:
                digest = hashlib.sha256(nonce + self.secret.encode()).digest()
                self._emit(command(INV_AUTH, 0, 0, digest))
            elif code == USER_AUTH_REQ and self.user is not None:
                raw = nonce + self.user.encode() + self.password.encode()
                digest = hashlib.sha256(raw).digest()
                self._emit(command(INV_USER, 0, 0, digest + pad(self.user.encode())))
        elif code == PING:
            self._emit(command(PING_REPLY, 0, 0, payload[:4]))
            self.log.append(("ping",))
        elif code == PING_REPLY:
            (ping_id,) = struct.unpack(">I", payload[:4])
            if ping_id in self._pings:
                self.rtts.append(now - self._pings.pop(ping_id))
        elif code == BYE:
            self.state = "closed"
            self._invite_at = None
            self.bye_reason = b2
            self.log.append(("bye", b2))
            self._emit(command(BYE_REPLY))
        elif code == DATA:
            if not self.resetting:  # else: numbered before our reset
                self._data((b2 << 8) | b3, words_of(payload))
        elif code == RESET_REPLY:
            self.resetting = False
            self._reset_at = None
            self.log.append(("reset-reply",))
        elif code == RETR_ERR:
            (seq,) = struct.unpack(">H", payload[:2])
            self.log.append(("retransmit-error", seq, b2))
            if self._early and not self.resetting:
                self._give_up(now)
        elif code == RETR_REQ:
            seq = (b2 << 8) | b3
            (count,) = struct.unpack(">H", payload[:2])
            wanted = [(seq + i) & 0xFFFF for i in range(count or len(self._order))]
            have = [self._sent[s] for s in wanted if s in self._sent]
            if seq not in self._sent:
                self._emit(command(RETR_ERR, 0x01, 0, struct.pack(">HH", seq, 0)))
            else:
                self._emit(*have)
            self.log.append(("retransmit-request", seq, count))
        else:
            self.log.append((code, b2, b3, payload))

    def _data(self, seq: int, words: tuple[int, ...]) -> None:
        if self._expect is None:
            self._expect = seq
        ahead = (seq - self._expect) & 0xFFFF
        if ahead >= 0x8000 or seq in self._early:
            self.duplicates += 1
            return
        if ahead:
            self._early[seq] = words
            return
        self._deliver(words)
        self._expect = (seq + 1) & 0xFFFF
        while self._expect in self._early:
            self._deliver(self._early.pop(self._expect))
            self._expect = (self._expect + 1) & 0xFFFF

    def _deliver(self, words: tuple[int, ...]) -> None:
        if words:
            self.received.append(words)
        else:
            self.keepalives += 1

    def _check_gap(self, now: float) -> None:
        if not self._early:
            self._gap_at = None
            self._gap_tries = 0
        elif self._gap_at is None:
            self._gap_at = now + self.retransmit_wait

    def tick(self, now: float) -> None:
        if self.state != "inviting":
            self._invite_at = None
        elif self._invite_at is not None and now >= self._invite_at:
            self.invite(now)
        if self._reset_at is not None and now >= self._reset_at:
            self._reset_tries += 1
            if self._reset_tries >= self.retransmit_tries:
                self._reset_at = None
                self.resetting = False
                self.bye(0x03)  # too many missing UMP packets
            else:
                self.reset(now)
        if self._gap_at is not None and now >= self._gap_at and self._expect is not None:
            if self._gap_first != self._expect:  # progress: a fresh set of tries
                self._gap_first = self._expect
                self._gap_tries = 0
            if self._gap_tries >= self.retransmit_tries:
                self._give_up(now)
                return
            self._gap_tries += 1
            first = min((s - self._expect) & 0xFFFF for s in self._early)
            self.retransmit_request(self._expect, first)
            self._gap_at = now + self.retransmit_wait

    def deadline(self) -> float | None:
        times = [t for t in (self._gap_at, self._invite_at, self._reset_at) if t is not None]
        return min(times, default=None)


class UdpMidi2Client(asyncio.DatagramProtocol):
    """A ``Midi2Client`` on a real UDP socket, for end-to-end tests:
    ``client = await UdpMidi2Client.open(("127.0.0.1", port), Midi2Client(...))``,
    then ``client.invite()``, ``client.send([...])`` and ``await client.until(cond)``
    (or tests/support.py's ``wait_for``); ``client.core`` has what it received."""

    def __init__(self, core: Midi2Client, remote: tuple[str, int]) -> None:
        self.core = core
        self.remote = remote
        self.transport: asyncio.DatagramTransport | None = None
        self._changed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, remote: tuple[str, int], core: Midi2Client) -> UdpMidi2Client:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: cls(core, remote), local_addr=("127.0.0.1", 0)
        )
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.core.receive(data, asyncio.get_running_loop().time())
        self.flush()
        self._changed.set()

    def invite(self) -> None:
        self.core.invite(asyncio.get_running_loop().time())
        self.flush()

    def send(self, messages: list[tuple[int, ...]]) -> None:
        self.core.send(messages)
        self.flush()

    def flush(self) -> None:
        """Send what the core has queued, and arm its timer (invitation retries,
        retransmit requests)."""
        assert self.transport is not None
        for datagram in self.core.take():
            self.transport.sendto(datagram, self.remote)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.core.deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.core.tick(asyncio.get_running_loop().time())
        self.flush()

    async def until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


class MemLink:
    """A host (anything with ``receive``/``datagrams_to_send``/``tick``/``next_deadline``,
    a ``Midi2Host``) and one ``Midi2Client`` at ``addr``, on a simulated clock: every
    datagram takes ``latency`` and ``drop(direction, datagram)`` may lose it
    ("up": client to host, "down": host to client). Nothing sleeps."""

    def __init__(
        self,
        host: Any,
        client: Midi2Client,
        addr: tuple[Any, ...] = ("192.0.2.10", 40000),
        *,
        latency: float = 0.005,
        drop: Callable[[str, bytes], bool] | None = None,
        now: float = 0.0,
    ) -> None:
        self.host = host
        self.client = client
        self.addr = addr
        self.latency = latency
        self.drop = drop or (lambda direction, data: False)
        self.now = now
        self.events: list[Any] = []  # what the host's calls returned, in order
        self.down: list[bytes] = []  # every datagram the host sent (before loss)
        self.up: list[bytes] = []
        self._wire: list[tuple[float, int, str, bytes]] = []
        self._order = 0

    def _post(self) -> None:
        for data in self.client.take():
            self.up.append(data)
            if not self.drop("up", data):
                self._wire.append((self.now + self.latency, self._next(), "up", data))
        for data, addr in self.host.datagrams_to_send():
            assert addr == self.addr
            self.down.append(data)
            if not self.drop("down", data):
                self._wire.append((self.now + self.latency, self._next(), "down", data))
        self._wire.sort()

    def _next(self) -> int:
        self._order += 1
        return self._order

    def flush(self) -> None:
        """Put what both sides queued on the wire (call after driving either)."""
        self._post()

    def run_until(self, end: float) -> None:
        self._post()
        while True:
            deadlines = (self.host.next_deadline(), self.client.deadline())
            times = [t for t in deadlines if t is not None]
            if self._wire:
                times.append(self._wire[0][0])
            when = min(times, default=None)
            if when is None or when > end:
                self.now = max(self.now, end)
                return
            self.now = max(self.now, when)
            if self._wire and self._wire[0][0] <= self.now:
                _, _, direction, data = self._wire.pop(0)
                if direction == "up":
                    self.events += self.host.receive(data, self.addr, self.now)
                else:
                    self.client.receive(data, self.now)
            else:
                self.events += self.host.tick(self.now)
                self.client.tick(self.now)
            self._post()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]
