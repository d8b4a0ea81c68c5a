"""Hubs in a fleet, whole: ``App`` in-process and ``midihub serve`` processes on
127.0.0.x, one real PostgreSQL server (tests/pg.py). MIDI keeps flowing while the
database is stopped and started again, the history written meanwhile is kept and then
written, a hub killed with -9 shows down within its bound, and its restart under the
same name takes its place."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from midihub.app import App
from midihub.fleet import Fleet, FleetSpec, HubRecord
from midihub.hub import Endpoint
from midihub.rtp import Event, LatencyMeasured
from tests.pg import PgCluster
from tests.support import (
    TOKEN,
    PyPeer,
    free_port_pair,
    free_tcp_port,
    make_config,
    midihub_serve,
    wait_for,
)

NOTE_ON = bytes((0x90, 60, 100))
NOTE_OFF = bytes((0x80, 60, 0))
FAST = "heartbeat = 0.2\ndown_after = 3.0\nexpire_after = 60.0\n"


def fleet_table(url: str, name: str, address: str = "127.0.0.1") -> str:
    return f'[fleet]\ndatabase = "{url}"\nname = "{name}"\naddress = "{address}"\n{FAST}'


@asynccontextmanager
async def running(app: App) -> AsyncIterator[App]:
    task = asyncio.create_task(app.run())
    try:
        await wait_for(lambda: app.ready or task.done(), what="the hub started")
        assert app.ready, "the hub did not start"
        yield app
    finally:
        app.stop()
        await asyncio.wait_for(task, 30)


def sync(peer: PyPeer) -> None:
    """A clock sync now: the hub measures the round trip (a latency sample)."""
    assert peer.session is not None
    peer.table.sync_clock(peer.session, asyncio.get_running_loop().time())
    peer.flush()


async def test_midi_flows_while_the_database_is_away_and_history_catches_up(
    pg: PgCluster, pg_url: str
) -> None:
    port = free_port_pair()
    config = make_config(
        f'[web]\ntoken = "{TOKEN}"\n[mdns]\nenabled = false\n[rooms]\nJam = {port}\n'
        + fleet_table(pg_url, "eu-1")
    )
    app = App(config, db=":memory:", web=f"127.0.0.1:{free_tcp_port()}")
    samples: list[float] = []

    def count(endpoint: Endpoint, event: Event) -> None:
        if isinstance(event, LatencyMeasured):
            samples.append(event.rtt)

    app.hub.listeners.append(count)
    alice, bob = PyPeer("alice"), PyPeer("bob")
    try:
        async with running(app):
            assert app.fleet is not None and app.store is not None
            fleet, store = app.fleet, app.store
            assert store.postgres and store.hub == "eu-1"
            await alice.connect(port)
            await bob.connect(port)
            await wait_for(
                lambda: (
                    (h := fleet.hub("eu-1")) is not None
                    and {p.name for p in h.participants} == {"alice", "bob"}
                ),
                what="both players in the directory",
            )
            await wait_for(lambda: store.flushes >= 1, what="history written")

            pg.stop()  # mid-jam
            await wait_for(lambda: not fleet.connected, what="the fleet notices")
            before = len(samples)
            for peer in (alice, bob):
                sync(peer)
            await wait_for(lambda: len(samples) >= before + 2, what="samples while it is away")
            await wait_for(
                lambda: store.write_failures >= 1 and store.buffered >= 1,
                what="history kept in memory",
            )
            alice.send(NOTE_ON, NOTE_OFF)
            await wait_for(lambda: NOTE_OFF in bob.received, what="MIDI without the database")
            assert bob.received == [NOTE_ON, NOTE_OFF] and alice.received == []
            assert fleet.hub("eu-1") is not None  # the last read stays readable

            pg.start()
            await wait_for(
                lambda: fleet.connected and fleet.counters.reconnects >= 1, what="back on"
            )
            await wait_for(lambda: store.buffered == 0, what="the buffer flushed")
            assert fleet.counters.failures >= 1 and store.dropped == 0
            bob.send(NOTE_ON)
            await wait_for(lambda: NOTE_ON in alice.received, what="MIDI after")
            assert app.web is not None
            metrics = await scrape(app.web.url)
            assert metrics["midihub_fleet_reconnects_total"] >= 1
            assert metrics["midihub_fleet_failures_total"] >= 1
            assert metrics["midihub_history_write_failures_total"] >= 1
            assert metrics["midihub_history_samples_dropped_total"] == 0
    finally:
        alice.close()
        bob.close()
    # The app is stopped: everything it measured is in the database, once.
    with psycopg.connect(pg_url) as connection:
        row = connection.execute(
            "SELECT p.hub, sum(m.count) FROM latency_minutes m"
            " JOIN latency_participants p ON p.id = m.participant_id GROUP BY p.hub"
        ).fetchall()
        hubs = connection.execute("SELECT name FROM fleet_hubs").fetchall()
    assert row == [("eu-1", len(samples))]
    assert hubs == []  # a clean stop leaves the directory


async def scrape(url: str) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as client,
        client.get(url.rstrip("/") + "/metrics", headers=headers) as response,
    ):
        text = await response.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def names_up(hubs: tuple[HubRecord, ...]) -> set[str]:
    return {h.name for h in hubs if h.up}


async def serve(url: str, name: str, address: str, tmp_path: Path) -> asyncio.subprocess.Process:
    port = free_port_pair(address)
    directory = tmp_path / name
    directory.mkdir(exist_ok=True)
    (directory / "midihub.toml").write_text(
        f'[web]\nlisten = ""\n[mdns]\nenabled = false\n[rooms]\nJam = {port}\n'
        + fleet_table(url, name, address)
    )
    return await midihub_serve(
        "--config", "midihub.toml", "--bind", address, "--db", ":memory:", cwd=directory
    )


async def test_three_hubs_one_killed_and_restarted(pg_url: str, tmp_path: Path) -> None:
    watcher = Fleet(FleetSpec(pg_url, "watcher", "127.0.0.9", 0.2, 3.0, 60.0))
    await watcher.start()
    processes: dict[str, asyncio.subprocess.Process] = {}
    try:
        for n in (1, 2, 3):
            processes[f"hub-{n}"] = await serve(pg_url, f"hub-{n}", f"127.0.0.{n}", tmp_path)
        everyone = {"watcher", "hub-1", "hub-2", "hub-3"}
        await wait_for(lambda: names_up(watcher.hubs()) == everyone, what="three hubs up")
        for hub in watcher.hubs():
            if hub.name != "watcher":
                assert hub.address == f"127.0.0.{hub.name[-1]}"
                assert [r.name for r in hub.rooms] == ["Jam"]
        first = watcher.hub("hub-2")
        assert first is not None

        processes["hub-2"].send_signal(signal.SIGKILL)  # no goodbye
        await processes["hub-2"].wait()
        await wait_for(lambda: names_up(watcher.hubs()) == everyone - {"hub-2"}, what="down")
        assert watcher.hub("hub-2") is not None  # down, kept until it expires

        processes["hub-2"] = await serve(pg_url, "hub-2", "127.0.0.2", tmp_path)
        await wait_for(
            lambda: (h := watcher.hub("hub-2")) is not None and h.up and h.started > first.started,
            what="the restart in its place",
        )
        await wait_for(lambda: names_up(watcher.hubs()) == everyone, what="all up again")
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            await asyncio.wait_for(process.communicate(), 30)
        await watcher.close()


async def test_an_unreachable_database_is_one_line_and_the_hub_serves(tmp_path: Path) -> None:
    dead = f"postgresql://midihub:s3cret-pw@127.0.0.1:{free_tcp_port()}/fleet"
    process = await serve(dead, "eu-1", "127.0.0.1", tmp_path)
    port = int((tmp_path / "eu-1" / "midihub.toml").read_text().split("Jam = ")[1].split()[0])
    alice, bob = PyPeer("alice"), PyPeer("bob")
    try:
        await alice.connect(port, timeout=30)
        await bob.connect(port)
        alice.send(NOTE_ON)
        await wait_for(lambda: NOTE_ON in bob.received, what="MIDI with no database")
    finally:
        alice.close()
        bob.close()
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    log = err.decode()
    assert process.returncode == 0, log
    lines = [line for line in log.splitlines() if "database" in line]
    assert len(lines) == 1, log
    assert "fleet: cannot reach the database midihub@127.0.0.1:" in lines[0]
    assert "s3cret" not in log
