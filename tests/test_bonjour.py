"""Bonjour: a real zeroconf browser on loopback sees the hub's ports appear with
their session names, and go away on reload and on shutdown."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from midihub import config as config_module
from midihub.app import App
from midihub.bonjour import (
    MIDI2_SERVICE_TYPE,
    SERVICE_TYPE,
    Advertiser,
    advertise_addresses,
    instance_name,
)
from tests.support import free_ports, wait_for


class Browser:
    """What a Mac's Audio MIDI Setup would see, as (name → port, addresses)."""

    def __init__(self, kind: str = SERVICE_TYPE) -> None:
        self.zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        self.seen: dict[str, tuple[int, list[str]]] = {}
        self.txt: dict[str, dict[bytes, bytes | None]] = {}
        self.removed: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.browser = AsyncServiceBrowser(self.zeroconf.zeroconf, [kind], handlers=[self._changed])

    def _changed(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            self.seen.pop(name, None)
            self.removed.append(name)
        elif state_change is ServiceStateChange.Added:
            task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if await info.async_request(self.zeroconf.zeroconf, 3000) and info.port is not None:
            self.seen[name] = (info.port, info.parsed_addresses())
            self.txt[name] = dict(info.properties)

    async def close(self) -> None:
        await self.browser.async_cancel()
        await self.zeroconf.async_close()


def full(name: str) -> str:
    return f"{name}.{SERVICE_TYPE}"


async def test_ports_are_advertised_withdrawn_on_reload_and_on_shutdown(tmp_path: Path) -> None:
    g_in, g_out, room = free_ports(3)
    hub_name = f"bonjour-{g_in}"  # unique: other tests may advertise meanwhile
    file = tmp_path / "midihub.toml"
    base = f"name = '{hub_name}'\n[web]\nlisten = ''\n[groups]\nG = [{g_in}, {g_out}]\n"
    file.write_text(base + f"[rooms]\nJam = {room}\n")
    config, _ = config_module.load(file, "127.0.0.1")
    browser = Browser()
    app = App(config, file, "127.0.0.1", db=":memory:")
    running = asyncio.create_task(app.run())
    expected = {
        full(f"{hub_name} G in"): (g_in, ["127.0.0.1"]),
        full(f"{hub_name} G out"): (g_out, ["127.0.0.1"]),
        full(f"{hub_name} Jam"): (room, ["127.0.0.1"]),
    }
    try:
        await wait_for(lambda: all(n in browser.seen for n in expected), 10, "the services")
        assert {n: browser.seen[n] for n in expected} == expected

        file.write_text(base)  # the room goes away
        assert app.reload() is None
        await wait_for(lambda: full(f"{hub_name} Jam") in browser.removed, 5, "room withdrawn")
        assert full(f"{hub_name} G in") in browser.seen

        app.stop()
        await asyncio.wait_for(running, 15)  # stops by itself: a hang fails here
        await wait_for(
            lambda: {full(f"{hub_name} G in"), full(f"{hub_name} G out")} <= set(browser.removed),
            5,
            "goodbyes at shutdown",
        )
    finally:
        app.stop()
        if not running.done():
            await asyncio.wait_for(running, 5)
        await browser.close()


async def test_disabled_in_the_config_advertises_nothing(tmp_path: Path) -> None:
    (room,) = free_ports(1)
    text = (
        f"name = 'quiet-{room}'\n[mdns]\nenabled = false\n[web]\nlisten = ''\n[rooms]\nR = {room}\n"
    )
    config = config_module.parse(text, "<test>", "127.0.0.1")
    (loud_room,) = free_ports(1)
    loud_text = f"name = 'loud-{loud_room}'\n[web]\nlisten = ''\n[rooms]\nR = {loud_room}\n"
    loud_config = config_module.parse(loud_text, "<test>", "127.0.0.1")
    browser = Browser()
    app = App(config, None, "127.0.0.1", db=":memory:")
    loud = App(loud_config, None, "127.0.0.1", db=":memory:")
    running = asyncio.create_task(app.run())
    loud_running: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: app.server is not None, 5)
        assert app.advertiser is None
        # The end marker: a hub started after it, advertising, is seen; the quiet one
        # would have announced itself first.
        loud_running = asyncio.create_task(loud.run())
        await wait_for(lambda: full(f"loud-{loud_room} R") in browser.seen, 10, "the loud hub")
        assert not any(name.startswith(f"quiet-{room}") for name in browser.seen)
    finally:
        app.stop()
        loud.stop()
        await asyncio.wait_for(running, 15)
        if loud_running is not None:
            await asyncio.wait_for(loud_running, 15)
        await browser.close()


@pytest.mark.parametrize(
    ("bind", "enabled", "expected"),
    [
        ("127.0.0.1", "auto", ["127.0.0.1"]),
        ("192.168.1.20", "auto", ["192.168.1.20"]),
        ("10.0.0.5", False, []),
        ("203.0.113.9", "auto", ["203.0.113.9"]),  # documentation range: counts as private
        ("8.8.8.8", "auto", []),
        ("8.8.8.8", True, ["8.8.8.8"]),
        ("hub.example.org", "auto", []),
    ],
)
def test_which_addresses_are_announced(bind: str, enabled: bool | str, expected: list[str]) -> None:
    assert advertise_addresses(bind, enabled) == expected  # type: ignore[arg-type]


def test_wildcard_announces_loopback_and_lan_addresses_only() -> None:
    found = advertise_addresses("0.0.0.0")
    assert "127.0.0.1" in found and all(":" not in a for a in found)
    for address in found:
        socket.inet_aton(address)


def test_instance_names_fit_one_dns_label() -> None:
    assert instance_name("midihub GroupOne in") == "midihub GroupOne in"
    long = "é" * 40  # 80 bytes
    assert len(instance_name(long).encode()) <= 63 and instance_name(long) == "é" * 31


async def test_a_renamed_port_is_advertised_under_its_new_name(tmp_path: Path) -> None:
    (room,) = free_ports(1)
    hub_name = f"rename-{room}"
    file = tmp_path / "midihub.toml"
    file.write_text(f"name = '{hub_name}'\n[web]\nlisten = ''\n[rooms]\nOld = {room}\n")
    config, _ = config_module.load(file, "127.0.0.1")
    browser = Browser()
    app = App(config, file, "127.0.0.1", db=":memory:")
    running = asyncio.create_task(app.run())
    try:
        await wait_for(lambda: full(f"{hub_name} Old") in browser.seen, 10, "the old name")
        file.write_text(f"name = '{hub_name}'\n[web]\nlisten = ''\n[rooms]\nNew = {room}\n")
        assert app.reload() is None
        await wait_for(lambda: full(f"{hub_name} New") in browser.seen, 10, "the new name")
        await wait_for(lambda: full(f"{hub_name} Old") in browser.removed, 5, "old withdrawn")
        assert browser.seen[full(f"{hub_name} New")] == (room, ["127.0.0.1"])
    finally:
        app.stop()
        await asyncio.wait_for(running, 15)
        await browser.close()


async def test_syncs_at_once_register_each_port_once() -> None:
    (port,) = free_ports(1)
    name = f"twice-{port}"
    advertiser = Advertiser(["127.0.0.1"])
    await advertiser.start()
    try:
        # The start's sync and a reload's, as when a SIGHUP comes during the start.
        await asyncio.gather(advertiser.sync({port: name}), advertiser.sync({port: name}))
        assert advertiser.services[port].name == full(name)  # not "twice-… (2)"
    finally:
        await advertiser.close()


async def test_network_midi2_ports_are_advertised_as_midi2_udp_with_their_txt(
    tmp_path: Path,
) -> None:
    room, midi2 = free_ports(2)
    hub_name = f"bonjour-m2-{room}"
    file = tmp_path / "midihub.toml"
    base = f"name = '{hub_name}'\n[web]\nlisten = ''\n[rooms.Jam]\nport = {room}\n"
    file.write_text(base + f"midi2 = {midi2}\n[midi2]\nproduct_id = 'studio-7'\n")
    config, _ = config_module.load(file, "127.0.0.1")
    browser = Browser(MIDI2_SERVICE_TYPE)
    app = App(config, file, "127.0.0.1", db=":memory:")
    running = asyncio.create_task(app.run())
    name = f"{hub_name} Jam.{MIDI2_SERVICE_TYPE}"
    try:
        await wait_for(lambda: name in browser.seen, 10, "the _midi2._udp service")
        assert browser.seen[name] == (midi2, ["127.0.0.1"])
        assert browser.txt[name] == {
            b"UMPEndpointName": f"{hub_name} Jam".encode(),
            b"ProductInstanceId": b"studio-7",
        }
        file.write_text(base)  # the room keeps its RTP port, loses its Network MIDI 2.0 one
        assert app.reload() is None
        await wait_for(lambda: name in browser.removed, 5, "the service withdrawn")
    finally:
        app.stop()
        await asyncio.wait_for(running, 15)
        await browser.close()
