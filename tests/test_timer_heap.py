"""Session timers come from a heap per port: a forwarded datagram asks no idle
participant for its deadline, a tick visits only the sessions due, and what the heap
says is always what a scan of every session would say."""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Iterator

import pytest

from midihub import config as c
from midihub.hub import Hub
from midihub.rtp import PortKind, Session, encode_sections
from tests.memnet import GROUP_AND_ROOM, LATENCY, MemNet, Wire
from tests.seeds import seeded

IDLE_PORTS = [5100 + 2 * i for i in range(20)]  # 50 idle participants on each
CONFIG = GROUP_AND_ROOM + "".join(f"Idle{i} = {p}\n" for i, p in enumerate(IDLE_PORTS))
IN_PORT_IDLE = 40  # and on the group's in-port, where they hear nothing of the sender


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[Session]]:
    """How often each session computed its deadline (``Session.next_deadline``)."""
    if not inspect.isfunction(Session.next_deadline):  # a compiled build calls it natively
        pytest.skip("Session is compiled (tools/mypyc_build.py): a patched method goes unseen")
    calls: Counter[Session] = Counter()
    compute = Session.next_deadline

    def counted(self: Session) -> float:
        calls[self] += 1
        return compute(self)

    monkeypatch.setattr(Session, "next_deadline", counted)
    yield calls


def crowded() -> tuple[MemNet, Session, Session]:
    """A hub with a sender on the group's in-port, a receiver on its out-port, and
    1040 participants that joined and then say nothing: 1000 on 20 other ports, 40 on
    the in-port. Returns the network and the hub's sessions of sender and receiver."""
    net = MemNet(Hub(c.parse(CONFIG).spec(), rng=seeded(7, "hub")), latency=0.0)
    net.add_peer("a", 5040)
    net.add_peer("b", 5042)
    for i in range(1000):
        net.add_peer(f"idle{i}", IDLE_PORTS[i % len(IDLE_PORTS)])
    for i in range(IN_PORT_IDLE):
        net.add_peer(f"quiet{i}", 5040)
    net.run_for(0.0)
    tables = {port: endpoint.table for port, endpoint in net.hub.endpoints.items()}
    assert sum(len(tables[p].established) for p in IDLE_PORTS) == 1000
    assert len(tables[5040].established) == 1 + IN_PORT_IDLE
    (receiver,) = tables[5042].established
    (sender,) = [s for s in tables[5040].established if s.peer_name == "a"]
    return net, sender, receiver


def play(net: MemNet, name: str, message: bytes) -> bytes:
    """A data packet ``name`` sends the hub (not delivered: the test hands it over)."""
    table = net.peers[name].table
    table.send(table.established, encode_sections([(0, message)], 1200), net.now)
    (packet,) = [d for kind, d, _ in table.datagrams_to_send() if kind is PortKind.DATA]
    return packet


def test_a_forwarded_datagram_asks_no_idle_participant_for_its_deadline(
    asked: Counter[Session],
) -> None:
    """The datagram path as the server runs it (``receive``, ``drain``, the timer
    re-armed for ``pending_deadline``): the receiver gets the note, the server a
    deadline, and none of the 1040 idle participants is asked for its deadline (a scan
    of the in-port's sessions in ``drain`` asked its 40 idle ones every time)."""
    net, sender, receiver = crowded()
    hub = net.hub
    packet = play(net, "a", b"\x90\x3c\x64")
    now = net.now + LATENCY
    asked.clear()
    host, port = net.peers["a"].addr
    hub.receive(5040, PortKind.DATA, packet, (host, port + 1), now)
    out = list(hub.drain())
    assert [o.addr for o in out if o.kind is PortKind.DATA] == [receiver.data_addr]
    assert hub.pending_deadline is not None and hub.pending_deadline > now
    assert set(asked) <= {sender, receiver}, f"{len(asked)} sessions asked"


def test_a_tick_visits_only_the_session_due(asked: Counter[Session]) -> None:
    """After a note the receiver's first guard packet is the only timer due 50 ms
    later: ``Hub.tick`` then asks that one session and no other (a scan asked all
    1042), the guard goes out, and the hub's next deadline asks at most one session
    per port (the earliest filed)."""
    net, _, receiver = crowded()
    hub = net.hub
    packet = play(net, "a", b"\x90\x3c\x64")
    host, port = net.peers["a"].addr
    hub.receive(5040, PortKind.DATA, packet, (host, port + 1), net.now)
    list(hub.drain())
    guard_at = hub.next_deadline()
    assert guard_at == pytest.approx(net.now + 0.05)
    asked.clear()
    hub.tick(guard_at)
    out = list(hub.drain())
    assert set(asked) == {receiver}
    assert [(o.addr, o.data[12]) for o in out] == [(receiver.data_addr, 0x40)]  # a guard
    asked.clear()
    assert hub.next_deadline() is not None
    assert sum(asked.values()) <= len(hub.endpoints)


class LoseEveryFourthRtp:
    """A rule: every fourth RTP datagram on the wire is lost (session packets arrive)."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, wire: Wire, position: int, count: int) -> list[float]:
        if not wire.is_rtp:
            return [0.0]
        self.seen += 1
        return [] if self.seen % 4 == 0 else [0.0]


def test_the_heap_agrees_with_a_scan_of_every_session() -> None:
    """Through joins, MIDI with guards and RS, losses (repaired from journals, or
    released after ``release_after`` for a sender without), lost clock syncs, a
    timeout, a reload that shortens the timers, and leaves, each port's next deadline
    is the earliest of its sessions' (what a scan of all of them said before the heap)."""
    text = GROUP_AND_ROOM.replace("Jam = 5060", "Jam = { port = 5060, release_after = 0.5 }")
    hub = Hub(c.parse(text).spec(), rng=seeded(11, "hub"))
    net = MemNet(hub, rule=LoseEveryFourthRtp(), seed=11)
    checks = 0

    def agrees() -> bool:
        nonlocal checks
        for endpoint in hub.endpoints.values():
            table = endpoint.table
            for session in table.sessions:  # filed no later than its deadline: never missed
                assert session.scheduled <= session.next_deadline(), session
            scan = [s.next_deadline() for s in table.sessions]
            wake = table.next_wake()
            assert (wake is None) == (not scan) and (wake is None or wake <= min(scan))
            assert table.next_deadline() == min(scan, default=None)
        checks += 1
        return False

    for name, port in [("a", 5040), ("b", 5042), ("c", 5060), ("d", 5060), ("e", 5060)]:
        net.add_peer(name, port, journal=name != "c")  # c: no journal, as rtpmidid
    net.run_for(5.0, agrees)
    for i in range(40):
        net.send(net.peers["abcde"[i % 5]], [bytes((0x90, 40 + i, 90))])
        net.run_for(0.013, agrees)
    net.run_for(1.0, agrees)
    for i in range(30):  # c alone: no guards to it, so only its own timers wake it
        net.send(net.peers["c"], [bytes((0x90, 40 + i, 90))])
        net.run_for(0.07, agrees)
    net.run_for(1.0, agrees)
    assert hub.endpoints[5060].table.counters.loss_releases > 0  # c's notes, after a loss
    assert hub.endpoints[5042].journal_repairs + hub.endpoints[5060].journal_repairs > 0
    net.run_for(3.0, agrees)
    net.die(net.peers["d"])  # its clock syncs go unanswered: stale, then timed out
    reload = "ck_interval = 2.0\n" + text
    hub.reconfigure(c.parse(reload).spec(), net.now)
    agrees()
    net.run_for(40.0, agrees)
    assert [s.peer_name for s in hub.endpoints[5060].table.established] == ["c", "e"]
    net.leave(net.peers["c"])
    net.run_for(15.0, agrees)
    assert checks > 100


def test_the_heap_keeps_no_more_than_its_live_sessions_need() -> None:
    """Participants that join and leave before their timers come leave their entries
    behind as stale: the heap drops them once they outnumber the live ones, so churn
    cannot grow it without bound."""
    net = MemNet(Hub(c.parse(GROUP_AND_ROOM).spec(), rng=seeded(3, "hub")), latency=0.0)
    table = net.hub.endpoints[5060].table
    net.add_peer("stays", 5060)
    net.run_for(0.0)
    for i in range(300):
        peer = net.add_peer(f"p{i}", 5060)
        net.run_for(0.0)
        net.leave(peer)
        net.run_for(0.0)
        assert len(table._timers) <= 2 * len(table.sessions) + 64 + 1
    assert [s.peer_name for s in table.established] == ["stays"]
    assert table.next_deadline() == table.established[0].next_deadline()
