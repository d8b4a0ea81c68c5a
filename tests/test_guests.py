"""Participants that are not RTP sessions (``Guest``): routed, tracked, released,
panicked and listed exactly like RTP participants."""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from midihub.hub import Guest
from midihub.midi.messages import control_change, note_off, note_on
from midihub.midi.notes import NoteRange
from midihub.rtp import Command, LeaveReason, PeerJoined, PeerLeft
from tests.fixtures import ServeRoom
from tests.support import wait_for


class Recorder(Guest):
    """A guest whose transport is a list: what the hub delivered, and how it ended."""

    transport = "test"

    def __init__(self, name: str) -> None:
        super().__init__(name, ("192.0.2.7", 4242), 0.0)
        self.got: list[bytes] = []
        self.closed: str | None = None

    def deliver(self, commands: Sequence[Command], now: float) -> None:
        self.got.extend(message for _, message in commands)

    def close(self, reason: str) -> None:
        self.closed = reason


async def test_a_guest_plays_hears_leaves_and_is_listed_like_anyone(
    serve_room: ServeRoom,
) -> None:
    running, url, port, (alice, bob) = await serve_room("alice", "bob", label="Jam")
    hub = running.hub
    guest = Recorder("web-carol")
    await wait_for(lambda: len(running.participants(port)) == 2)
    assert hub.admit(port, guest, 1.0) is None
    assert any(isinstance(e, PeerJoined) and e.who == guest.who for _, e in running.events)
    assert guest.public_id and hub.participant(f"{port}-{guest.public_id}") == (
        hub.endpoints[port],
        guest,
    )
    # The guest plays: both RTP peers hear it; it never hears itself.
    hub.play(guest, [(0, note_on(0, 60, 100)), (0, control_change(0, 64, 127))], 2.0)
    running.server.flush()
    await wait_for(lambda: len(alice.received) == 2 and len(bob.received) == 2)
    assert alice.received == [note_on(0, 60, 100), control_change(0, 64, 127)]
    assert guest.got == []
    # An RTP peer plays: the guest hears it.
    bob.send(note_on(1, 40, 90), note_off(1, 40))
    await wait_for(lambda: len(guest.got) == 2)
    assert guest.got == [note_on(1, 40, 90), note_off(1, 40)]
    # The API lists it with the same fields as anyone.
    async with aiohttp.ClientSession() as client:
        async with client.get(url + "/api/participants") as response:
            people = (await response.json())["ports"][0]["participants"]
        async with client.get(url + "/api/latency") as response:
            rows = await response.json()
    assert sorted(p["name"] for p in people) == ["alice", "bob", "web-carol"]
    assert any(row["name"] == "web-carol" for row in rows)
    # Panic reaches the guest too.
    sent_to = hub.panic(port, NoteRange.LOW, 3.0)
    assert guest in sent_to and len(guest.got) == 2 + 16 * 43
    # It leaves holding C4 and the pedal: everyone else gets them released.
    alice.received.clear()
    hub.depart(guest, LeaveReason.CLOSED, 4.0)
    running.server.flush()
    await wait_for(lambda: len(alice.received) >= 2)
    assert note_off(0, 60) in alice.received
    assert control_change(0, 64, 0) in alice.received
    assert any(isinstance(e, PeerLeft) and e.who == guest.who for _, e in running.events)
    assert guest not in hub.endpoints[port].participants


async def test_a_removed_port_and_shutdown_close_guests(serve_room: ServeRoom) -> None:
    running, _, port, _ = await serve_room(label="Jam")
    guest = Recorder("web")
    assert running.hub.admit(port, guest, 1.0) is None
    assert running.hub.admit(port + 2, Recorder("lost"), 1.0) == "no such port"
    running.hub.close(2.0)
    assert guest.closed == "shutdown"
    assert running.hub.endpoints[port].participants == []
