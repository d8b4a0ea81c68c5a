"""Listeners (recorder, monitor, stats observers) hear the datagram path after the
batch: every event, in order, exactly as it happened, once the batch's datagrams are
out; what the caps drop is never heard. Sans-IO, on the in-memory network."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from midihub import config as c
from midihub.hub import Endpoint, Guest, Hub, Outgoing
from midihub.hub.panic import Panicked
from midihub.midi.messages import note_off, note_on
from midihub.midi.notes import NoteRange
from midihub.rtp import Command, Drop, Event, MidiReceived, PeerJoined, encode_sections
from midihub.rtp.recovery import MAX_LIST_LENGTH
from tests.memnet import GROUP_AND_ROOM, MemNet, MemPeer, Wire, arriving_kind
from tests.seeds import seeded

ROOM = 5060
MAX_SYSEX = 64
CONFIG = f"[limits]\nmax_sysex = {MAX_SYSEX}\n" + GROUP_AND_ROOM


class Player(Guest):
    """A guest whose transport is a list."""

    transport = "test"

    def __init__(self, name: str) -> None:
        super().__init__(name, ("192.0.2.7", 4242), 0.0)
        self.got: list[bytes] = []

    def deliver(self, commands: Sequence[Command], now: float) -> None:
        self.got.extend(message for _, message in commands)

    def close(self, reason: str) -> None:
        pass


class Tap:
    """A listener on both lists, as the monitor is: what it heard, in order, and how
    many of the batch's datagrams had been sent when it heard each."""

    def __init__(self, hub: Hub) -> None:
        self.heard: list[tuple[int, Event, int]] = []
        self.sent: list[Outgoing] = []
        hub.listeners.append(self.hear)
        hub.midi_listeners.append(self.hear)

    def hear(self, endpoint: Endpoint, event: Event) -> None:
        self.heard.append((endpoint.port, event, len(self.sent)))

    def drain(self, hub: Hub) -> Iterator[Outgoing]:
        for out in hub.drain():
            self.sent.append(out)
            yield out

    @property
    def events(self) -> list[Event]:
        return [event for _, event, _ in self.heard]


def make_net() -> MemNet:
    return MemNet(Hub(c.parse(CONFIG).spec(), rng=seeded(22, "listener hub")), latency=0.0)


def hub_ids(hub: Hub, port: int) -> dict[str, str]:
    """The hub's public id of each RTP participant of ``port``, by its name."""
    return {s.peer_name: s.public_id for s in hub.endpoints[port].table.established}


def play(peer: MemPeer, *messages: bytes) -> list[Wire]:
    """What ``peer`` sends to play ``messages`` (one packet), not yet on the wire."""
    assert peer.session is not None
    sections = encode_sections([(0, m) for m in messages], MAX_LIST_LENGTH)
    peer.table.send([peer.session], sections, 0.0)
    return peer.datagrams_to_send()


def receive_batch(net: MemNet, wires: list[Wire]) -> None:
    """Hand ``wires`` to the hub one by one, as ``net.server`` does with one read."""
    for wire in wires:
        port = wire.dst[1] & ~1
        net.hub.receive(port, arriving_kind(wire, port), wire.data, wire.src, net.now)


def test_a_batchs_events_are_heard_after_its_datagrams_in_order_and_whole() -> None:
    net = make_net()
    a, b, d = (net.add_peer(name, ROOM) for name in ("a", "b", "d"))
    net.run_for(1.0)
    tap = Tap(net.hub)
    hub = net.hub
    by_who = {public_id: name for name, public_id in hub_ids(hub, ROOM).items()}
    sysex = b"\xf0" + b"\x01" * MAX_SYSEX + b"\xf7"  # over the cap: dropped whole
    batch = [
        *play(a, note_on(0, 60, 100)),
        *play(b, note_on(1, 62, 90), note_on(1, 64, 80)),
        *play(a, sysex, note_off(0, 60)),
        *play(d, note_on(2, 67, 70)),
    ]
    b.table.close()  # b leaves holding two notes: the hub releases them for it
    batch += b.datagrams_to_send()
    receive_batch(net, batch)
    assert tap.heard == []  # nothing but forwarding ran while the batch was read
    sent = list(tap.drain(hub))
    assert len(sent) > 5  # the forwards to the room and the release
    # One dispatch, after the last datagram of the batch was sent.
    assert [at for _, _, at in tap.heard] == [len(sent)] * len(tap.heard)
    heard = [
        (type(event).__name__, by_who.get(event.who.public_id), [m for _, m in commands])
        for event in tap.events
        for commands in [getattr(event, "commands", ())]
    ]
    assert heard == [
        ("MidiReceived", "a", [note_on(0, 60, 100)]),
        ("MidiReceived", "b", [note_on(1, 62, 90), note_on(1, 64, 80)]),
        ("MidiReceived", "a", [note_off(0, 60)]),  # the SysEx the cap dropped: not heard
        ("MidiReceived", "d", [note_on(2, 67, 70)]),
        ("Released", "b", [note_off(1, 62), note_off(1, 64)]),
        ("PeerLeft", "b", []),
    ]
    assert hub.endpoints[ROOM].table.counters.drops[Drop.SYSEX_TOO_LONG] == 1
    list(tap.drain(hub))
    assert len(tap.heard) == len(heard)  # each event heard once


def test_events_outside_a_batch_are_heard_at_once_after_those_waiting() -> None:
    net = make_net()
    a = net.add_peer("a", ROOM)
    net.add_peer("b", ROOM)
    net.run_for(1.0)
    tap = Tap(net.hub)
    hub = net.hub
    receive_batch(net, play(a, note_on(0, 60, 100)))
    assert tap.events == []
    guest = Player("web")
    assert hub.admit(ROOM, guest, net.now) is None  # not a datagram: heard now
    hub.play(guest, [(0, note_on(3, 50, 60))], net.now)
    hub.panic(ROOM, NoteRange.ALL, net.now)
    kinds = [type(event) for event in tap.events]
    assert kinds == [MidiReceived, PeerJoined, MidiReceived, Panicked]
    assert isinstance(tap.events[2], MidiReceived) and tap.events[2].who == guest.who
    list(tap.drain(hub))
    assert len(tap.events) == 4


def test_a_listener_that_raises_loses_no_other_event() -> None:
    net = make_net()
    a = net.add_peer("a", ROOM)
    net.add_peer("b", ROOM)
    net.run_for(1.0)
    heard: list[bytes] = []
    failed: list[bytes] = []

    def fragile(endpoint: Endpoint, event: Event) -> None:
        assert isinstance(event, MidiReceived)
        message = event.commands[0][1]
        if not failed:
            failed.append(message)
            raise RuntimeError("a bug in a listener")
        heard.append(message)

    net.hub.midi_listeners.append(fragile)
    notes = [note_on(0, n, 100) for n in (60, 62, 64)]
    receive_batch(net, [wire for note in notes for wire in play(a, note)])
    with pytest.raises(RuntimeError):
        list(net.hub.drain())
    assert failed == notes[:1] and heard == []
    net.hub.dispatch()
    assert heard == notes[1:]
