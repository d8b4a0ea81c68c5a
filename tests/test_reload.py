"""A reload applies what it accepts to the ports it keeps, their live sessions
included: names in OK replies, limits, the NO-reply limiter (sans-IO, on the
in-memory network); the running hub applies the rest it can and names the settings
that need a restart. The README's reload table lists every setting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest

from midihub import config as c
from midihub.app import App
from midihub.hub import Guest, Hub
from midihub.midi.messages import note_on
from midihub.rtp import Command, Drop, LeaveReason, PortKind, packets
from midihub.rtp.packets import Invitation
from midihub.web.playwire import Dropped
from tests.memnet import GROUP_AND_ROOM, MemNet, MemPeer
from tests.seeds import seeded
from tests.support import free_ports, free_tcp_port, wait_for
from tests.test_play import Inbox, hello

SPOOFER = ("198.51.100.7", 6000)
LONG = " with a name long enough"


def make_net(text: str = GROUP_AND_ROOM) -> MemNet:
    return MemNet(Hub(c.parse(text).spec(), rng=seeded(11, "hub")), latency=0.0)


def reload(net: MemNet, text: str) -> None:
    net.hub.reconfigure(c.parse(text).spec(), net.now)
    net.flush_hub()
    net.run_for(0.0)


def join(net: MemNet, name: str, port: int) -> str:
    """``name`` joins ``port``; returns the name the hub's OK gave it (cut to the
    length of the IN: a long name leaves room for the hub's)."""
    peer = net.add_peer(name + LONG, port)
    net.flush_hub()
    net.run_for(0.0)
    (session,) = peer.table.established
    return session.peer_name


def peer(net: MemNet, name: str) -> MemPeer:
    return net.peers[name + LONG]


def limits(text: str) -> str:
    return GROUP_AND_ROOM + "[limits]\n" + text


def invite(net: MemNet, kind: PortKind, ssrc: int) -> int:
    """A stranger's IN on ``kind`` of the room; returns how many NO replies came back."""
    data = packets.encode_invitation(Invitation(packets.INVITATION, ssrc, ssrc, "x"))
    net.hub.receive(5060, kind, data, SPOOFER, net.now)
    replies = [out for out in net.hub.drain() if out.data[2:4] == packets.REJECT]
    return len(replies)


def test_renamed_room_group_and_hub_answer_new_invitations_with_the_new_names() -> None:
    net = make_net()
    assert join(net, "alice", 5060) == "midihub Jam"
    assert join(net, "bob", 5040) == "midihub G in"
    reload(net, "name = 'stage'\n[groups]\nH = [5040, 5042]\n[rooms]\nLive = 5060\n")
    assert join(net, "carol", 5060) == "stage Live"
    assert join(net, "dave", 5040) == "stage H in"
    assert join(net, "erin", 5042) == "stage H out"
    assert len(net.hub.endpoints[5060].table.established) == 2  # alice kept her session


def test_a_changed_reject_rate_reaches_the_no_reply_limiter() -> None:
    net = make_net()
    # A data-port IN with no control-port IN before it is refused with NO, within the
    # source's reply budget (burst 4, then 2/s by default).
    assert sum(invite(net, PortKind.DATA, n) for n in range(1, 11)) == 4
    reload(net, limits("reject_rate = 1000.0\n"))
    net.run_for(0.1)  # 0.2 replies at the old rate, the whole burst at the new one
    assert sum(invite(net, PortKind.DATA, n) for n in range(11, 21)) == 4
    reload(net, limits("reject_rate = 0.01\n"))
    net.run_for(5.0)  # 10 replies at 2/s, 0.05 at the new rate: the source spent its budget
    assert sum(invite(net, PortKind.DATA, n) for n in range(21, 31)) == 0
    assert net.hub.endpoints[5060].table.counters.drops[Drop.REPLY_LIMITED] == 22


class Player(Guest):
    transport = "test"

    def deliver(self, commands: Sequence[Command], now: float) -> None:
        pass

    def close(self, reason: LeaveReason) -> None:
        pass


@pytest.mark.parametrize("kind", ["session", "browser"])
def test_a_tightened_sysex_rate_limits_a_live_participant(kind: str) -> None:
    """RTP sessions and browsers share one SysEx intake, and a reload reaches both."""
    net = make_net()
    listener = "listener"
    if kind == "session":
        join(net, "attacker", 5060)
        join(net, listener, 5060)

        def play(message: bytes) -> None:
            net.send(peer(net, "attacker"), [message])

    else:
        join(net, listener, 5060)
        guest = Player("browser", ("192.0.2.7", 4242), net.now)
        assert net.hub.admit(5060, guest, net.now) is None

        def play(message: bytes) -> None:
            net.hub.play(guest, [(0, message)], net.now)

    sysex = b"\xf0" + bytes(998) + b"\xf7"  # 1000 bytes
    reload(net, limits("sysex_rate = 16.0\n"))
    for _ in range(100):  # 10 KB/s for 10 s: well under the old 64 KiB/s
        play(sysex)
        net.flush_hub()
        net.run_for(0.1)
    heard = peer(net, listener).heard
    # What was left of the 64 KiB burst passes, then 16 B/s: one more in 10 s at most.
    assert 60 <= len(heard) <= 66
    assert net.hub.endpoints[5060].table.counters.drops[Drop.SYSEX_RATE] == 100 - len(heard)


def test_a_lowered_max_sysex_reaches_a_live_session() -> None:
    net = make_net()
    join(net, "attacker", 5060)
    join(net, "listener", 5060)
    small, large = b"\xf0" + bytes(98) + b"\xf7", b"\xf0" + bytes(198) + b"\xf7"
    net.send(peer(net, "attacker"), [large])
    net.run_for(0.0)
    reload(net, limits("max_sysex = 100\n"))
    net.send(peer(net, "attacker"), [large, small])
    net.flush_hub()
    net.run_for(0.0)
    assert peer(net, "listener").heard == [large, small]  # the second large one: dropped
    drops = net.hub.endpoints[5060].table.counters.drops
    # Whole in one packet, it is refused by the SysEx budget, whose burst is max_sysex.
    assert drops.get(Drop.SYSEX_RATE, 0) + drops.get(Drop.SYSEX_TOO_LONG, 0) == 1


def test_a_shorter_handshake_timeout_reaches_half_open_sessions() -> None:
    net = make_net()
    assert invite(net, PortKind.CONTROL, 99) == 0  # accepted (OK), then nothing more
    table = net.hub.endpoints[5060].table
    assert table.pending == 1
    reload(net, limits("handshake_timeout = 1.0\n"))
    net.run_for(1.5)  # the old timeout was 5 s
    assert table.pending == 0
    assert table.counters.drops[Drop.HANDSHAKE_TIMEOUT] == 1


def test_fewer_proof_intervals_reach_joined_sessions() -> None:
    net = make_net()
    join(net, "alice", 5060)
    (session,) = net.hub.endpoints[5060].table.established
    reload(net, limits("proof_intervals = 1\n"))
    net.die(peer(net, "alice"))  # answers no clock sync from now on
    net.run_for(net.hub.spec.ck_interval * 1.5)  # one interval without proof; the old rule: 3
    assert not session.routable
    assert session.joined  # not yet timed out: only MIDI to it stops


def test_a_lowered_participant_cap_turns_newcomers_away_and_drops_no_one() -> None:
    net = make_net()
    join(net, "alice", 5060)
    join(net, "bob", 5060)
    reload(net, "max_participants = 1\n" + GROUP_AND_ROOM)
    carol = net.add_peer("carol", 5060)
    net.run_for(5.0)
    assert carol.table.established == []
    table = net.hub.endpoints[5060].table
    assert len(table.established) == 2 and table.counters.drops[Drop.PORT_FULL] >= 1


def test_a_shorter_timeout_reaches_live_sessions() -> None:
    net = make_net()
    join(net, "alice", 5060)
    (session,) = net.hub.endpoints[5060].table.established
    reload(net, "timeout = 3.0\n" + GROUP_AND_ROOM)
    net.die(peer(net, "alice"))
    net.run_for(4.0)  # the old timeout was 30 s
    assert not session.established
    assert net.hub.endpoints[5060].table.established == []


def test_a_shorter_clock_sync_interval_reaches_live_sessions() -> None:
    net = make_net()
    join(net, "alice", 5060)
    (session,) = net.hub.endpoints[5060].table.established
    reload(net, "ck_interval = 2.0\n" + GROUP_AND_ROOM)
    net.die(peer(net, "alice"))
    net.run_for(7.0)  # unproven for 3 intervals: 6 s now, 30 s before
    assert not session.routable and session.joined


def test_journal_settings_reach_live_sessions() -> None:
    net = make_net()
    join(net, "alice", 5060)
    join(net, "bob", 5040)
    (alice,) = net.hub.endpoints[5060].table.established
    (bob,) = net.hub.endpoints[5040].table.established
    assert alice.journal is not None and bob.journal is not None
    reload(
        net,
        "journal_off = ['ali*']\n[groups]\nG = { in = 5040, out = 5042, journal = false }\n"
        "[rooms]\nJam = 5060\n",
    )
    assert alice.journal is None and bob.journal is None
    reload(net, GROUP_AND_ROOM)
    assert alice.journal is not None and bob.journal is not None


def test_lowered_invitation_caps_apply_to_the_next_invitation() -> None:
    net = make_net()
    assert invite(net, PortKind.CONTROL, 1) == 0 and invite(net, PortKind.CONTROL, 2) == 0
    table = net.hub.endpoints[5060].table
    reload(net, limits("pending_per_source = 2\n"))
    assert invite(net, PortKind.CONTROL, 3) == 1
    reload(net, limits("sessions_per_source = 2\n"))
    assert invite(net, PortKind.CONTROL, 4) == 1
    assert table.counters.drops[Drop.PENDING_FULL] == table.counters.drops[Drop.SOURCE_FULL] == 1
    reload(net, limits("max_pending = 1\n"))
    assert invite(net, PortKind.CONTROL, 5) == 0  # both others make way for it
    assert table.pending == 1 and table.counters.drops[Drop.PENDING_EVICTED] == 2


async def test_the_running_hub_applies_what_it_can_and_names_what_needs_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="midihub")
    file = tmp_path / "midihub.toml"
    base = "[mdns]\nenabled = false\n[rooms]\nJam = {room}\n[web]\nlisten = ''\n"
    (room,) = free_ports(1)
    file.write_text(base.format(room=room))
    config, _ = c.load(file, "127.0.0.1")
    app = App(config, file, "127.0.0.1", db=":memory:")
    running = asyncio.create_task(app.run())
    try:
        await wait_for(lambda: app.ready, 10, "the hub")
        assert app.recordings is not None and app.store is not None
        directory = app.recordings.settings.dir
        file.write_text(
            base.format(room=room)
            + "token = 'a-secret-token'\n"  # in [web]
            + "[stats]\nretention_days = 2.0\n"
            + "[record]\ndir = 'elsewhere'\nmax_recording_mb = 5.0\nsplit_after = 1.0\n"
        )
        for _ in range(2):  # not applied, so said again at the next reload
            caplog.clear()
            assert app.reload() is None
            warnings = [r.getMessage() for r in caplog.records]
            restart = "changed; those settings take effect only after a restart:"
            assert f"reload: [web] {restart} token" in warnings
            assert f"reload: [record] {restart} dir" in warnings
            assert not any("a-secret-token" in w or "[stats]" in w for w in warnings)
        assert app.config.web.token is None  # the running value stays
        # Applied live: recordings' limits and the history's retention.
        assert app.recordings.settings.max_recording_mb == 5.0
        assert app.recordings.settings.split_after == 1.0
        assert app.recordings.settings.dir == directory
        assert app.store.retention == 2 * 86400

        file.write_text(base.format(room=room).replace("false", "true"))
        caplog.clear()
        assert app.reload() is None
        restart = "changed; those settings take effect only after a restart:"
        assert [r.getMessage() for r in caplog.records] == [f"reload: [mdns] {restart} enabled"]
        assert app.advertiser is None
    finally:
        app.stop()
        await asyncio.wait_for(running, 15)


async def test_the_running_hub_follows_a_rooms_record_and_keeps_its_bind_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="midihub")
    (room,) = free_ports(1)
    file = tmp_path / "midihub.toml"
    base = "bind = '{bind}'\n[mdns]\nenabled = false\n[web]\nlisten = ''\n[record]\ndir = '{dir}'\n"
    base = base.replace("{dir}", str(tmp_path / "recordings"))
    file.write_text(base.format(bind="127.0.0.1") + f"[rooms]\nJam = {room}\n")
    config, _ = c.load(file)
    app = App(config, file, db=":memory:")
    running = asyncio.create_task(app.run())
    try:
        await wait_for(lambda: app.ready, 10, "the hub")
        player = Player("p", ("192.0.2.1", 1), 0.0)
        loop = asyncio.get_running_loop()
        assert app.hub.admit(room, player, loop.time()) is None
        file.write_text(
            base.format(bind="0.0.0.0") + f"[rooms.Jam]\nport = {room}\nrecord = 'auto'\n"
        )
        assert app.reload() is None
        assert "reload: bind address change to 0.0.0.0 needs a restart; kept 127.0.0.1" in [
            r.getMessage() for r in caplog.records
        ]
        assert app.config.bind == "127.0.0.1"

        def recording() -> bool:  # the recorder follows the reload within its next check
            app.hub.play(player, [(0, b"\x90\x3c\x40"), (0, b"\x80\x3c\x00")], loop.time())
            return app.recordings is not None and bool(app.recordings.active)

        await wait_for(recording, 10, "an auto recording of the room")
    finally:
        app.stop()
        await asyncio.wait_for(running, 15)


async def test_tightened_browser_limits_reach_a_browser_already_playing(tmp_path: Path) -> None:
    (room,) = free_ports(1)
    url = f"http://127.0.0.1:{free_tcp_port()}"
    file = tmp_path / "midihub.toml"
    base = (
        f"[mdns]\nenabled = false\n[rooms.Jam]\nport = {room}\nbrowser = true\n"
        f"[web]\nlisten = '{url.removeprefix('http://')}'\n"
    )
    file.write_text(base)
    config, _ = c.load(file, "127.0.0.1")
    app = App(config, file, "127.0.0.1", db=":memory:")
    running = asyncio.create_task(app.run())
    try:
        await wait_for(lambda: app.ready and app.web is not None, 10, "the hub")
        assert app.api is not None
        async with aiohttp.ClientSession() as session:
            player, _ = await hello(session, url, room, "player")
            ear, _ = await hello(session, url, room, "ear")
            heard = Inbox(ear)
            await player.send_bytes(note_on(0, 60, 1))
            await wait_for(lambda: len(heard.midi) == 1, 5, "a note before the reload")

            file.write_text(
                base + "browser_rate = 0.5\nbrowser_burst = 3\nbrowser_queue = 16\n"
                "max_browser_per_port = 3\nmonitor_viewers = 2\n"
            )
            assert app.reload() is None
            for n in range(10):
                await player.send_bytes(note_on(0, n, 1))
            counters = app.api.play.counters.dropped
            await wait_for(lambda: counters.get(Dropped.RATE, 0) == 7, 5, "7 over the rate")
            await wait_for(lambda: len(heard.midi) == 4, 5, "the burst of 3")
            assert {browser.limit for browser in app.api.play.browsers} == {16}
            assert app.api.monitor.limit == 2
            late, welcome = await hello(session, url, room, "late")
            assert welcome["limits"]["rate"] == 0.5 and welcome["limits"]["burst"] == 3
            refused, reply = await hello(session, url, room, "one too many")
            assert reply["type"] == "error" and reply["reason"] == "full"
            await refused.close()
            for ws in (player, late):
                await ws.close()
            await heard.close()
    finally:
        app.stop()
        await asyncio.wait_for(running, 15)


async def test_reloaded_web_connection_caps_reach_the_next_connection(tmp_path: Path) -> None:
    file = tmp_path / "midihub.toml"
    (room,) = free_ports(1)
    web = free_tcp_port()
    base = f"[mdns]\nenabled = false\n[rooms]\nJam = {room}\n[web]\nlisten = '127.0.0.1:{web}'\n"
    file.write_text(base)
    config, _ = c.load(file, "127.0.0.1")
    app = App(config, file, "127.0.0.1", db=":memory:")
    running = asyncio.create_task(app.run())
    held: list[asyncio.StreamWriter] = []
    try:
        await wait_for(lambda: app.web is not None, 10, "the web port")
        assert app.web is not None
        gate = app.web.gate
        file.write_text(base + "connections_per_ip = 2\nheader_timeout = 5.0\n")
        assert app.reload() is None
        for _ in range(3):  # nothing sent: each waits for its request head
            _, writer = await asyncio.open_connection("127.0.0.1", web)
            held.append(writer)
        await wait_for(lambda: gate.counters.refused_per_source == 1, 10, "the third refused")
        assert gate.limits.header_timeout == 5.0
    finally:
        for writer in held:
            writer.close()
        app.stop()
        await asyncio.wait_for(running, 15)
