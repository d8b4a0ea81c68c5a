"""Routing through the Hub, without sockets: groups, rooms, no echo, reconfigure."""

from __future__ import annotations

import random

from midihub import config as c
from midihub.hub import Hub
from midihub.rtp import Host, MidiReceived, PeerLeft, PortKind, encode_sections
from midihub.rtp.events import Event
from midihub.rtp.recovery import MAX_LIST_LENGTH

CONFIG = """
[groups]
G = [5040, 5042]
[rooms]
Jam = 5060
"""


class Net:
    """A hub and some peer Hosts joined by an instant, lossless in-memory wire."""

    def __init__(self, text: str = CONFIG) -> None:
        self.now = 10.0
        self.hub = Hub(c.parse(text).spec(), rng=random.Random(7))
        self.hub_events: list[tuple[int, Event]] = []
        self.hub.listeners.append(lambda e, ev: self.hub_events.append((e.port, ev)))
        self.peers: dict[str, Host] = {}
        self.addrs: dict[str, int] = {}
        self.received: dict[str, list[bytes]] = {}

    def peer(self, name: str, port: int) -> Host:
        host = Host(name, rng=random.Random(name))
        self.peers[name] = host
        self.addrs[name] = 7000 + 2 * len(self.addrs)
        self.received[name] = []
        host.connect(("hub", port), self.now)
        self.pump()
        assert host.established, f"{name} did not join :{port}"
        return host

    def pump(self) -> None:
        for _ in range(20):
            moved = False
            for name, host in self.peers.items():
                base = self.addrs[name]
                for kind, data, addr in host.datagrams_to_send():
                    moved = True
                    port = addr[1] - kind
                    if port in self.hub.endpoints:
                        self.hub.receive(port, kind, data, (name, base + kind), self.now)
            for out in self.hub.drain():
                moved = True
                name = out.addr[0]
                if name not in self.peers:  # gone without a word
                    continue
                host = self.peers[name]
                kind = PortKind(out.addr[1] - self.addrs[name])
                source = ("hub", out.endpoint.port + out.kind)
                for event in host.receive(out.data, kind, source, self.now):
                    if isinstance(event, MidiReceived):
                        self.received[name] += [m for _, m in event.commands]
            if not moved:
                return

    def play(self, name: str, *messages: bytes) -> None:
        host = self.peers[name]
        sections = encode_sections([(0, m) for m in messages], MAX_LIST_LENGTH)
        host.send(host.established, sections, self.now)
        self.pump()


NOTE = b"\x90\x3c\x64"


def test_group_forwards_in_to_out_only() -> None:
    net = Net()
    net.peer("alice", 5040)
    net.peer("bob", 5042)
    net.peer("carol", 5042)
    net.peer("dave", 5040)
    net.play("alice", NOTE)
    assert net.received == {"alice": [], "bob": [NOTE], "carol": [NOTE], "dave": []}
    net.play("bob", b"\x90\x40\x40")  # the out port is for listening
    assert net.received["alice"] == [] and net.received["dave"] == []


def test_room_everyone_hears_everyone_else_never_their_own() -> None:
    net = Net()
    for name in ("a", "b", "c"):
        net.peer(name, 5060)
    for index, name in enumerate(("a", "b", "c")):
        net.play(name, bytes((0x90, index, 100)))
    assert net.received == {
        "a": [b"\x90\x01\x64", b"\x90\x02\x64"],
        "b": [b"\x90\x00\x64", b"\x90\x02\x64"],
        "c": [b"\x90\x00\x64", b"\x90\x01\x64"],
    }


def test_order_is_preserved_across_many_packets() -> None:
    net = Net()
    net.peer("alice", 5040)
    net.peer("bob", 5042)
    notes = [bytes((0x90 | (i % 16), i % 128, 1 + i % 127)) for i in range(500)]
    for i in range(0, 500, 7):
        net.play("alice", *notes[i : i + 7])
    assert net.received["bob"] == notes


def test_each_receiver_gets_its_own_sequence_and_ssrc() -> None:
    net = Net()
    net.peer("a", 5040)
    bob = net.peer("bob", 5042)
    carol = net.peer("carol", 5042)
    net.play("a", NOTE)
    net.play("a", NOTE)
    for host in (bob, carol):
        (session,) = host.established
        assert session.packets_received == 2 and session.packets_lost == 0
    ssrcs = {s.local_ssrc for s in net.hub.endpoints[5042].host.established}
    assert len(ssrcs) == 2


def test_reconfigure_keeps_unchanged_ports_and_says_bye_on_removed_ones() -> None:
    net = Net()
    net.peer("alice", 5040)
    net.peer("bob", 5042)
    net.peer("jammer", 5060)
    change = net.hub.reconfigure(
        c.parse("[groups]\nG = [5040, 5042]\n[rooms]\nNew = 5070\n").spec(), net.now
    )
    assert [e.port for e in change.removed] == [5060]
    assert [e.port for e in change.added] == [5070]
    assert sorted(e.port for e in change.kept) == [5040, 5042]
    net.pump()
    (jammer_session,) = net.peers["jammer"].sessions or [None]
    assert jammer_session is None  # the BY reached it
    assert [(p, e.reason) for p, e in net.hub_events if isinstance(e, PeerLeft)] == [
        (5060, "removed")
    ]
    net.play("alice", NOTE)  # the kept group still works, same sessions
    assert net.received["bob"] == [NOTE]


def test_hub_close_says_bye_to_everyone() -> None:
    net = Net()
    for name, port in (("a", 5040), ("b", 5042), ("c", 5060)):
        net.peer(name, port)
    net.hub.close(net.now)
    net.pump()
    assert all(host.sessions == [] for host in net.peers.values())


def held_then(net: Net, leave: str) -> list[bytes]:
    """alice holds 5 notes, sustain, a bent wheel; releases one note; then leaves."""
    net.peer("alice", 5040)
    net.peer("bob", 5042)
    notes = [bytes((0x90, n, 90)) for n in (60, 64, 67, 71, 74)]
    net.play("alice", *notes, b"\x91\x30\x40", b"\xb0\x40\x7f", b"\xe0\x00\x50")
    net.play("alice", b"\x81\x30\x00", b"\x90\x48\x00")  # note off, and note on vel 0 (unheld)
    net.received["bob"].clear()
    if leave == "bye":
        net.peers["alice"].close()
        net.pump()
    elif leave == "timeout":
        net.peers.pop("alice")
        net.now += net.hub.spec.timeout + 1
        net.hub.tick(net.now)
        net.pump()
    elif leave == "removed":
        net.hub.reconfigure(c.parse("[groups]\nH = [5050, 5042]").spec(), net.now)
        net.pump()
    else:
        net.hub.close(net.now)
        net.pump()
    return net.received["bob"]


RELEASE = [bytes((0x80, n, 0)) for n in (60, 64, 67, 71, 74)] + [b"\xb0\x40\x00", b"\xe0\x00\x40"]


def test_a_departing_player_releases_exactly_what_it_held() -> None:
    for how in ("bye", "timeout", "removed", "shutdown"):
        assert held_then(Net(), how) == RELEASE, how


def test_held_notes_are_never_cut_while_the_player_is_connected() -> None:
    net = Net()
    net.peer("alice", 5040)
    net.peer("bob", 5042)
    net.play("alice", NOTE)
    for _ in range(40):  # ten minutes of holding, clock syncs keep the session alive
        net.now += 15
        net.hub.tick(net.now)
        for host in net.peers.values():
            host.tick(net.now)
        net.pump()
    assert net.received["bob"] == [NOTE]
    (alice,) = net.hub.endpoints[5040].host.established
    state = net.hub.held(alice)
    assert state is not None and state.held()[0].notes == {0x3C: 0x64}
