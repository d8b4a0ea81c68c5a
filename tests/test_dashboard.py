"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against
a live hub with real RTP MIDI sessions. Screenshots go to test-output/screenshots."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from midihub.midi.messages import note_off, note_on
from tests.support import TOKEN, PyPeer, free_ports, marked, serving, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(browser: Browser, url: str) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(url + "/")
    return page, requested


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def only_the_hub(requested: list[str], url: str) -> None:
    hub = urlsplit(url).netloc
    assert requested, "the page made no request at all"
    strangers = [r for r in requested if urlsplit(r).netloc != hub]
    assert strangers == [], strangers


async def test_overview_and_monitor_follow_a_real_peer(browser: Browser) -> None:
    port_in, port_out = free_ports(2)
    async with serving(f"[groups]\nBand = [{port_in}, {port_out}]") as (_, url):
        page, requested = await open_page(browser, url)
        card = page.locator(f".card.port[data-port='{port_in}']")
        await expect(card).to_contain_text("Band in")
        await expect(card.locator(".empty")).to_be_visible()

        alice = PyPeer("alice")
        try:
            await alice.connect(port_in)
            await expect(card.locator(".participant[data-name='alice']")).to_be_visible()
            await expect(card).to_contain_text(f"127.0.0.1:{alice.port}")
            await shot(page, "overview")

            await page.click("#tab-monitor")
            await page.select_option("#monitor-port", str(port_in))
            await expect(page.locator("#monitor-who")).to_contain_text("alice")
            middle_c = page.locator(".key[data-note='60']")
            await expect(middle_c).not_to_have_class("held")
            alice.send(note_on(2, 60, 100), note_on(0, 64, 90), bytes((0xB0, 64, 127)))
            await expect(middle_c).to_have_class("key white held")
            await expect(middle_c).to_have_attribute("data-channels", "3")
            await expect(page.locator(".chan[data-channel='1']")).to_contain_text("sustain")
            await expect(page.locator("#monitor-log")).to_contain_text("note_on ch3 C4 100")
            await shot(page, "monitor")
            alice.send(note_off(2, 60))
            await expect(middle_c).to_have_class("key white")
            await expect(page.locator(".key[data-note='64']")).to_have_class("key white held")
            panic = {"port": port_in, "range": "Mid"}  # a panic shows in the event list
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert (await page.request.post(url + "/api/panic", data=panic, headers=bearer)).ok
            await expect(page.locator("#monitor-log")).to_contain_text(
                "panic: Mid (43-85) notes off on every channel, to everyone"
            )

            await page.click("#tab-overview")
            alice.bye()
            await expect(card.locator(".participant[data-name='alice']")).to_have_count(0)
            await expect(card.locator(".empty")).to_be_visible()
        finally:
            alice.close()
        only_the_hub(requested, url)


async def test_the_monitor_opens_on_the_busiest_port_and_lays_out_cleanly(
    browser: Browser,
) -> None:
    """Whatever the ports' order, the monitor first shows the one with people on it; its
    keyboard spans the page, no note name wraps, and an empty log says it is empty."""
    quiet, busy = sorted(free_ports(2))  # the busy one listed second
    async with serving(f"[rooms]\nQuiet = {quiet}\nBusy = {busy}") as (_, url):
        alice = PyPeer("alice")
        try:
            await alice.connect(busy)
            page, _ = await open_page(browser, url)
            await page.click("#tab-monitor")
            await expect(page.locator("#monitor-port")).to_have_value(str(busy))
            await expect(page.locator("#monitor-who")).to_contain_text("alice")
            log = page.locator("#monitor-log")
            placeholder = "getComputedStyle(document.querySelector('#monitor-log'), '::before')"
            assert "No MIDI on this port yet" in await page.evaluate(f"{placeholder}.content")
            board = await page.locator("#keyboard").bounding_box()
            lowest = await page.locator(".key[data-note='0']").bounding_box()
            highest = await page.locator(".key[data-note='127']").bounding_box()
            assert board and lowest and highest
            assert abs(lowest["x"] - board["x"]) <= 2
            assert abs(highest["x"] + highest["width"] - (board["x"] + board["width"])) <= 2
            name = await page.locator(".key[data-note='0'] .name").bounding_box()
            assert name and name["height"] < 14, name  # "C-1" on one line
            alice.send(note_on(0, 60, 100))
            await expect(log).to_contain_text("note_on ch1 C4 100")
            assert await page.evaluate(f"{placeholder}.content") == "none"
        finally:
            alice.close()


async def test_stuck_note_buttons_need_the_token_and_send_the_range(browser: Browser) -> None:
    port_in, port_out = free_ports(2)
    async with serving(f"[groups]\nBand = [{port_in}, {port_out}]") as (_, url):
        bob = PyPeer("bob")
        alice = PyPeer("alice")
        try:
            await bob.connect(port_out)
            await alice.connect(port_in)
            alice.send(note_on(0, 50, 80))
            await wait_for(lambda: len(bob.received) == 1)
            bob.received.clear()

            page, requested = await open_page(browser, url)
            await page.click("#tab-stuck")
            low = page.locator(f"button.panic[data-port='{port_out}'][data-range='Low']")
            mark = page.locator(f".mark[data-port='{port_out}']")
            await low.click()
            await expect(mark).to_have_text("✗")
            await expect(mark).to_have_class("mark fail")
            await expect(page.locator(f".card[data-port='{port_out}'] > .message")).to_contain_text(
                "token"
            )
            await marked(alice, bob)
            assert bob.received == []  # refused: nothing was sent

            await page.fill("#token", TOKEN)
            await page.locator("#token").dispatch_event("change")
            await low.click()
            await expect(mark).to_have_text("✓")
            await expect(mark).to_have_class("mark ok")
            await shot(page, "stuck-notes")
            expected = [note_off(ch, n) for ch in range(16) for n in range(43)]
            await wait_for(lambda: len(bob.received) >= len(expected), 5, "bob's NoteOffs")
            assert bob.received == expected
            await expect(mark).to_have_text("", timeout=4000)  # the mark goes after 2 s

            await page.click("#tab-latency")
            await expect(page.locator("#latency-table tbody tr[data-name='bob']")).to_be_visible()
            await shot(page, "latency")
            only_the_hub(requested, url)
        finally:
            bob.close()
            alice.close()


async def test_joins_are_pushed_to_the_open_page_without_polling(browser: Browser) -> None:
    """The fallback poll is set to ten minutes: only the /api/events stream can show
    the join in time, and the page must not fetch the overview while it is live."""
    (port,) = free_ports(1)
    async with serving(f"[rooms]\nJam = {port}") as (_, url):
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        await page.goto(url + "/?poll=600000")
        await page.wait_for_function(
            "window.midihubLive.connected && window.midihubLive.events > 0"
        )
        card = page.locator(f".card.port[data-port='{port}']")
        await expect(card.locator(".empty")).to_be_visible()
        fetched = [r for r in requested if "/api/participants" in r]
        carol = PyPeer("carol")
        try:
            await carol.connect(port)
            await expect(card.locator(".participant[data-name='carol']")).to_be_visible(
                timeout=5000
            )
            await page.click("#tab-latency")
            await expect(page.locator("#latency-table tbody tr[data-name='carol']")).to_be_visible()
            carol.bye()
            await page.click("#tab-overview")
            await expect(card.locator(".participant[data-name='carol']")).to_have_count(0)
        finally:
            carol.close()
        assert [r for r in requested if "/api/participants" in r] == fetched
        assert not [r for r in requested if "/api/latency" in r and "history" not in r]
        assert await page.evaluate("window.midihubLive.polls") == 0
        events = [r for r in requested if "/api/events" in r]
        assert len(events) == 1, events
        only_the_hub(requested, url)


async def test_the_overview_shows_half_open_invitations(browser: Browser) -> None:
    """An invitation that never finishes (the first half of a spoofed flood) is shown
    as half-open on its port, next to the participants. It must still be half-open
    when the page looks: the handshake timeout is the longest the config allows (the
    default 5 s once ran out on a busy machine before the page showed it)."""
    import socket

    from midihub.rtp import packets as p

    (port,) = free_ports(1)
    config = f"[rooms]\nJam = {port}\n[limits]\nhandshake_timeout = 60\n"
    async with serving(config) as (running, url):
        page, _ = await open_page(browser, url)
        await page.wait_for_function("window.midihubLive.connected")
        card = page.locator(f".card.port[data-port='{port}']")
        table = running.hub.endpoints[port].table
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.2", 0))
            invite = p.encode_invitation(p.Invitation(p.INVITATION, 7, 0x7777, "stranger"))
            stranger.sendto(invite, ("127.0.0.1", port))
            await wait_for(lambda: table.pending == 1, 10, "the half-open invitation")
            alice = PyPeer("alice")  # a join pushes the port's state to the page
            try:
                await alice.connect(port, timeout=20)
                await expect(card.locator(".half-open")).to_contain_text(
                    "1 half-open", timeout=30_000
                )
                await expect(card.locator(".participant[data-name='alice']")).to_be_visible()
                assert table.pending == 1  # what the page showed is still so
            finally:
                alice.close()


async def test_latency_page_parts_live_from_history_and_charts_sessions_apart(
    browser: Browser, tmp_path: Path
) -> None:
    """carol played twice (two addresses, the later one sorting first) and left; bob is
    connected. The table shows bob as connected and carol under earlier sessions; the
    chart draws each unbroken run of minutes as its own line, forward in time."""
    import sqlite3
    import time

    from midihub.history import LatencyStore
    from tests.history_seed import SCHEMA

    path = tmp_path / "history.db"
    now = int(time.time() // 60 * 60)
    earlier = [now - 3000 + 60 * i for i in range(12)]  # session 1, from :40002
    later = [now - 1800 + 60 * i for i in range(8)] + [now - 300]  # session 2 and a lone minute
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.execute(
            "INSERT INTO participants VALUES (1, 'carol', '127.0.0.1:40001', 5004, ?, ?)",
            (later[0], later[-1]),
        )
        db.execute(
            "INSERT INTO participants VALUES (2, 'carol', '127.0.0.1:40002', 5004, ?, ?)",
            (earlier[0], earlier[-1]),
        )
        db.executemany(
            "INSERT INTO latency_minutes VALUES (?, ?, 6, ?, ?, ?, ?, ?, ?, ?)",
            [
                (pid, m, 6 * (5 + i % 4), 2 + i % 3, m + 5, 9 + i % 5, m + 30, 5, m + 50)
                for pid, minutes in ((1, later), (2, earlier))
                for i, m in enumerate(minutes)
            ],
        )
    db.close()
    store = LatencyStore(str(path))
    await store.start()
    (port,) = free_ports(1)
    try:
        async with serving(f"[rooms]\nJam = {port}", store=store) as (_, url):
            bob = PyPeer("bob")
            try:
                await bob.connect(port)
                page, _ = await open_page(browser, url)
                await page.click("#tab-latency")
                live = page.locator("#latency-table tbody tr")
                past = page.locator("#latency-past tbody tr")
                await expect(live.and_(page.locator("[data-name='bob']"))).to_have_count(1)
                await expect(past.and_(page.locator("[data-name='carol']"))).to_have_count(2)
                await expect(live.and_(page.locator("[data-name='carol']"))).to_have_count(0)
                await expect(past.and_(page.locator("[data-name='bob']"))).to_have_count(0)
                await expect(page.locator("#latency-history")).to_contain_text("Earlier sessions")

                await page.select_option("#chart-participant", "carol")
                await expect(page.locator("#chart polyline.avg")).to_have_count(2)
                await expect(page.locator("#chart circle.dot")).to_have_count(1)
                lines = await page.evaluate(
                    """[...document.querySelectorAll('#chart polyline.avg')].map((l) =>
                        l.getAttribute('points').split(' ').map((p) => Number(p.split(',')[0])))"""
                )
                assert sorted(len(xs) for xs in lines) == [8, 12]
                for xs in lines:
                    assert all(a < b for a, b in itertools.pairwise(xs)), xs
                first, second = sorted(lines)
                assert max(first) < min(second)  # the sessions apart, in time order
                await shot(page, "latency-history")
            finally:
                bob.close()
    finally:
        await store.close()
