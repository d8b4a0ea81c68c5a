"""The fleet directory on a real PostgreSQL server (tests/pg.py): registration and
heartbeat, the down bound, the name rule, a clean restart, and several hubs in one fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import psycopg
import pytest

from midihub.fleet import Fleet, FleetSpec, HubRecord, ParticipantRecord, RoomRecord, Snapshot
from tests.pg import PgCluster
from tests.support import wait_for

FAST = {"heartbeat": 0.2, "down_after": 2.0, "expire_after": 4.0}

MakeFleet = Callable[..., Fleet]


@pytest.fixture
async def make_fleet(pg_url: str) -> AsyncIterator[MakeFleet]:
    """``make_fleet(name, snapshot=..., **spec)``: a started ``Fleet`` on this test's
    database, closed at teardown (``started`` lists them)."""
    started: list[Fleet] = []

    def make(name: str, snapshot: Callable[[], Snapshot] | None = None, **spec: object) -> Fleet:
        settings = {**FAST, **spec}
        fleet = Fleet(
            FleetSpec(pg_url, name, f"{name}.example.org", **settings),  # type: ignore[arg-type]
            snapshot or (lambda: ((), ())),
        )
        started.append(fleet)
        return fleet

    yield make
    for fleet in started:
        await fleet.close()


def names(hubs: tuple[HubRecord, ...], up: bool = True) -> set[str]:
    return {h.name for h in hubs if h.up == up}


ROOMS = (RoomRecord("Band", "group", (5040, 5042)), RoomRecord("Jam", "room", (5004,)))  # by name
PLAYERS = (ParticipantRecord("5004-ab12", "Piano", 5004, "rtp", 12.5),)


async def test_a_hub_registers_its_rooms_and_players_and_renews(make_fleet: MakeFleet) -> None:
    fleet = make_fleet("eu-1", lambda: (ROOMS, PLAYERS))
    await fleet.start()
    await wait_for(lambda: fleet.hub("eu-1") is not None, what="the hub in the directory")
    me = fleet.hub("eu-1")
    assert me is not None and me.up and fleet.connected and fleet.registered
    assert me.address == "eu-1.example.org"
    assert me.rooms == ROOMS
    assert me.participants == PLAYERS
    assert me.started <= me.last_seen
    first_seen = me.last_seen
    await wait_for(
        lambda: (h := fleet.hub("eu-1")) is not None and h.last_seen > first_seen,
        what="a renewal",
    )
    assert fleet.counters.heartbeats >= 2
    again = fleet.hub("eu-1")
    assert again is not None and again.started == me.started  # a renewal, not a new start


async def test_hubs_is_the_cached_read_and_listeners_hear_changes(make_fleet: MakeFleet) -> None:
    players: list[ParticipantRecord] = []
    fleet = make_fleet("eu-1", lambda: ((), tuple(players)))
    heard: list[tuple[HubRecord, ...]] = []
    fleet.listeners.append(heard.append)
    await fleet.start()
    await wait_for(lambda: len(heard) == 1, what="the first read")
    beats = fleet.counters.heartbeats
    await wait_for(lambda: fleet.counters.heartbeats >= beats + 3, what="more heartbeats")
    assert len(heard) == 1, "only the heartbeat time changed: no listener call"
    players.append(PLAYERS[0])
    await wait_for(lambda: len(heard) == 2, what="the change heard")
    assert heard[-1][0].participants == PLAYERS
    assert fleet.hubs() is heard[-1]  # the cached value itself: no IO to answer


async def test_a_hub_that_stops_renewing_shows_down_then_expires(make_fleet: MakeFleet) -> None:
    watcher = make_fleet("watcher")
    dying = make_fleet("dying")
    await watcher.start()
    await dying.start()
    await wait_for(lambda: names(watcher.hubs()) == {"watcher", "dying"}, what="both up")
    # A crash: it stops renewing and never leaves (close would delete its rows).
    assert dying._task is not None
    dying._task.cancel()
    await wait_for(lambda: "dying" in names(watcher.hubs(), up=False), what="shown down")
    down = watcher.hub("dying")
    assert down is not None and not down.up
    await wait_for(lambda: watcher.hub("dying") is None, what="its rows expired")


async def test_a_clean_stop_frees_the_name_and_a_restart_takes_it_at_once(
    make_fleet: MakeFleet,
) -> None:
    watcher = make_fleet("watcher", down_after=20.0, heartbeat=0.2)
    first = make_fleet("eu-1", lambda: (ROOMS, ()), down_after=20.0)
    await watcher.start()
    await first.start()
    await wait_for(lambda: "eu-1" in names(watcher.hubs()), what="eu-1 up")
    before = watcher.hub("eu-1")
    await first.close()
    await wait_for(lambda: watcher.hub("eu-1") is None, what="eu-1 gone on a clean stop")
    second = make_fleet("eu-1", lambda: (ROOMS[:1], PLAYERS), down_after=20.0)
    await second.start()
    await wait_for(lambda: second.registered, what="the restart registered")
    assert second.counters.refused == 0
    await wait_for(lambda: "eu-1" in names(watcher.hubs()), what="eu-1 up again")
    after = watcher.hub("eu-1")
    assert after is not None and before is not None
    assert after.started > before.started
    assert after.rooms == ROOMS[:1] and after.participants == PLAYERS  # replaced, not added


async def test_a_second_live_hub_with_the_same_name_is_refused_until_the_first_dies(
    make_fleet: MakeFleet, caplog: pytest.LogCaptureFixture
) -> None:
    # A generous bound: the holder must not look dead to a busy machine meanwhile.
    first = make_fleet("eu-1", lambda: (ROOMS, ()), down_after=10.0)
    await first.start()
    await wait_for(lambda: first.registered, what="the first registered")
    second = make_fleet("eu-1", lambda: ((), PLAYERS), down_after=10.0)
    await second.start()
    await wait_for(lambda: second.counters.refused >= 3, what="the second refused")
    assert not second.registered and second.connected
    held = [r for r in caplog.records if "is held by another live hub" in r.getMessage()]
    assert len(held) == 1, "one line, not one per heartbeat"
    me = second.hub("eu-1")
    assert me is not None and me.rooms == ROOMS  # the first one's rows, untouched
    assert first._task is not None
    first._task.cancel()  # the holder dies: the name is taken over once it is down
    await wait_for(lambda: second.registered, what="the name taken over")
    await wait_for(
        lambda: (h := second.hub("eu-1")) is not None and h.participants == PLAYERS,
        what="the second's rows",
    )


async def test_three_hubs_see_each_other(make_fleet: MakeFleet) -> None:
    fleets = [
        make_fleet(f"hub-{n}", lambda n=n: ((RoomRecord("Jam", "room", (5000 + 2 * n,)),), ()))
        for n in range(3)
    ]
    for fleet in fleets:
        await fleet.start()
    everyone = {"hub-0", "hub-1", "hub-2"}
    for fleet in fleets:
        await wait_for(lambda f=fleet: names(f.hubs()) == everyone, what="all three up")
    rooms = {h.name: h.rooms for h in fleets[0].hubs()}
    assert rooms == {f"hub-{n}": (RoomRecord("Jam", "room", (5000 + 2 * n,)),) for n in range(3)}


async def test_heartbeats_use_the_servers_clock(
    make_fleet: MakeFleet, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub whose clock is an hour ahead is up, and its last_seen is the server's time."""
    import time

    skewed = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: skewed)
    fleet = make_fleet("skewed")
    await fleet.start()
    await wait_for(lambda: fleet.hub("skewed") is not None, what="registered")
    with psycopg.connect(pg_url) as connection:
        row = connection.execute("SELECT now(), last_seen FROM fleet_hubs").fetchone()
    assert row is not None
    server_now, stored = row
    me = fleet.hub("skewed")
    assert me is not None and me.up
    assert abs((server_now - stored).total_seconds()) < 60
    assert abs((server_now - me.last_seen).total_seconds()) < 60


async def test_a_clean_stop_after_the_database_restarted_still_leaves(
    make_fleet: MakeFleet, pg: PgCluster, pg_url: str
) -> None:
    """The connection held died with the restart; leaving takes a new one."""
    fleet = make_fleet("eu-1", heartbeat=5.0, down_after=20.0)
    await fleet.start()
    await wait_for(lambda: fleet.registered, what="registered")
    pg.stop()
    pg.start()
    await fleet.close()
    with psycopg.connect(pg_url) as connection:
        assert connection.execute("SELECT name FROM fleet_hubs").fetchall() == []
