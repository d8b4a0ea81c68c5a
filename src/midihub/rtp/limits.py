"""What a stranger on the Internet may cost a port pair, and the counters that show
when a limit bites.

Every datagram comes from someone we don't know. Each per-sender resource
(sessions, half-open invitations, SysEx memory and rate, replies) has a cap here,
and every refusal is counted under a reason from the fixed ``Drop`` set, so nothing
a sender chooses ever becomes a counter key.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

# Remembered sources for per-IP reply limits: bounded so a spoofed flood of random
# addresses costs a fixed amount of memory (the oldest are forgotten first).
MAX_TRACKED_SOURCES: Final = 4096


class Drop(enum.StrEnum):
    """Why a datagram (or what it carried) was dropped or refused."""

    MALFORMED_SESSION = "malformed-session"  # unreadable IN/OK/NO/BY/CK/RS/RL
    BAD_VERSION = "bad-version"  # AppleMIDI protocol version other than 2
    MALFORMED_RTP = "malformed-rtp"  # unreadable RTP header or MIDI list
    RTP_ON_CONTROL = "rtp-on-control"
    UNKNOWN_SESSION = "unknown-session"  # no session with that SSRC or token
    WRONG_ADDRESS = "wrong-address"  # a session's SSRC from another address
    WRONG_TOKEN = "wrong-token"  # BY or data-port IN without the session's token
    NOT_JOINED = "not-joined"  # MIDI from a session that has not proved its address
    SSRC_IN_USE = "ssrc-in-use"  # IN for a live SSRC with another token or address
    CLOSED = "closed"  # the port accepts no one (it is being removed)
    PORT_FULL = "port-full"  # max participants reached
    SOURCE_FULL = "source-full"  # max sessions from one IP reached
    PENDING_FULL = "pending-full"  # max half-open invitations from one IP reached
    PENDING_EVICTED = "pending-evicted"  # an unfinished invitation made room for a new one
    HANDSHAKE_TIMEOUT = "handshake-timeout"  # invited, never proved its address in time
    DATA_IN_FIRST = "data-in-first"  # a data-port IN with no control-port IN before it
    CLOCK_UNMATCHED = "clock-unmatched"  # CK1/CK2 echoing no timestamp we sent
    CLOCK_IMPLAUSIBLE = "clock-implausible"  # a CK exchange giving an RTT < 0 or > 10 s
    REPLY_LIMITED = "reply-limited"  # a NO not sent: that IP's reply budget is spent
    SYSEX_TOO_LONG = "sysex-too-long"
    SYSEX_INCOMPLETE = "sysex-incomplete"  # SysEx pieces dropped for a lost or cancelled segment
    SYSEX_RATE = "sysex-rate"


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps per port pair (``[limits]`` in the config)."""

    max_pending: int = 128  # half-open sessions (invited or unproven) per port
    pending_per_source: int = 4  # of those, from one IP
    sessions_per_source: int = 16  # all sessions from one IP (a band behind one NAT)
    handshake_timeout: float = 5.0  # from the first IN to a proven address, not refreshed
    proof_intervals: int = 3  # clock-sync intervals without proof before MIDI stops
    max_sysex: int = 65536  # bytes of one reassembled SysEx; longer ones are dropped whole
    sysex_rate: float = 65536.0  # SysEx bytes per second per session (burst: max_sysex)
    reject_rate: float = 2.0  # NO replies per second per source IP
    reject_burst: int = 4


@dataclass(slots=True)
class Counters:
    """Per-port accounting, exported in ``/metrics``."""

    received: int = 0
    sent: int = 0
    send_errors: int = 0  # datagrams the socket refused (full buffer, unreachable)
    malformed: int = 0
    journals_unreadable: int = 0  # a journal we could not read (its commands still count)
    journals_trimmed: int = 0  # journals cut to fit their packet (held notes kept first)
    sequence_resyncs: int = 0  # a peer's sequence jumped and we followed (RFC 3550 A.1)
    loss_releases: int = 0  # notes a journal-less sender held long after a loss (release_after)
    drops: dict[Drop, int] = field(default_factory=dict)

    def drop(self, reason: Drop, count: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + count


def unmapped(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4-mapped IPv6 address (``::ffff:192.0.2.7``, what a dual-stack socket
    reports for an IPv4 peer) as the IPv4 address it is; any other unchanged."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def source_key(host: object) -> str:
    """Whom a per-source limit counts against: an IPv4 address, or an IPv6 /64 (one
    host usually holds a whole /64, so per-address limits would not hold there)."""
    text = str(host or "")
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text or "?"
    address = unmapped(address)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class SourceCounts:
    """How many of something (open streams, connections) each source holds now, for
    per-source caps; a source holding none is forgotten, so the map stays as small as
    what is open."""

    __slots__ = ("_held", "total")

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self.total = 0

    def of(self, source: str) -> int:
        return self._held.get(source, 0)

    def add(self, source: str) -> None:
        self._held[source] = self._held.get(source, 0) + 1
        self.total += 1

    def remove(self, source: str) -> None:
        left = self._held.pop(source, 0) - 1
        if left > 0:
            self._held[source] = left
        self.total -= 1


class TokenBucket:
    """``take(amount, now)`` succeeds while the average stays under ``rate`` per second."""

    __slots__ = ("_level", "_stamp", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._level = burst
        self._stamp = now

    def take(self, amount: float, now: float) -> bool:
        level = min(self.burst, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        if amount > level:
            self._level = level
            return False
        self._level = level - amount
        return True

    def configure(self, rate: float, burst: float, now: float) -> None:
        """New limits (a reload): what was spent stays spent, the time before ``now``
        refills at the old rate, and the level never exceeds the new burst."""
        self._level = min(self.burst, self._level + (now - self._stamp) * self.rate, burst)
        self._stamp = now
        self.rate = rate
        self.burst = burst


class SourceLimiter:
    """A token bucket per source IP, remembering at most ``MAX_TRACKED_SOURCES`` IPs."""

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[object, TokenBucket] = OrderedDict()

    def allow(self, source: object, now: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_SOURCES:
                self._buckets.popitem(last=False)
            bucket = self._buckets[source] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(source)
        return bucket.take(1, now)

    def configure(self, rate: float, burst: float, now: float) -> None:
        """New limits for every source, remembered ones keeping what they spent."""
        self.rate = rate
        self.burst = burst
        for bucket in self._buckets.values():
            bucket.configure(rate, burst, now)

    def __len__(self) -> int:
        return len(self._buckets)
