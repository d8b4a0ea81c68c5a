"""The dashboard's Fleet page in Debian's Chromium (Playwright): two hubs on one real
PostgreSQL database (tests/pg.py), each page showing both hubs, up, with their players;
a hub without ``[fleet]`` says the fleet is off."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.fixtures import MakePeer, ServeRoom
from tests.test_dashboard import browser, only_the_hub, open_page, shot
from tests.test_fleet_view import StartApp, start_app

__all__ = ["browser", "start_app"]  # the fixtures, shared with the other tests

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


async def test_the_fleet_page_shows_every_hub_and_its_players(
    browser: Browser, start_app: StartApp, make_peer: MakePeer
) -> None:
    _, url_a, port_a = await start_app("eu-1", "127.0.0.1")
    _, url_b, port_b = await start_app("us-1", "127.0.0.2")
    alice, bob = make_peer("alice"), make_peer("bob")
    await alice.connect(port_a)
    await bob.connect(port_b, host="127.0.0.2")
    for url, me in ((url_a, "eu-1"), (url_b, "us-1")):
        page, requested = await open_page(browser, url)
        await page.click("#tab-fleet")
        for name, player in (("eu-1", "alice"), ("us-1", "bob")):
            card = page.locator(f".card.hub[data-hub='{name}']")
            await expect(card.locator(".hub-state")).to_have_text("up", timeout=30_000)
            await expect(card.locator(f"li[data-name='{player}']")).to_be_visible(timeout=30_000)
        await expect(page.locator(".card.hub.self")).to_have_attribute("data-hub", me)
        await expect(page.locator(".card.hub[data-hub='eu-1'] .rooms")).to_contain_text(
            f"Jam (room {port_a})"
        )
        await expect(page.locator("#fleet-summary")).to_contain_text(f"Seen from {me}: 2 hub(s)")
        await shot(page, f"fleet-{me}")
        only_the_hub(requested, url)
        await page.close()


async def test_the_fleet_page_says_when_the_fleet_is_off(
    browser: Browser, serve_room: ServeRoom
) -> None:
    _, url, _, _ = await serve_room()
    page, _ = await open_page(browser, url)
    await page.click("#tab-fleet")
    await expect(page.locator("#fleet-off")).to_be_visible()
    await expect(page.locator("#fleet-on")).to_be_hidden()
