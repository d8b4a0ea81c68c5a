"""Listeners (recorder, monitor, stats observers) hear the datagram path after the
batch: every event, in order, exactly as it happened, once the batch's datagrams are
out; what the caps drop is never heard. And a forward counts what each participant
was sent in O(1), with the same numbers. Sans-IO, on the in-memory network."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from midihub import config as c
from midihub.hub import Endpoint, Hub, Outgoing
from midihub.hub.links import LINK_MARK
from midihub.hub.panic import Panicked
from midihub.midi.messages import note_off, note_on
from midihub.midi.notes import NoteRange
from midihub.rtp import Drop, Event, MidiReceived, PeerJoined, encode_sections
from midihub.rtp.recovery import MAX_LIST_LENGTH
from tests.memnet import GROUP_AND_ROOM, MemNet, MemPeer, Wire, arriving_kind
from tests.seeds import seeded
from tests.test_input_path import Player  # a guest whose transport is a list

ROOM = 5060
MAX_SYSEX = 64
CONFIG = f"[limits]\nmax_sysex = {MAX_SYSEX}\n" + GROUP_AND_ROOM


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


class CountingDict(dict[str, object]):
    """``Endpoint.stats`` that counts its look-ups."""

    lookups = 0

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        CountingDict.lookups += 1
        return super().get(key, default)

    def __getitem__(self, key: str) -> object:
        CountingDict.lookups += 1
        return super().__getitem__(key)


def test_a_forward_to_a_room_updates_no_per_receiver_stats() -> None:
    net = make_net()
    players = [net.add_peer(f"p{i}", ROOM) for i in range(12)]
    net.run_for(1.0)
    endpoint = net.hub.endpoints[ROOM]
    endpoint.stats = CountingDict(endpoint.stats)  # type: ignore[assignment]
    CountingDict.lookups = 0
    receive_batch(net, play(players[0], note_on(0, 60, 100)))
    list(net.hub.drain())
    assert endpoint.messages_out == 11
    assert CountingDict.lookups <= 2  # the sender's, not one per receiver (11 before)
    listener = endpoint.stats[hub_ids(net.hub, ROOM)["p1"]]
    assert listener.messages_out == 1  # type: ignore[attr-defined]


def test_messages_out_is_what_each_participant_was_sent() -> None:
    """Rooms (no echo), groups, hub links (split horizon), guests, a panic to one and
    to all, releases and late joiners: each participant's ``messages_out`` (the API's
    ``messagesOut``) is what it received, and the ports' totals (/metrics) add up."""
    net = make_net()
    hub = net.hub
    a, b = net.add_peer("a", ROOM), net.add_peer("b", ROOM)
    link1 = net.add_peer(f"east Jam {LINK_MARK}", ROOM)  # another hub's link: split horizon
    link2 = net.add_peer(f"west Jam {LINK_MARK}", ROOM)
    sender, listener = net.add_peer("in", 5040), net.add_peer("out", 5042)
    net.run_for(1.0)
    guest = Player("web")
    assert hub.admit(ROOM, guest, net.now) is None

    def run(peer: MemPeer, *messages: bytes) -> None:
        net.send(peer, list(messages))
        net.run_for(0.0)

    run(a, note_on(0, 60, 100), note_on(0, 61, 100))
    run(link1, note_on(1, 40, 90))  # not to link2
    run(link2, note_on(1, 41, 90), note_off(1, 41))  # not to link1
    hub.play(guest, [(0, note_on(2, 70, 80))], net.now)
    net.flush_hub()
    net.run_for(0.0)
    run(sender, note_on(3, 30, 20), note_on(3, 31, 20), note_on(3, 32, 20))
    late = net.add_peer("late", ROOM)
    net.run_for(1.0)
    run(b, note_on(4, 50, 50))
    run(late, note_off(4, 50))
    hub.panic(ROOM, NoteRange.ALL, net.now, participant=guest)  # to one
    hub.panic(ROOM, NoteRange.ALL, net.now, channels=[5])  # to everyone
    net.flush_hub()
    net.run_for(0.0)
    net.leave(a)  # holding 60 and 61: released to the others
    net.run_for(1.0)

    room = hub.endpoints[ROOM]
    group_out = hub.endpoints[5042]
    received = {peer: len(peer.heard) for peer in (b, link1, link2, late, listener)}
    assert note_on(1, 41, 90) not in link1.heard  # split horizon: really left out
    assert note_on(1, 40, 90) not in link2.heard and note_on(1, 40, 90) in b.heard
    for peer, count in received.items():
        port = room if peer is not listener else group_out
        public_id = hub_ids(hub, port.port)[peer.table.name]
        assert port.stats[public_id].messages_out == count, peer.table.name
    assert room.stats[guest.public_id].messages_out == len(guest.got)
    assert len(guest.got) > 10 and received[b] > 10
    everyone = [*received.values(), len(a.heard), len(guest.got)]
    assert room.messages_out == sum(everyone) - received[listener]
    assert group_out.messages_out == received[listener]


def test_listeners_after_the_batch_know_when_its_datagrams_arrived() -> None:
    """A recording stamps what it hears after the batch with the batch's arrival (the
    socket layer's ``Hub.stamp``), not with the later time it hears it; what is heard
    outside a batch has no arrival time (``heard_at`` None: the listener's own now)."""
    net = make_net()
    a = net.add_peer("a", ROOM)
    net.add_peer("b", ROOM)
    net.run_for(1.0)
    hub = net.hub
    times: list[tuple[str, float | None]] = []
    hub.listeners.append(lambda _, event: times.append((type(event).__name__, hub.heard_at)))
    hub.midi_listeners.append(lambda _, event: times.append((type(event).__name__, hub.heard_at)))
    hub.stamp = 1234.5
    receive_batch(net, play(a, note_on(0, 60, 100)))
    hub.stamp = 9999.0  # the next batch's: the one waiting keeps its own
    list(hub.drain())
    assert times == [("MidiReceived", 1234.5)]
    assert hub.heard_at is None
    guest = Player("web")
    assert hub.admit(ROOM, guest, net.now) is None
    hub.play(guest, [(0, note_on(3, 50, 60))], net.now)
    assert times[1:] == [("PeerJoined", None), ("MidiReceived", None)]


def test_a_departing_links_release_goes_to_local_players_never_to_another_hub() -> None:
    """What a hub link fed us came from another hub; when it leaves holding notes, its
    release reaches this hub's own players only: the other hubs' links carried those
    notes themselves, and get their release from their own hub (split horizon), so a
    player there hears each NoteOff once."""
    net = make_net()
    a = net.add_peer("a", ROOM)
    east = net.add_peer(f"east Jam {LINK_MARK}", ROOM)
    west = net.add_peer(f"west Jam {LINK_MARK}", ROOM)
    net.run_for(1.0)
    net.send(east, [note_on(1, 40, 90)])
    net.run_for(0.0)
    assert a.heard == [note_on(1, 40, 90)] and west.heard == []  # split horizon
    east.table.close()  # east's hub goes, holding the note
    net.run_for(1.0)
    assert a.heard == [note_on(1, 40, 90), note_off(1, 40)]  # released for the local player
    assert west.heard == []  # and not on to the other hub
