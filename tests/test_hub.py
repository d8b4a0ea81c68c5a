"""Routing through the Hub, without sockets: groups, rooms, no echo, reconfigure."""

from __future__ import annotations

from midihub import config as c
from midihub.hub import Hub
from midihub.rtp import PeerLeft, SessionTable
from midihub.rtp.events import Event
from tests.memnet import GROUP_AND_ROOM, MemNet
from tests.seeds import seeded

CONFIG = GROUP_AND_ROOM


class Net(MemNet):
    """The shared in-memory network (tests/memnet.py), lossless and instant, with a hub
    of CONFIG and the names this file's tests speak in: join a peer, play, who heard what."""

    def __init__(self, text: str = CONFIG) -> None:
        super().__init__(Hub(c.parse(text).spec(), rng=seeded(7, "hub")), latency=0.0)
        self.hub_events: list[tuple[int, Event]] = []
        self.hub.listeners.append(lambda e, ev: self.hub_events.append((e.port, ev)))

    def peer(self, name: str, port: int) -> SessionTable:
        peer = self.add_peer(name, port)
        self.settle()
        assert peer.table.established, f"{name} did not join :{port}"
        return peer.table

    def settle(self) -> None:
        """Everything the hub has to send, and all in flight, delivered (no time passes)."""
        self.flush_hub()
        self.run_for(0.0)

    def play(self, name: str, *messages: bytes) -> None:
        self.send(self.peers[name], list(messages))
        self.settle()

    @property
    def received(self) -> dict[str, list[bytes]]:
        return {name: peer.heard for name, peer in self.peers.items()}


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
    ssrcs = {s.local_ssrc for s in net.hub.endpoints[5042].table.established}
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
    net.settle()
    (jammer_session,) = net.peers["jammer"].table.sessions or [None]
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
    net.settle()
    assert all(peer.table.sessions == [] for peer in net.peers.values())


def held_then(net: Net, leave: str) -> list[bytes]:
    """alice holds 5 notes, sustain, a bent wheel; releases one note; then leaves."""
    net.peer("alice", 5040)
    net.peer("bob", 5042)
    notes = [bytes((0x90, n, 90)) for n in (60, 64, 67, 71, 74)]
    net.play("alice", *notes, b"\x91\x30\x40", b"\xb0\x40\x7f", b"\xe0\x00\x50")
    net.play("alice", b"\x81\x30\x00", b"\x90\x48\x00")  # note off, and note on vel 0 (unheld)
    net.received["bob"].clear()
    if leave == "bye":
        net.leave(net.peers["alice"])
        net.settle()
    elif leave == "timeout":
        net.die(net.peers["alice"])
        net.run_for(net.hub.spec.timeout + 1)
    elif leave == "removed":
        net.hub.reconfigure(c.parse("[groups]\nH = [5050, 5042]").spec(), net.now)
        net.flush_hub()
        net.settle()
    else:
        net.hub.close(net.now)
        net.flush_hub()
        net.settle()
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
    net.run_for(600)  # ten minutes of holding, clock syncs keep the session alive
    assert net.received["bob"] == [NOTE]
    (alice,) = net.hub.endpoints[5040].table.established
    assert alice.held.channels_held()[0].notes == {0x3C: 0x64}
