"""One input path for every participant: the same admission (``max_participants``
counted at the join, sessions and guests together), the same SysEx caps and rate,
and ``release_after`` for senders that send no recovery journal. Sans-IO, on the
in-memory network (tests/memnet.py), with time driven explicitly."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from midihub import config as c
from midihub.cli import main
from midihub.hub import Endpoint, Guest, Hub
from midihub.midi.held import NoteState
from midihub.midi.messages import control_change, note_off, note_on
from midihub.rtp import (
    Command,
    Drop,
    Event,
    LeaveReason,
    Limits,
    NotesReleased,
    PeerLeft,
    SessionTable,
)
from midihub.rtp.unrepaired import UnrepairedNotes
from tests.memnet import (
    GROUP_AND_ROOM,
    HUB_HOST,
    MemNet,
    MemPeer,
    TableNode,
    Wire,
    lossless,
)
from tests.seeds import seeded
from tests.support import LOCALHOST, PyPeer, RunningHub, free_port_pair, make_config, wait_for

ROOM = 5060
REMOTE = ("10.0.3.1", 5004)


class Player(Guest):
    """A guest (what a browser is to the hub) whose transport is a list."""

    transport = "test"

    def __init__(self, name: str) -> None:
        super().__init__(name, ("192.0.2.7", 4242), 0.0)
        self.got: list[bytes] = []

    def deliver(self, commands: Sequence[Command], now: float) -> None:
        self.got.extend(message for _, message in commands)

    def close(self, reason: str) -> None:
        pass


def make_net(extra: str = "", *, rule: object = lossless) -> tuple[MemNet, list[Event]]:
    hub = Hub(c.parse(extra + GROUP_AND_ROOM).spec(), rng=seeded(21, "input hub"))
    net = MemNet(hub, rule=rule)  # type: ignore[arg-type]
    events: list[Event] = []
    hub.listeners.append(lambda endpoint, event: events.append(event))
    return net, events


def room(net: MemNet) -> Endpoint:
    return net.hub.endpoints[ROOM]


def refused(net: MemNet) -> int:
    return room(net).table.counters.drops.get(Drop.PORT_FULL, 0)


def told_to_go(peer: MemPeer) -> bool:
    """The hub ended the peer's session (BY) and it knows."""
    return any(isinstance(e, PeerLeft) and e.reason == "bye" for e in peer.events)


# -- admission ------------------------------------------------------------------


def test_six_players_inviting_at_once_on_a_port_for_two_two_join() -> None:
    net, _ = make_net("max_participants = 2\n")
    peers = [net.add_peer(f"p{i}", ROOM) for i in range(6)]  # six INs in flight together
    net.run_for(10.0)
    joined = room(net).table.established
    assert len(joined) == 2
    assert refused(net) == 4  # counted once each, as at the IN
    assert sum(told_to_go(peer) for peer in peers) == 4
    assert {s.peer_name for s in joined} == {
        peer.table.name for peer in peers if not told_to_go(peer)
    }
    assert room(net).table.pending == 0  # nothing left half-open either


def test_a_guest_takes_a_place_an_rtp_session_then_cannot() -> None:
    net, _ = make_net("max_participants = 2\n")
    hub = net.hub
    browser = Player("browser")
    assert hub.admit(ROOM, browser, net.now) is None
    first, second = net.add_peer("first", ROOM), net.add_peer("second", ROOM)
    net.run_for(10.0)
    assert len(room(net).table.established) == 1  # with the guest: two
    assert len(room(net).participants) == 2
    assert refused(net) == 1 and told_to_go(first) != told_to_go(second)
    # Full with one of each: another guest is refused the same way, and counted alike.
    assert hub.admit(ROOM, Player("late"), net.now) == "the port is full"
    assert refused(net) == 2
    # The guest leaves: its place is free for an RTP session again.
    hub.depart(browser, LeaveReason.CLOSED, net.now)
    net.add_peer("third", ROOM)
    net.run_for(10.0)
    assert len(room(net).table.established) == 2 and refused(net) == 2


def test_sessions_in_the_handshake_cannot_pass_the_cap_when_they_complete() -> None:
    net, events = make_net("max_participants = 2\n")
    table = room(net).table
    late = net.add_peer("late", ROOM)
    # Its IN was accepted (the port was empty); stop before it proves its address.
    net.run_for(5.0, stop=lambda: any(s.established and not s.joined for s in table.sessions))
    assert table.pending == 1 and not table.established
    for name in ("b1", "b2"):  # meanwhile the port fills up
        assert net.hub.admit(ROOM, Player(name), net.now) is None
    net.run_for(10.0)
    assert table.established == [] and len(room(net).participants) == 2
    assert refused(net) == 1 and told_to_go(late)
    assert not any(e.who.name == "late" for e in events)  # never joined, nothing to log


def test_an_outbound_session_that_proves_itself_on_a_full_port_is_ended() -> None:
    """The hub's own invitations (links) pass the same admission when they join."""
    net, events = make_net("max_participants = 1\n")
    remote = net.attach(TableNode(SessionTable("remote", rng=seeded(3, "remote")), REMOTE))
    assert net.hub.admit(ROOM, Player("browser"), net.now) is None  # the only place
    net.hub.connect(ROOM, REMOTE, net.now)
    net.flush_hub()
    net.run_for(10.0)
    left = [e for e in events if isinstance(e, PeerLeft)]
    assert [(e.reason, e.joined) for e in left] == [(LeaveReason.FULL, False)]
    assert room(net).table.established == [] and refused(net) == 1
    assert not remote.table.sessions  # told with BY


# -- SysEx: the same caps for a guest as for an RTP sender -------------------------


def big_listener(net: MemNet, name: str = "listener") -> MemPeer:
    """An RTP participant that itself accepts any SysEx, to measure what the hub sends."""
    limits = Limits(max_sysex=1 << 20, sysex_rate=1e12)
    table = SessionTable(name, rng=seeded(name, "listener"), limits=limits)
    peer = net.attach(MemPeer(table, ("10.0.2.1", 5004)))
    net.peers[name] = peer
    peer.session = table.connect((HUB_HOST, ROOM), net.now)
    net.flush(peer)
    return peer


def sysex(size: int, fill: int) -> bytes:
    return b"\xf0" + bytes([fill & 0x7F]) * (size - 2) + b"\xf7"


def test_a_guests_sysex_is_held_to_the_rtp_senders_rate_and_size() -> None:
    net, _ = make_net()
    listener = big_listener(net)
    net.run_for(3.0)
    assert room(net).table.established
    tapped: list[bytes] = []  # what the recorder and monitor are shown
    net.hub.midi_listeners.append(
        lambda endpoint, event: tapped.extend(m for _, m in event.commands)
    )
    player = Player("browser")
    assert net.hub.admit(ROOM, player, net.now) is None
    limits = room(net).table.limits
    size = 4096  # one browser frame at the default browser_max_frame
    start = net.now
    for second in range(3):  # 40 messages at once, three times a second apart
        at = start + second
        for index in range(40):
            net.hub.play(player, [(0, sysex(size, index))], at)
        net.flush_hub()
        net.run_until(at + 0.5)
    got = [m for m in listener.heard if m[0] == 0xF0]
    # The bucket: a burst of max_sysex, then sysex_rate bytes per second.
    allowance = limits.max_sysex + 2 * limits.sysex_rate
    assert sum(len(m) for m in got) == allowance == 3 * 16 * size
    assert all(len(m) == size for m in got)
    assert room(net).table.counters.drops[Drop.SYSEX_RATE] == 3 * (40 - 16)
    assert [m for m in tapped if m[0] == 0xF0] == got  # nothing the caps dropped is tapped
    # Too long for max_sysex: dropped whole and counted, like an RTP sender's.
    net.run_until(net.now + 5.0)
    net.hub.play(player, [(0, sysex(limits.max_sysex + 2, 1)), (0, note_on(0, 60, 9))], net.now)
    net.flush_hub()
    net.run_for(0.5)
    assert room(net).table.counters.drops[Drop.SYSEX_TOO_LONG] == 1
    assert listener.heard[-1] == note_on(0, 60, 9) and len(listener.heard) == len(got) + 1


# -- release_after: senders without journals -------------------------------------


class DropMarked:
    """A rule that loses the next RTP datagram from ``host`` once armed."""

    def __init__(self) -> None:
        self.host: str | None = None

    def __call__(self, wire: Wire, position: int, count: int) -> list[float]:
        if self.host is not None and wire.src[0] == self.host and wire.is_rtp:
            self.host = None
            return []
        return [0.0]


def stuck_after_loss(
    release_after: float | None, *, journal: bool, lose: bytes
) -> tuple[MemNet, MemPeer, list[Event], float]:
    """A sender holds C4 and E4; the packet carrying ``lose`` is lost; the next one
    reveals the loss (with or without a journal); E4 is then released normally.
    Returns the net, the listener, the hub's events and when the loss was seen."""
    rule = DropMarked()
    text = GROUP_AND_ROOM
    if release_after is not None:
        option = f"release_after = {release_after}"
        text = text.replace("Jam = 5060", f"Jam = {{ port = 5060, {option} }}")
    hub = Hub(c.parse(text).spec(), rng=seeded(21, "release hub"))
    net = MemNet(hub, rule=rule)
    events: list[Event] = []
    hub.listeners.append(lambda endpoint, event: events.append(event))
    sender = net.add_peer("rtpmidid", ROOM, journal=journal)
    listener = net.add_peer("listener", ROOM)
    net.run_for(3.0)
    assert len(room(net).table.established) == 2
    net.send(sender, [note_on(0, 60, 100), note_on(0, 64, 100)])
    net.run_for(0.1)
    rule.host = sender.host
    net.send(sender, [lose])  # lost
    net.run_for(0.1)
    seen = net.now
    net.send(sender, [note_on(0, 67, 100)])  # reveals the loss; G4 pressed after it
    net.send(sender, [note_off(0, 64)])  # E4 released normally after the loss
    net.run_for(0.1)
    return net, listener, events, seen


def held_notes(peer: MemPeer) -> set[int]:
    state = peer.synth.channels.get(0)
    return set() if state is None else set(state.notes)


def test_release_after_releases_a_note_a_journal_less_sender_left_stuck() -> None:
    net, listener, events, seen = stuck_after_loss(2.0, journal=False, lose=note_off(0, 60))
    assert held_notes(listener) == {60, 67}  # the NoteOff for C4 never arrived
    net.run_until(seen + 1.9)
    assert held_notes(listener) == {60, 67}  # not before release_after
    net.run_until(seen + 2.5)
    assert held_notes(listener) == {67}  # C4 released; G4 came after the loss: kept
    releases = [e for e in events if isinstance(e, NotesReleased)]
    assert [e.release for e in releases] == [((0, note_off(0, 60)),)]
    assert room(net).table.counters.loss_releases == 1 and net.hub.notes_released == 1
    sender = room(net).table.find(releases[0].who.public_id)
    assert sender is not None and not sender.held.holds(0, 60) and sender.held.holds(0, 67)
    net.run_until(seen + 10.0)
    assert held_notes(listener) == {67} and room(net).table.counters.loss_releases == 1


def test_release_after_is_off_by_default() -> None:
    net, listener, events, seen = stuck_after_loss(None, journal=False, lose=note_off(0, 60))
    net.run_until(seen + 20.0)
    assert held_notes(listener) == {60, 67}  # stuck: nothing exact to repair from
    assert not any(isinstance(e, NotesReleased) for e in events)
    assert room(net).table.counters.loss_releases == 0


def test_release_after_leaves_a_sender_with_journals_alone() -> None:
    # The lost packet carried a controller; C4 is really held. The journal says so,
    # so nothing is released; without a journal the same loss would release C4.
    lose = control_change(0, 1, 20)
    net, listener, events, seen = stuck_after_loss(2.0, journal=True, lose=lose)
    net.run_until(seen + 10.0)
    assert held_notes(listener) == {60, 67}
    assert not any(isinstance(e, NotesReleased) for e in events)
    assert room(net).table.counters.loss_releases == 0
    net, listener, events, seen = stuck_after_loss(2.0, journal=False, lose=lose)
    net.run_until(seen + 10.0)
    assert held_notes(listener) == {67}  # the documented cost of turning it on


def test_a_suspect_struck_again_or_ended_otherwise_is_not_released() -> None:
    held = NoteState()
    held.update([(0, note_on(0, 60, 1)), (0, note_on(0, 62, 1)), (0, note_on(1, 64, 1))])
    suspects = UnrepairedNotes()
    suspects.lost(held, 5.0)
    assert suspects.deadline == 5.0
    # C4 struck again after the loss (held anew); channel 2 ended by All Notes Off.
    news = [(0, note_off(0, 60)), (0, note_on(0, 60, 1)), (0, control_change(1, 123, 0))]
    held.update(news)
    suspects.heard(news)
    suspects.lost(held, 9.0)  # a second loss: D4 keeps its earlier time; C4 is a suspect again
    assert suspects.due(held, 4.9) == []
    assert suspects.due(held, 5.0) == [(0, note_off(0, 62))] and not held.holds(0, 62)
    assert suspects.deadline == 9.0 and held.holds(0, 60)
    assert suspects.due(held, 9.0) == [(0, note_off(0, 60))]
    assert suspects.deadline is None and not held.channels_held()


def test_release_after_in_the_config() -> None:
    spec = c.parse(
        "[groups.G]\nin = 5040\nout = 5042\nrelease_after = 1.5\n"
        "[rooms]\nJam = { port = 5060, release_after = 4 }\nQuiet = 5070\n"
    ).spec()
    assert {e.port: e.release_after for e in spec.endpoints} == {
        5040: 1.5,
        5042: 1.5,
        5060: 4.0,
        5070: None,
    }
    for bad in ("0", "-1", '"soon"', "7200"):
        with pytest.raises(c.ConfigError) as error:
            c.parse(f"[rooms]\nJam = {{ port = 5060, release_after = {bad} }}\n")
        assert any("rooms.Jam.release_after" in problem for problem in error.value.problems)


def test_config_check_accepts_and_validates_release_after(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[rooms]\nJam = { port = 5060, release_after = 2 }\n")
    assert CliRunner().invoke(main, ["config", "check", str(good)]).exit_code == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[rooms]\nJam = { port = 5060, release_after = 0 }\n")
    result = CliRunner().invoke(main, ["config", "check", str(bad)])
    assert result.exit_code == 1 and "rooms.Jam.release_after" in result.output


async def test_six_players_over_udp_on_a_port_for_two() -> None:
    """The same over real sockets on 127.0.0.1: six invitations sent together."""
    port = free_port_pair()
    limits = "[limits]\npending_per_source = 8\n"  # all six come from 127.0.0.1
    text = f"max_participants = 2\n[rooms]\nJam = {port}\n{limits}"
    with RunningHub(make_config(text)) as running:
        peers = [PyPeer(f"udp{i}") for i in range(6)]
        try:
            loop = asyncio.get_running_loop()
            for peer in peers:  # every IN on the wire before the hub answers any
                peer.session = peer.table.connect((LOCALHOST, port), loop.time())
            for peer in peers:
                peer.flush()
            await wait_for(lambda: sum(p.left() == ["bye"] for p in peers) == 4, 10.0, "BYs")
            await wait_for(lambda: not running.hub.endpoints[port].table.pending, 10.0)
            table = running.hub.endpoints[port].table
            assert len(table.established) == 2
            assert table.counters.drops[Drop.PORT_FULL] == 4
        finally:
            for peer in peers:
                peer.close()
