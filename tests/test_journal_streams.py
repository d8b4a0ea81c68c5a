"""One journal per stream (issue 21): receivers that get the same stream share one
``StreamJournal``; each journal on the wire describes exactly the stream its receiver
got (a room member's never its own notes), and its checkpoint history includes the
checkpoint packet (RFC 6295 §4)."""

from __future__ import annotations

from midihub.hub import Hub
from midihub.midi.held import NoteState
from midihub.midi.notes import NoteRange
from midihub.rtp import packets as p
from midihub.rtp.commands import decode_payload
from midihub.rtp.recovery import MAX_UNACKED, Journal, decode_journal
from tests.memnet import MemNet, Wire
from tests.seeds import seeded
from tests.support import make_config
from tests.test_model_loss import differences

IN, OUT, ROOM = 5004, 5006, 5060
CONFIG = f"[groups]\nG = [{IN}, {OUT}]\n[rooms]\nJam = {ROOM}\n"


def hub_net() -> MemNet:
    return MemNet(Hub(make_config(CONFIG).spec(), rng=seeded(1, "hub")))


def stream_to(net: MemNet, name: str) -> list[tuple[int, list[bytes], Journal | None]]:
    """What the hub sent ``name``, in order: (sequence, messages, journal)."""
    host = net.peers[name].addr[0]
    out = []
    for wire in net.hub_sent:
        if wire.is_rtp and wire.dst[0] == host:
            header, start, end = p.decode_rtp_header(wire.data)
            commands, at = decode_payload(wire.data, start, end)
            journal = None if at is None else decode_journal(wire.data, at, end)
            out.append((header.sequence, [m for _, m in commands], journal))
    return out


def streams_of(net: MemNet, port: int) -> list[object]:
    sessions = net.hub.endpoints[port].table.established
    return [s.journal.stream for s in sessions if s.journal is not None]


def test_every_change_in_the_checkpoint_history_is_in_the_journal() -> None:
    """For each packet I the listener got, every controller and program changed in
    packets C..I-1 (C, the checkpoint, included) is in I's journal with its latest
    value: across the checkpoint moves after MAX_UNACKED packets without RS too."""
    net = hub_net()
    player = net.add_peer("player", IN)
    net.add_peer("listener", OUT)
    net.run_for(3.5)
    for i in range(3 * MAX_UNACKED):  # each change stays the latest for 50+ packets
        message = bytes((0xC0, i % 128)) if i % 50 == 0 else bytes((0xB0, 1 + i % 100, i % 128))
        net.send(player, [message])
        net.run_for(0.001)
    packets = stream_to(net, "listener")
    checked = 0
    for index, (_, _, journal) in enumerate(packets):
        if journal is None:
            continue
        seqs = [seq for seq, _, _ in packets[:index]]
        start = seqs.index(journal.checkpoint) if journal.checkpoint in seqs else 0
        controllers: dict[int, int] = {}
        program = None
        for _, messages, _ in packets[start:index]:
            for message in messages:
                if message[0] == 0xB0:
                    controllers[message[1]] = message[2]
                elif message[0] == 0xC0:
                    program = message[1]
        (channel,) = journal.channels
        assert dict(channel.controllers).items() >= controllers.items(), index
        if program is not None:
            assert channel.program is not None and channel.program[0] == program, index
        checked += 1
    assert checked > 2 * MAX_UNACKED


def test_each_journal_describes_exactly_the_stream_its_receiver_got() -> None:
    """A room where everyone plays the same keys (one member's NoteOff ends another's
    note in the others' streams, not in its own), with panics to single members: each
    journal's held notes and sustain are those of the stream that receiver got. A
    room member's journal never lists a note it played itself."""
    net = hub_net()
    names = ["a", "b", "c", "d", "e"]
    peers = [net.add_peer(name, ROOM) for name in names]
    net.run_for(3.5)
    rng = seeded(5, "room journals")
    for player, note in zip(peers[:3], (60, 61, 62), strict=True):  # each hears others after
        net.send(player, [bytes((0x90, note, 100))])  # it played: its own notes still held
        net.run_for(0.002)
    for _ in range(400):
        roll = rng.random()
        if roll < 0.03:
            target = net.hub.endpoints[ROOM].table.established[rng.randrange(len(names))]
            net.hub.panic(ROOM, NoteRange.ALL, net.now, participant=target)
            net.flush_hub()
        else:
            player = peers[rng.randrange(3)]  # a, b and c play; d and e listen
            note = 60 + rng.randrange(6)
            message = rng.choice(
                [
                    bytes((0x90, note, 1 + rng.randrange(127))),
                    bytes((0x80, note, 0)),
                    bytes((0xB0, 64, rng.choice((0, 127)))),
                ]
            )
            net.send(player, [message])
        net.run_for(0.002)
    checked = 0
    for name in names:
        model = NoteState()
        for _, messages, journal in stream_to(net, name):
            if journal is not None:
                state = model.channels.get(0)
                held = set(state.notes) if state is not None else set()
                sustain = state.sustain if state is not None else False
                logged = {n for c in journal.channels for n, _ in (*c.notes_on, *c.quiet)}
                assert logged == held, name
                pedal = dict(journal.channels[0].controllers).get(64) if journal.channels else None
                assert (pedal is not None and pedal >= 64) == sustain, name
                checked += 1
            model.update([(0, m) for m in messages])
    assert checked > 300


def test_a_groups_receivers_share_one_stream_journal_and_latecomers_join_it() -> None:
    net = hub_net()
    player = net.add_peer("player", IN)
    for name in ("l1", "l2", "l3"):
        net.add_peer(name, OUT)
    net.run_for(3.5)
    net.send(player, [b"\x90\x3c\x40"])
    net.run_for(0.01)
    assert len(set(map(id, streams_of(net, OUT)))) == 1 and len(streams_of(net, OUT)) == 3
    net.add_peer("late", OUT)
    net.run_for(3.5)
    net.send(player, [b"\x80\x3c\x00"])
    net.run_for(0.01)
    assert len(set(map(id, streams_of(net, OUT)))) == 1 and len(streams_of(net, OUT)) == 4


def test_room_listeners_share_one_stream_journal_and_a_player_has_its_own() -> None:
    net = hub_net()
    player = net.add_peer("player", ROOM)
    for name in ("l1", "l2", "l3"):
        net.add_peer(name, ROOM)
    net.run_for(3.5)
    for note in (60, 62, 64):
        net.send(player, [bytes((0x90, note, 90))])
        net.run_for(0.01)
    net.send(net.peers["l1"], [b"\x91\x30\x40"])  # a listener plays: its stream parts
    net.run_for(0.01)
    table = net.hub.endpoints[ROOM].table
    by_name = {s.peer_name: s.journal.stream for s in table.established if s.journal}
    assert by_name["l2"] is by_name["l3"]
    assert len({id(by_name[n]) for n in ("player", "l1", "l2")}) == 3
    # l1's own note is in l2's stream, not in its own.
    l1 = [j for _, _, j in stream_to(net, "l1") if j is not None]
    net.send(player, [b"\x90\x40\x50"])
    net.run_for(0.01)
    last_l1 = [j for _, _, j in stream_to(net, "l1") if j is not None][-1]
    last_l2 = [j for _, _, j in stream_to(net, "l2") if j is not None][-1]
    assert l1 is not None
    assert all(c.channel != 1 for c in last_l1.channels)
    assert any(c.channel == 1 and c.notes_on == [(0x30, 0x40)] for c in last_l2.channels)


def test_a_lossy_room_ends_as_a_lossless_one_for_players_and_listeners() -> None:
    """Shared and forked stream journals under loss: three members play the same keys
    and two listen, 12 % of the hub's RTP to each is lost (RS per receiver moves the
    shared checkpoints); once quiet, everyone plays what it would without loss."""

    lost = [0]

    def perform(
        lossy: bool, journal: bool = True
    ) -> dict[str, tuple[NoteState, set[tuple[int, int]]]]:
        rng = seeded(9, "room loss")

        def rule(wire: Wire, position: int, count: int) -> list[float]:
            if lossy and wire.from_hub and wire.is_rtp and rng.random() < 0.12:
                return []
            return [0.0]

        config = make_config(CONFIG, journal=journal)
        net = MemNet(Hub(config.spec(), rng=seeded(1, "hub")), rule, seed=1)
        peers = [net.add_peer(name, ROOM) for name in ("a", "b", "c", "l1", "l2")]
        net.run_for(3.5)
        script = seeded(10, "room script")
        for _ in range(300):
            player = peers[script.randrange(3)]
            note = 60 + script.randrange(8)
            message = script.choice(
                [
                    bytes((0x90, note, 1 + script.randrange(127))),
                    bytes((0x80, note, 0)),
                    bytes((0xB0, 64, script.choice((0, 127)))),
                    bytes((0xE0, 0, script.randrange(128))),
                ]
            )
            net.send(player, [message])
            net.run_for(script.choice((0.0, 0.003, 0.02)))
        net.run_for(15.0)  # guards, RS
        lost[0] = sum(p.session.packets_lost for p in peers if p.session is not None)
        return {peer.name: (peer.synth, peer.quiet) for peer in peers}

    clean, lossy = perform(False), perform(True)
    assert lost[0] > 50
    for name, (want, _) in clean.items():
        got, quiet = lossy[name]
        assert differences(want, got, quiet) == [], name
    # The control: the same losses without journals leave the rooms' synths wrong.
    bare = perform(True, journal=False)
    assert any(differences(want, bare[name][0]) for name, (want, _) in clean.items())


def test_each_receiver_gets_the_shared_checkpoint_in_its_own_sequence_numbers() -> None:
    """Two listeners of a group share one stream journal but their RTP sequence numbers
    start apart: before any RS, every journal's checkpoint is that receiver's own first
    packet (the history from the stream's start, inclusive); after both sent RS, it is
    the packet they acknowledged (RFC 4696 §6), in each one's own numbers."""
    net = hub_net()
    player = net.add_peer("player", IN)
    net.add_peer("l1", OUT)
    net.add_peer("l2", OUT)
    net.run_for(3.5)
    for note in range(60, 70):
        net.send(player, [bytes((0x90, note, 90))])
        net.run_for(0.01)
    for name in ("l1", "l2"):
        packets = stream_to(net, name)[:10]
        first = packets[0][0]
        assert packets[0][2] is None  # its first packet: no history to cover yet
        assert [j.checkpoint for _, _, j in packets[1:] if j is not None] == [first] * 9
    net.run_for(2.5)  # guards, then each listener's RS acknowledges everything
    acked = {name: stream_to(net, name)[-1][0] for name in ("l1", "l2")}
    last_midi = {name: [s for s, m, _ in stream_to(net, name) if m][-1] for name in acked}
    assert acked["l1"] != acked["l2"]
    net.send(player, [b"\x80\x3c\x00"])
    net.run_for(0.01)
    for name in ("l1", "l2"):
        journal = stream_to(net, name)[-1][2]
        # The last packet of the stream it acknowledged (its guards after it carry
        # nothing), inclusive: not the first any more.
        assert journal is not None and journal.checkpoint == last_midi[name]
