"""Regenerate the pictures in docs/img from the real pages.

Starts ``midihub serve`` (a room open to browsers, a group, a latency database with two
earlier sessions, recordings), joins RTP MIDI players (tests/support.py's ``PyPeer``)
and browser players, plays a few notes, and captures each page in Debian's Chromium;
then two hubs in a fleet on a throw-away PostgreSQL (tests/pg.py) for the Fleet page:

    PYTHONPATH=src:. .venv/bin/python tools/screenshots.py [--out docs/img]

Then look at every picture before committing it.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import aiohttp
from playwright.async_api import Browser, Page, async_playwright, expect

from midihub.midi.messages import note_off, note_on
from tests.history_seed import SCHEMA
from tests.pg import PgCluster
from tests.ports import free_tcp_port
from tests.seeds import seeded
from tests.support import TOKEN, PyPeer, free_port_pair, free_ports
from tests.test_dashboard import CHROMIUM, FLAGS
from tests.test_play_page import PHONE, join, wait_hook
from tests.test_serve import Served

ROOT = Path(__file__).resolve().parent.parent
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
SUSTAIN = bytes((0xB0, 64, 127))


def earlier_sessions(path: Path, hub_port: int) -> None:
    """Two players' past evenings in the history database: a minute's min/avg/max each,
    a random walk from a fixed seed, with a break where one dropped out."""
    rng = seeded("screenshots", "history")
    now = int(time.time() // 60 * 60)
    rows = []
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        for pid, (name, address, base) in enumerate(
            [("kim", "192.0.2.10:5004", 18.0), ("lee", "198.51.100.7:5004", 34.0)], start=1
        ):
            minutes = [now - 60 * m for m in range(55, 0, -1) if not 25 <= m < 33 or pid == 2]
            db.execute(
                "INSERT INTO participants VALUES (?, ?, ?, ?, ?, ?)",
                (pid, name, address, hub_port, minutes[0], minutes[-1]),
            )
            level = base
            for m in minutes:
                level = max(4.0, level + rng.uniform(-2.5, 2.5))
                low, high = level - rng.uniform(1, 4), level + rng.uniform(2, 12)
                rows.append((pid, m, 6, 6 * level, low, m + 7, high, m + 31, level, m + 55))
        db.executemany("INSERT INTO latency_minutes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()


async def api(url: str, method: str, path: str, body: object = None) -> object:
    async with (
        aiohttp.ClientSession() as client,
        client.request(
            method, url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json()


async def dashboard(browser: Browser, url: str, tab: str) -> Page:
    page = await browser.new_page(**DESKTOP)
    await page.add_init_script(f"localStorage.setItem('midihub-token', {TOKEN!r})")
    await page.goto(url + "/")
    await page.wait_for_function("window.midihubLive.connected")
    await page.click(f"#tab-{tab}")
    return page


async def capture(browser: Browser, url: str, out: Path, jam: int, band: tuple[int, int]) -> None:
    alice, bob, carol = PyPeer("alice"), PyPeer("bob"), PyPeer("carol")
    desktop = await browser.new_context(viewport={"width": 1280, "height": 900})
    phone = await browser.new_context(**PHONE)
    try:
        await alice.connect(jam)
        await bob.connect(jam)
        await carol.connect(band[0])
        done = await api(url, "POST", "/api/recordings", {"port": jam})
        assert isinstance(done, dict)
        alice.send(note_on(0, 48, 90), note_off(0, 48))
        await api(url, "POST", f"/api/recordings/{done['id']}/stop")
        await api(url, "POST", "/api/recordings", {"port": jam})  # the one in progress

        ana, bo = await desktop.new_page(), await desktop.new_page()
        for page, name in ((ana, "Ana"), (bo, "Bo")):
            await page.goto(f"{url}/play?port={jam}")
            await join(page, name, jam)
        pat = await phone.new_page()  # a phone in the room: it sees what is played next
        await pat.goto(f"{url}/play?port={jam}")
        await join(pat, "Pat", jam)
        await wait_hook(bo, "p.participants.length === 5")
        for key in "adg":  # Ana holds C major on her computer keyboard
            await ana.keyboard.down(key)
        alice.send(note_on(1, 43, 100), note_on(1, 50, 96), SUSTAIN)  # alice: G2, D3, pedal
        await wait_hook(bo, "Object.keys(p.litKeys).length === 5")
        await bo.screenshot(path=str(out / "play.png"), full_page=True)

        await wait_hook(pat, "Object.keys(p.litKeys).length === 5")
        await pat.screenshot(path=str(out / "play-phone.png"))

        page = await dashboard(browser, url, "overview")
        card = page.locator(f".card.port[data-port='{jam}']")
        await expect(card.locator(".participant[data-name='Pat']")).to_be_visible()
        await page.screenshot(path=str(out / "overview.png"), full_page=True)

        page = await dashboard(browser, url, "monitor")
        await expect(page.locator("#monitor-port")).to_have_value(str(jam))
        alice.send(note_on(1, 55, 88))  # a note after the page opened, for its log
        await expect(page.locator(".key[data-note='55']")).to_have_class("key white held")
        await expect(page.locator(".key[data-note='60']")).to_have_class("key white held")
        await page.screenshot(path=str(out / "monitor.png"), full_page=True)

        page = await dashboard(browser, url, "latency")
        await expect(page.locator("#latency-past tbody tr[data-name='kim']")).to_be_visible()
        await expect(page.locator("#latency-table tbody tr[data-name='Pat']")).to_be_visible()
        await page.select_option("#chart-participant", "kim")
        await expect(page.locator("#chart polyline.avg")).to_have_count(2)
        await page.screenshot(path=str(out / "latency.png"), full_page=True)

        page = await dashboard(browser, url, "stuck")
        await page.click(f"button.panic[data-port='{band[1]}'][data-range='All']")
        await expect(page.locator(f".mark[data-port='{band[1]}']")).to_have_text("✓")
        await page.screenshot(path=str(out / "stuck-notes.png"), full_page=True)

        page = await dashboard(browser, url, "recordings")
        await expect(page.locator(f"#recordings-table tr[data-id='{done['id']}']")).to_be_visible()
        await expect(page.locator(f".rec-status[data-port='{jam}']")).to_contain_text("recording")
        await page.screenshot(path=str(out / "recordings.png"), full_page=True)

        for key in "adg":
            await ana.keyboard.up(key)
    finally:
        for peer in (alice, bob, carol):
            peer.close()
        await desktop.close()
        await phone.close()


async def capture_fleet(browser: Browser, out: Path) -> None:
    """Two hubs (eu-1 on 127.0.0.1, us-1 on 127.0.0.2) sharing the room Jam, a player on
    each: eu-1's Fleet page."""
    cluster = PgCluster()
    served: list[Served] = []
    players: list[PyPeer] = []
    try:
        database = cluster.new_database()
        with tempfile.TemporaryDirectory() as scratch:
            urls = []
            for name, address in (("eu-1", "127.0.0.1"), ("us-1", "127.0.0.2")):
                folder = Path(scratch) / name
                folder.mkdir()
                port, web = free_port_pair(address), f"127.0.0.1:{free_tcp_port()}"
                (folder / "midihub.toml").write_text(
                    f'name = "{name}"\nbind = "{address}"\n[rooms]\nJam = {port}\n'
                    f'[web]\nlisten = "{web}"\ntoken = "{TOKEN}"\n[mdns]\nenabled = false\n'
                    f'[fleet]\ndatabase = "{database}"\nname = "{name}"\naddress = "{address}"\n'
                    "heartbeat = 1.0\n"
                )
                served.append(
                    await Served.start(
                        "--config",
                        "midihub.toml",
                        "--db",
                        ":memory:",
                        cwd=folder,
                        own_web_port=False,
                    )
                )
                player = PyPeer({"eu-1": "alice", "us-1": "bob"}[name])
                players.append(player)
                await player.connect(port, host=address)
                urls.append(f"http://{web}")
            page = await dashboard(browser, urls[0], "fleet")
            for name, player in (("eu-1", "alice"), ("us-1", "bob")):
                card = page.locator(f".card.hub[data-hub='{name}']")
                await expect(card.locator(f"li[data-name='{player}']")).to_be_visible(
                    timeout=30_000
                )
            await expect(page.locator(".card.hub[data-hub='us-1']")).to_contain_text("linked")
            await page.screenshot(path=str(out / "fleet.png"), full_page=True)
    finally:
        for player in players:
            player.close()
        for hub in served:
            await hub.stop()
        cluster.close()


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    jam, band_in, band_out = free_ports(3)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        earlier_sessions(tmp / "midihub.db", jam)
        web = f"127.0.0.1:{free_tcp_port()}"
        (tmp / "midihub.toml").write_text(
            f'bind = "127.0.0.1"\n[rooms.Jam]\nport = {jam}\nbrowser = true\n'
            f"[groups]\nBand = [{band_in}, {band_out}]\n"
            f'[web]\nlisten = "{web}"\ntoken = "{TOKEN}"\n'
            f'[stats]\ndatabase = "{tmp / "midihub.db"}"\n[mdns]\nenabled = false\n'
            f'[record]\ndir = "{tmp / "recordings"}"\n'
        )
        served = await Served.start(
            "--config", str(tmp / "midihub.toml"), cwd=tmp, own_web_port=False
        )
        try:
            await served.has("dashboard and API on", 10)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                try:
                    await capture(browser, f"http://{web}", out, jam, (band_in, band_out))
                    await capture_fleet(browser, out)
                finally:
                    await browser.close()
        finally:
            await served.stop()
    print("\n".join(str(p.relative_to(ROOT)) for p in sorted(out.glob("*.png"))))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    asyncio.run(main(parser.parse_args().out.resolve()))
