"""Per-source limits count an IPv6 /64 as one source: one host usually holds a whole
/64, so counting addresses would let it open as many sessions as it likes."""

from __future__ import annotations

from midihub.rtp import Drop, PortKind, SessionTable
from midihub.rtp import packets as p
from midihub.rtp.limits import source_key
from tests.seeds import seeded


def test_source_keys() -> None:
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8:1:2::7") == source_key("2001:db8:1:2:ffff::1")
    assert source_key("2001:db8:1:2::7") != source_key("2001:db8:1:3::7")
    assert source_key("fe80::1%eth0") == source_key("fe80::2")
    assert source_key("not an address") == "not an address"


def test_one_ipv6_64_gets_the_pending_limit_of_one_source() -> None:
    host = SessionTable("hub", rng=seeded(5, "hub"))
    for i in range(40):  # 40 addresses of one /64, each a new SSRC
        invite = p.encode_invitation(p.Invitation(p.INVITATION, i, 0x1000 + i, "x"))
        host.receive(invite, PortKind.CONTROL, (f"2001:db8:7:7::{i + 1:x}", 5004, 0, 0), 1.0)
    assert host.pending == host.limits.pending_per_source
    assert host.counters.drops[Drop.PENDING_FULL] == 40 - host.limits.pending_per_source
    # ... and its refusals share one reply budget.
    replies = [d for _, d, _ in host.datagrams_to_send() if d[2:4] == b"NO"]
    assert len(replies) <= host.limits.reject_burst
