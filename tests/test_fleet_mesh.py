"""One room across regions: the links the fleet directory plans (``fleet/mesh.py``), and
three real hubs on 127.0.0.1-3 joined by those plans, with a player on each over real
RTP sessions: every message once, never an echo, links torn down when a hub leaves the
directory, releases, panic and recordings across the links. The directory here is
HubRecords built by the test (the PostgreSQL one is in tests/test_fleet*.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import mido
import pytest

from midihub.fleet.mesh import Mesh, plan_links
from midihub.fleet.records import HubRecord, RoomRecord
from midihub.hub import Hub
from midihub.hub.spec import EndpointSpec, HubSpec, LinkSpec
from midihub.midi import messages as m
from midihub.midi.notes import NoteRange
from midihub.record.manager import RecordingManager
from tests.fixtures import MakePeer, StartHub
from tests.ports import free_port_pair
from tests.support import PyPeer, RunningHub, make_config, marked, wait_for

T0 = datetime(2026, 12, 8, 3, 0, tzinfo=UTC)


def room(name: str, port: int) -> RoomRecord:
    return RoomRecord(name, "room", (port,))


def group(name: str, port_in: int, port_out: int) -> RoomRecord:
    return RoomRecord(name, "group", (port_in, port_out))


def hub_record(name: str, address: str, *rooms: RoomRecord, up: bool = True) -> HubRecord:
    return HubRecord(name, address, "1.0", T0, T0, up, tuple(rooms), ())


def spec_of(*rooms: RoomRecord, links: tuple[LinkSpec, ...] = ()) -> HubSpec:
    endpoints: list[EndpointSpec] = []
    for r in rooms:
        if r.kind == "room":
            endpoints.append(EndpointSpec(r.ports[0], r.name, "room"))
        else:
            endpoints.append(EndpointSpec(r.ports[0], r.name, "in"))
            endpoints.append(EndpointSpec(r.ports[1], r.name, "out"))
    return HubSpec(endpoints=tuple(endpoints), links=links)


# -- the plan -------------------------------------------------------------------


def test_the_hub_whose_name_sorts_first_dials_one_link_per_pair_per_room() -> None:
    hubs = (
        hub_record("eu-1", "10.0.0.1", room("Jam", 5004)),
        hub_record("us-1", "10.0.0.2", room("Jam", 6004), room("Other", 6010)),
        hub_record("ap-1", "hub-ap.example.org", room("Jam", 7004)),
    )
    mine = spec_of(room("Jam", 5004), room("Solo", 5010))
    assert plan_links("eu-1", hubs, mine) == (
        LinkSpec("10.0.0.2:6004", "10.0.0.2", 6004, 5004, "fleet us-1 Jam"),
    )
    assert plan_links("ap-1", hubs, spec_of(room("Jam", 7004))) == (
        LinkSpec("10.0.0.1:5004", "10.0.0.1", 5004, 7004, "fleet eu-1 Jam"),
        LinkSpec("10.0.0.2:6004", "10.0.0.2", 6004, 7004, "fleet us-1 Jam"),
    )
    assert plan_links("us-1", hubs, spec_of(room("Jam", 6004))) == ()  # it sorts last


def test_every_pair_sharing_a_room_is_linked_exactly_once_whatever_the_names() -> None:
    names = ["b", "a", "d", "c"]
    for order in itertools.permutations(names):
        hubs = tuple(
            hub_record(name, f"10.0.0.{i + 1}", room("Jam", 5000 + 2 * i))
            for i, name in enumerate(order)
        )
        address = {h.name: h.address for h in hubs}
        pairs: list[frozenset[str]] = []
        for h in hubs:
            for link in plan_links(h.name, hubs, spec_of(*h.rooms)):
                (other,) = [n for n, a in address.items() if a == link.host]
                pairs.append(frozenset((h.name, other)))
        assert sorted(map(sorted, pairs)) == sorted(
            sorted(p) for p in itertools.combinations(names, 2)
        )


def test_down_hubs_other_kinds_and_unknown_rooms_are_not_linked() -> None:
    mine = spec_of(room("Jam", 5004), group("Band", 5010, 5012))
    hubs = (
        hub_record("a", "10.0.0.1"),  # me
        hub_record("b", "10.0.0.2", room("Jam", 6004), up=False),
        hub_record("c", "10.0.0.3", group("Jam", 6010, 6012), room("Band", 6020)),
        hub_record("d", "10.0.0.4", room("Nope", 6004), room("Bad", 0)),
        hub_record("e", "", room("Jam", 6004)),  # no address yet
    )
    assert plan_links("a", hubs, mine) == ()


def test_a_group_is_linked_out_to_in_and_in_to_out() -> None:
    hubs = (hub_record("a", "10.0.0.1"), hub_record("b", "10.0.0.2", group("Band", 6010, 6012)))
    assert plan_links("a", hubs, spec_of(group("Band", 5010, 5012))) == (
        LinkSpec("10.0.0.2:6010", "10.0.0.2", 6010, 5012, "fleet b Band"),  # my out → its in
        LinkSpec("10.0.0.2:6012", "10.0.0.2", 6012, 5010, "fleet b Band"),  # its out → my in
    )


def test_configured_links_win_and_ipv6_addresses_are_bracketed() -> None:
    configured = LinkSpec("10.0.0.2:6004", "10.0.0.2", 6004, 5004, "by hand", journal=False)
    hubs = (
        hub_record("a", "10.0.0.1"),
        hub_record("b", "10.0.0.2", room("Jam", 6004)),
        hub_record("c", "fd00::3", room("Jam", 7004)),
    )
    plan = plan_links("a", hubs, spec_of(room("Jam", 5004), links=(configured,)))
    assert plan == (LinkSpec("[fd00::3]:7004", "fd00::3", 7004, 5004, "fleet c Jam"),)


def test_a_hub_the_directory_does_not_list_up_dials_no_one() -> None:
    b = hub_record("b", "10.0.0.2", room("Jam", 6004))
    mine = spec_of(room("Jam", 5004))
    assert plan_links("a", (b,), mine) == ()  # not registered (yet, or its name is refused)
    assert plan_links("a", (hub_record("a", "10.0.0.1", up=False), b), mine) == ()
    assert len(plan_links("a", (hub_record("a", "10.0.0.1"), b), mine)) == 1


def test_applying_a_plan_never_touches_configured_links() -> None:
    configured = LinkSpec("10.0.0.9:9004", "10.0.0.9", 9004, 5004, "by hand")
    spec = spec_of(room("Jam", 5004), links=(configured,))
    hub = Hub(spec)
    by_hand = hub.links[("10.0.0.9:9004", 5004)]
    applied: list[HubSpec] = []

    def reconfigure(new: HubSpec) -> list[str]:
        applied.append(new)
        hub.reconfigure(new, 1.0)
        return []

    mesh = Mesh("a", lambda: hub.spec, reconfigure)
    a = hub_record("a", "10.0.0.1", room("Jam", 5004))
    b = hub_record("b", "10.0.0.2", room("Jam", 6004))
    mesh.changed((a, b))
    assert set(hub.links) == {("10.0.0.9:9004", 5004), ("10.0.0.2:6004", 5004)}
    fleet_link = hub.links[("10.0.0.2:6004", 5004)]
    mesh.changed((a, replace(b, last_seen=datetime(2026, 12, 8, 3, 1, tzinfo=UTC))))
    assert len(applied) == 1  # the same plan: the hub is left alone
    assert hub.links[("10.0.0.2:6004", 5004)] is fleet_link
    mesh.changed(())
    assert set(hub.links) == {("10.0.0.9:9004", 5004)}
    assert hub.links[("10.0.0.9:9004", 5004)] is by_hand  # the same Link: never restarted
    assert hub.spec.links == (configured,)


def test_after_an_outage_the_hubs_linked_before_keep_their_links_for_the_hold() -> None:
    hub = Hub(spec_of(room("Jam", 5004)))
    now = [0.0]
    timers: list[tuple[float, Callable[[], None]]] = []

    class Timer:
        def cancel(self) -> None:
            timers.clear()

    def call_later(delay: float, job: Callable[[], None]) -> Timer:
        timers.append((now[0] + delay, job))
        return Timer()

    def reconfigure(new: HubSpec) -> list[str]:
        hub.reconfigure(new, now[0])
        return []

    mesh = Mesh(
        "a",
        lambda: hub.spec,
        reconfigure,
        clock=lambda: now[0],
        call_later=call_later,
    )
    a = hub_record("a", "10.0.0.1", room("Jam", 5004))
    b = hub_record("b", "10.0.0.2", room("Jam", 6004))
    c = hub_record("c", "10.0.0.3", room("Jam", 7004))
    mesh.changed((a, b))
    linked = {("10.0.0.2:6004", 5004)}
    assert set(hub.links) == linked
    mesh.hold(10.0)  # the database was away: b shows down, then is gone (expired)
    mesh.changed((a, replace(b, up=False), c))
    assert set(hub.links) == linked | {("10.0.0.3:7004", 5004)}  # new links still made
    mesh.changed((a, c))
    assert ("10.0.0.2:6004", 5004) in hub.links and mesh.holding
    ((when, job),) = timers
    now[0] = when  # the hold is over and b never came back: the directory decides
    job()
    assert set(hub.links) == {("10.0.0.3:7004", 5004)} and not mesh.holding
    mesh.close()  # the hub stops: its links change no more
    mesh.changed((a, b))
    assert set(hub.links) == {("10.0.0.3:7004", 5004)}


# -- three real hubs --------------------------------------------------------------


class Member:
    """A hub in the test's fleet: its running hub, its address and its mesh."""

    def __init__(self, running: RunningHub, name: str, address: str) -> None:
        self.running = running
        self.name = name
        self.address = address
        self.mesh = Mesh(name, lambda: running.hub.spec, running.server.reconfigure)

    @property
    def hub(self) -> Hub:
        return self.running.hub

    def record(self) -> HubRecord:
        """This hub as its heartbeat would list it."""
        rooms: list[RoomRecord] = []
        spec = self.hub.spec
        for endpoint in spec.endpoints:
            if endpoint.role == "room":
                rooms.append(room(endpoint.owner, endpoint.port))
            elif endpoint.role == "in":
                ports = spec.group_ports(endpoint.owner)
                assert ports is not None
                rooms.append(group(endpoint.owner, *ports))
        return hub_record(self.name, self.address, *rooms)

    def links_up(self) -> bool:
        return all(link.up for link in self.hub.links.values())

    def link_sessions(self, port: int) -> int:
        return len(self.hub.endpoints[port].hub_links)


def publish(members: Iterable[Member], directory: Iterable[Member]) -> None:
    """Every member in ``members`` reads the directory holding ``directory``."""
    hubs = tuple(d.record() for d in directory)
    for member in members:
        member.mesh.changed(hubs)


async def fleet_of(start_hub: StartHub, text: str, *names: str) -> list[Member]:
    """One hub per name on 127.0.0.1, .2, ... each with ``text`` (``{port}`` filled in per
    hub with a port pair free on its address), all reading one directory."""
    members = []
    for i, name in enumerate(names):
        address = f"127.0.0.{i + 1}"
        ports = [free_port_pair(address) for _ in range(text.count("{"))]
        running = start_hub(f"name = '{name}'\n" + text.format(*ports), bind=address)
        members.append(Member(running, name, address))
    publish(members, members)
    for member in members:
        await wait_for(member.links_up, 10, f"{member.name}'s fleet links")
    return members


def notes(count: int, channel: int = 0) -> list[bytes]:
    out = []
    for i in range(count):
        out += [m.note_on(channel, 30 + i % 60, 1 + i % 120), m.note_off(channel, 30 + i % 60)]
    return out


async def play(peer: PyPeer, messages: list[bytes]) -> None:
    for i in range(0, len(messages), 2):
        peer.send(*messages[i : i + 2])
        await asyncio.sleep(0.002)


def jam_port(member: Member) -> int:
    (endpoint,) = member.hub.endpoints.values()
    return endpoint.port


async def players(make_peer: MakePeer, members: list[Member], *names: str) -> list[PyPeer]:
    peers = []
    for member, name in zip(members, names, strict=True):
        peer = make_peer(name)
        await peer.connect(jam_port(member), host=member.address)
        peers.append(peer)
    return peers


async def test_three_hubs_form_one_room_by_name_and_a_hub_leaving_the_directory_is_unlinked(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    a, b, c = await fleet_of(start_hub, "[rooms]\nJam = {}\n", "a", "b", "c")
    assert (len(a.hub.links), len(b.hub.links), len(c.hub.links)) == (2, 1, 0)
    for member in (a, b, c):  # two link sessions each: one per other hub
        await wait_for(lambda x=member: x.link_sessions(jam_port(x)) == 2, 10, "link sessions")
    alice, bob, cleo = await players(make_peer, [a, b, c], "alice", "bob", "cleo")
    from_a, from_b, from_c = notes(30), notes(20, channel=4), notes(10, channel=9)
    await play(alice, from_a)
    await play(bob, from_b)
    await play(cleo, from_c)
    for peer, heard in ((alice, from_b + from_c), (bob, from_a + from_c), (cleo, from_a + from_b)):
        count = len(heard)
        await wait_for(lambda p=peer, n=count: len(p.received) >= n, 10, peer.name)
    await marked(alice, bob, cleo)
    await marked(bob, alice, cleo)
    await marked(cleo, alice, bob)
    # Exactly once each (in each sender's order), and never one's own notes back.
    assert sorted(alice.received) == sorted(from_b + from_c)
    assert [x for x in alice.received if x[0] & 0x0F == 4] == from_b
    assert [x for x in alice.received if x[0] & 0x0F == 9] == from_c
    assert sorted(bob.received) == sorted(from_a + from_c)
    assert sorted(cleo.received) == sorted(from_a + from_b)

    # c leaves the directory (expired): a and b take their links to it down, and the
    # other two keep playing.
    publish([a, b], [a, b])
    assert (len(a.hub.links), len(b.hub.links)) == (1, 0)
    await wait_for(lambda: c.link_sessions(jam_port(c)) == 0, 10, "c to lose both links")
    await wait_for(lambda: len(c.running.participants(jam_port(c))) == 1, 10, "only cleo on c")
    for peer in (alice, bob, cleo):
        peer.received.clear()
    again = notes(15, channel=2)
    await play(alice, again)
    await play(bob, from_b)
    await marked(alice, bob)
    await marked(bob, alice)
    assert bob.received == again and alice.received == from_b
    assert cleo.received == []

    # c is back in the directory: linked again.
    publish([a, b, c], [a, b, c])
    await wait_for(a.links_up, 10, "a's link to c again")
    await wait_for(b.links_up, 10, "b's link to c again")
    await marked(cleo, alice, bob)


async def test_a_fleet_group_carries_in_to_every_hubs_out_once(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    a, b = await fleet_of(start_hub, "[groups]\nBand = [{}, {}]\n", "a", "b")
    ports = {x.name: x.hub.spec.group_ports("Band") for x in (a, b)}
    assert len(a.hub.links) == 2 and len(b.hub.links) == 0
    (a_in, a_out), (b_in, b_out) = ports["a"], ports["b"]  # type: ignore[misc]
    alice, carol, bob, dave = (make_peer(n) for n in ("alice", "carol", "bob", "dave"))
    await alice.connect(a_in, host=a.address)
    await carol.connect(a_out, host=a.address)
    await bob.connect(b_in, host=b.address)
    await dave.connect(b_out, host=b.address)
    from_a, from_b = notes(20), notes(20, channel=3)
    await play(alice, from_a)
    await play(bob, from_b)
    await wait_for(lambda: len(carol.received) >= 80 and len(dave.received) >= 80, 10, "outs")
    await marked(alice, carol, dave)
    await marked(bob, carol, dave)
    for listener in (carol, dave):
        assert [x for x in listener.received if x[0] & 0x0F == 0] == from_a
        assert [x for x in listener.received if x[0] & 0x0F == 3] == from_b
        assert len(listener.received) == 80
    assert alice.received == [] and bob.received == []  # in ports hear nothing back


async def test_a_remote_players_held_notes_are_released_across_the_link(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    a, b = await fleet_of(start_hub, "[rooms]\nJam = {}\n", "a", "b")
    alice, bob = await players(make_peer, [a, b], "alice", "bob")
    bob.send(m.note_on(0, 60, 100), m.control_change(0, m.CC_SUSTAIN, 127))
    await wait_for(lambda: len(alice.received) == 2, 10, "alice to hear bob's note")
    bob.bye()  # leaves holding the note and the pedal
    await wait_for(lambda: m.note_off(0, 60) in alice.received, 10, "the release on hub a")
    assert m.control_change(0, m.CC_SUSTAIN, 0) in alice.received
    assert not alice.state.holds(0, 60) and not alice.state.pedal(0, m.CC_SUSTAIN)


async def test_a_panic_on_one_hub_reaches_the_players_of_every_hub_once(
    start_hub: StartHub, make_peer: MakePeer
) -> None:
    a, b, c = await fleet_of(start_hub, "[rooms]\nJam = {}\n", "a", "b", "c")
    alice, bob, cleo = await players(make_peer, [a, b, c], "alice", "bob", "cleo")
    alice.send(m.note_on(0, 60, 100))
    await wait_for(lambda: len(bob.received) == 1 and len(cleo.received) == 1, 10, "the note")
    # The panic is asked of b (for the room): a and c are reached over b's links.
    loop = asyncio.get_running_loop()
    b.hub.panic(jam_port(b), NoteRange.ALL, loop.time())
    b.running.server.flush()
    all_off = [m.control_change(ch, m.CC_ALL_NOTES_OFF, 0) for ch in range(16)]
    for peer in (alice, bob, cleo):
        await wait_for(lambda p=peer: all_off[-1] in p.received, 10, f"{peer.name}: the panic")
    await marked(cleo, alice, bob)
    for peer in (alice, bob, cleo):
        assert [x for x in peer.received if x in all_off] == all_off, peer.name  # once each
        assert peer.received.count(m.note_off(0, 60)) == 1, peer.name


async def test_a_recording_on_one_hub_has_a_track_for_each_remote_hub(
    start_hub: StartHub, make_peer: MakePeer, tmp_path: Path
) -> None:
    a, b, c = await fleet_of(start_hub, "[rooms]\nJam = {}\n", "a", "b", "c")
    settings = make_config("").record.model_copy(update={"dir": str(tmp_path)})
    managers = [RecordingManager(x.hub, tmp_path / x.name, settings) for x in (a, c)]
    tracks: list[dict[str, list[bytes]]] = []
    try:
        for manager in managers:
            await manager.start()
            await manager.ready()
        alice, bob, cleo = await players(make_peer, [a, b, c], "alice", "bob", "cleo")
        recordings = [
            mg.start_recording(jam_port(x)) for mg, x in zip(managers, (a, c), strict=True)
        ]
        alice.send(m.note_on(0, 60, 100), m.note_off(0, 60))
        bob.send(m.note_on(1, 62, 100), m.note_off(1, 62))
        cleo.send(m.note_on(2, 64, 100), m.note_off(2, 64))
        for peer in (alice, bob, cleo):
            await wait_for(lambda p=peer: len(p.received) == 4, 10, f"{peer.name} to hear both")
        for manager, recording in zip(managers, recordings, strict=True):
            await manager.stop_recording(recording.id)
            path = manager.path_of(recording.id)
            assert path is not None
            midi = mido.MidiFile(str(path), charset="utf-8")
            tracks.append(
                {t.name: [bytes(e.bin()) for e in t if not e.is_meta] for t in midi.tracks[1:]}
            )
    finally:
        for manager in managers:
            await manager.close()
    # A link carries a remote hub's players as one stream: one track per remote hub, named
    # as the link session introduces itself: on the hub that dialed, the remote room's
    # name ("b Jam"); on the hub that was dialed, the dialer's link name.
    alice_notes = [m.note_on(0, 60, 100), m.note_off(0, 60)]
    bob_notes = [m.note_on(1, 62, 100), m.note_off(1, 62)]
    cleo_notes = [m.note_on(2, 64, 100), m.note_off(2, 64)]
    assert tracks[0] == {"alice": alice_notes, "b Jam": bob_notes, "c Jam": cleo_notes}
    assert tracks[1] == {
        "cleo": cleo_notes,
        "a Jam (midihub link)": alice_notes,
        "b Jam (midihub link)": bob_notes,
    }


@pytest.mark.parametrize("removed", ["room", "hub down"])
async def test_links_go_when_the_room_is_removed_or_the_hub_is_down_and_release_both_sides(
    start_hub: StartHub, make_peer: MakePeer, removed: str
) -> None:
    a, b = await fleet_of(start_hub, "[rooms]\nJam = {}\n", "a", "b")
    assert len(a.hub.links) == 1
    alice, bob = await players(make_peer, [a, b], "alice", "bob")
    alice.send(m.note_on(0, 60, 100))
    bob.send(m.note_on(1, 62, 100))
    await wait_for(lambda: len(alice.received) == 1 and len(bob.received) == 1, 10, "the notes")
    gone = replace(b.record(), rooms=()) if removed == "room" else replace(b.record(), up=False)
    a.mesh.changed((a.record(), gone))
    assert a.hub.links == {}
    await wait_for(lambda: b.link_sessions(jam_port(b)) == 0, 10, "b to hear the BY")
    # What came over the link and is still held is let go on each side.
    await wait_for(lambda: m.note_off(1, 62) in alice.received, 10, "a to release bob's note")
    await wait_for(lambda: m.note_off(0, 60) in bob.received, 10, "b to release alice's note")
