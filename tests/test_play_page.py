"""The /play page in Debian's Chromium (Playwright) against a live hub: two browser
players and a third-party RTP MIDI peer (npm ``rtpmidi``) in one room; Web MIDI glue
with an injected fake ``MIDIAccess``; pages that load without a console error. The
page's read-only test hook is ``window.midihubPlay``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from midihub.midi.messages import note_off, note_on
from midihub.rtp import LeaveReason, PeerLeft
from tests.interop.npm_peer import NpmPeer
from tests.seeds import seeded
from tests.support import PyPeer, free_ports, serving, wait_for
from tests.test_dashboard import browser  # noqa: F401  (the Chromium fixture)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
# What the pages looked like, in test-output/ (tools/screenshots.py makes docs/img).
_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = _ROOT / "test-output" / "play.png"

FAKE_MIDI = """
(() => {
  const listeners = [];
  const input = { id: "in-1", name: "Fake Keys", type: "input", state: "connected",
                  onmidimessage: null };
  const output = { id: "out-1", name: "Fake Synth", type: "output", state: "connected",
                   sent: [], send(data) { this.sent.push(Array.from(data)); } };
  window.__fakeMidi = {
    input, output,
    play(bytes) {
      if (input.onmidimessage) input.onmidimessage({ data: Uint8Array.from(bytes) });
    },
  };
  navigator.requestMIDIAccess = () => Promise.resolve({
    inputs: new Map([[input.id, input]]),
    outputs: new Map([[output.id, output]]),
    onstatechange: null,
    sysexEnabled: false,
  });
})();
"""
REFUSED_MIDI = """
navigator.requestMIDIAccess = () =>
  Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
"""
NO_MIDI = "delete Navigator.prototype.requestMIDIAccess; delete navigator.requestMIDIAccess;"


class Errors:
    """Console errors and uncaught exceptions of a page."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.seen.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.seen.append(f"{message.text} at {message.location}")


async def open_play(context: BrowserContext, url: str, query: str = "") -> tuple[Page, Errors]:
    page = await context.new_page()
    errors = Errors(page)
    await page.goto(f"{url}/play{query}")
    return page, errors


@asynccontextmanager
async def play_with_alice(
    chromium: Browser, script: str
) -> AsyncIterator[tuple[int, PyPeer, Page, Errors]]:
    """A browser room on a live hub with the RTP peer alice in it, and its /play page open
    in a new browser context that runs ``script`` first: the room's port, alice, the page
    and its errors."""
    (port,) = free_ports(1)
    context = await chromium.new_context()
    await context.add_init_script(script)
    alice = PyPeer("alice")
    try:
        async with serving(f"[rooms.Jam]\nport = {port}\nbrowser = true\n") as (_, url):
            await alice.connect(port)
            page, errors = await open_play(context, url)
            yield port, alice, page, errors
    finally:
        alice.close()
        await context.close()


async def join(page: Page, name: str, port: int) -> None:
    await page.fill("#name", name)
    await expect(page.locator(f"#port option[value='{port}']")).to_have_count(1)
    await page.select_option("#port", str(port))
    await page.click("#join")
    await wait_hook(page, "p.connection === 'joined'")
    await page.locator("body").click(position={"x": 5, "y": 5})  # focus off the form


async def hook(page: Page, what: str) -> Any:
    return await page.evaluate(f"window.midihubPlay.{what}")


async def wait_hook(page: Page, condition: str, timeout: float = 10_000) -> None:
    await page.wait_for_function(
        f"() => {{ const p = window.midihubPlay; return {condition}; }}", timeout=timeout
    )


def index_of(participants: list[dict[str, Any]], name: str) -> tuple[int, str]:
    person = next(p for p in participants if p["name"] == name)
    return person["index"], person["color"]


async def press_screen_key(page: Page, note: int, depth: float) -> None:
    box = await page.locator(f".pkey[data-note='{note}']").bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * depth)
    await page.mouse.down()


async def test_two_pages_and_an_npm_peer_play_in_one_room(browser: Browser) -> None:  # noqa: F811
    (port,) = free_ports(1)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    peer = await NpmPeer.start("rtp-ray")
    try:
        async with serving(f"[rooms.Jam]\nport = {port}\nbrowser = true\n") as (running, url):
            await peer.connect(port)
            page_a, errors_a = await open_play(context, url, f"?port={port}")
            page_b, errors_b = await open_play(context, url, f"?port={port}")
            await join(page_a, "Ana", port)
            await join(page_b, "Bo", port)
            await wait_hook(page_b, "p.participants.length === 3")
            await wait_hook(page_a, "p.participants.length === 3")
            a_index, a_color = index_of(await hook(page_b, "participants"), "Ana")
            ray_index, ray_color = index_of(await hook(page_b, "participants"), "rtp-ray")
            assert a_color != ray_color

            # Ana plays C major with the computer keyboard (A D G = C4 E4 G4) ...
            for key in "adg":
                await page_a.keyboard.down(key)
            await wait_hook(page_b, "Object.keys(p.litKeys).length === 3")
            assert await hook(page_b, "litKeys") == {"60": a_color, "64": a_color, "67": a_color}
            await expect(page_b.locator(".pkey[data-note='64']")).to_have_class("pkey white lit")
            await peer.wait_midi(3)
            ray_index_a, _ = index_of(await hook(page_a, "participants"), "rtp-ray")
            peer.send(note_on(0, 50, 90))  # ... and ray holds a D3 meanwhile: both see it
            await wait_hook(page_b, "p.litKeys['50'] !== undefined")
            await wait_hook(page_a, "p.litKeys['50'] !== undefined")
            assert (await hook(page_b, "litKeys"))["50"] == ray_color
            await page_b.screenshot(path=str(SCREENSHOT), full_page=True)
            for key in "adg":
                await page_a.keyboard.up(key)
            # ... then a loud C5 on the on-screen keyboard (struck near the key's front).
            await press_screen_key(page_a, 72, 0.9)
            await wait_hook(page_b, "p.litKeys['72'] !== undefined")
            await page_a.mouse.up()
            peer.send(note_off(0, 50))
            await wait_hook(page_b, "Object.keys(p.litKeys).length === 0")
            await wait_hook(page_a, "Object.keys(p.litKeys).length === 0")

            sent = await hook(page_a, "sent")
            loud = sent[-2]
            assert loud[:2] == [0x90, 72] and 100 < loud[2] <= 127
            expected = [
                note_on(0, 60, 100),
                note_on(0, 64, 100),
                note_on(0, 67, 100),
                note_off(0, 60, 64),
                note_off(0, 64, 64),
                note_off(0, 67, 64),
                note_on(0, 72, loud[2]),
                note_off(0, 72, 64),
            ]
            assert await peer.wait_midi(len(expected)) == expected
            assert [bytes(m) for m in sent] == expected

            # Page B's synth started and stopped exactly Ana's and ray's voices.
            voices = await hook(page_b, "voices")
            started = [(v["source"], v["note"]) for v in voices["started"]]
            stopped = [(v["source"], v["note"]) for v in voices["stopped"]]
            ana = [(a_index, n) for n in (60, 64, 67)]
            assert started == [*ana, (ray_index, 50), (a_index, 72)]
            assert sorted(stopped) == sorted(started) and voices["active"] == 0
            voices_a = await hook(page_a, "voices")
            assert (ray_index_a, 50) in [(v["source"], v["note"]) for v in voices_a["started"]]
            heard = await hook(page_b, "received")
            assert [bytes(m) for i, m in heard if i == a_index] == expected
            assert [bytes(m) for i, m in heard if i == ray_index] == [
                note_on(0, 50, 90),
                note_off(0, 50),
            ]

            # Ana holds an A4 and closes her tab: the close itself (not a ping timeout)
            # releases it, and the others get the NoteOff.
            await page_a.keyboard.down("h")
            await peer.wait_midi(len(expected) + 1)
            await wait_hook(page_b, "p.litKeys['69'] !== undefined")
            await page_a.close()
            await wait_for(
                lambda: len(peer.midi) >= len(expected) + 2, 5, "the NoteOff after the close"
            )
            assert peer.midi[-1] == note_off(0, 69), peer.midi[-2:]
            left = [e for _, e in running.events if isinstance(e, PeerLeft)]
            assert [(e.who.name, e.reason) for e in left] == [("Ana", LeaveReason.CLOSED)]
            await wait_hook(page_b, "p.litKeys['69'] === undefined && p.participants.length === 2")
            assert running.hub.notes_released >= 1
            assert errors_a.seen == [] and errors_b.seen == []
    finally:
        await peer.close()
        await context.close()


async def test_web_midi_devices_play_and_hear_through_the_page(browser: Browser) -> None:  # noqa: F811
    rng = seeded("web midi devices", "notes played")
    async with play_with_alice(browser, FAKE_MIDI) as (port, alice, page, errors):
        await expect(page.locator("#midi-status")).to_contain_text("1 input(s), 1 output(s)")
        await join(page, "Kim", port)
        await page.select_option("#midi-in", label="Fake Keys")
        await page.select_option("#midi-out", label="Fake Synth")
        # The device plays (clock ticks stay home); the room hears it in order.
        notes = [rng.randrange(21, 109) for _ in range(5)]
        for note in notes:
            await page.evaluate("window.__fakeMidi.play([0xF8])")
            await page.evaluate(f"window.__fakeMidi.play([0x91, {note}, 77])")
            await page.evaluate(f"window.__fakeMidi.play([0x81, {note}, 0])")
        wanted = [m for n in notes for m in (note_on(1, n, 77), note_off(1, n, 0))]
        await wait_for(lambda: len(alice.received) >= len(wanted), 5, "the notes")
        assert alice.received == wanted
        # What the room plays goes out to the device.
        alice.send(note_on(3, 40, 99), note_off(3, 40))
        await page.wait_for_function("() => window.__fakeMidi.output.sent.length === 2")
        assert await page.evaluate("window.__fakeMidi.output.sent") == [
            [0x93, 40, 99],
            [0x83, 40, 0],
        ]
        # The choice is remembered for the next visit.
        await page.reload()
        await expect(page.locator("#midi-in")).to_have_value("in-1")
        await expect(page.locator("#midi-out")).to_have_value("out-1")
        assert errors.seen == []


@pytest.mark.parametrize(
    ("script", "says"),
    [
        (REFUSED_MIDI, "Web MIDI was refused (NotAllowedError)"),
        (NO_MIDI, "This browser has no Web MIDI"),
        (
            "Object.defineProperty(window, 'isSecureContext', {value: false});",
            "Web MIDI needs a secure page: open this page over HTTPS",
        ),
    ],
)
async def test_without_web_midi_the_page_says_why_and_the_keyboards_play(
    browser: Browser,  # noqa: F811
    script: str,
    says: str,
) -> None:
    async with play_with_alice(browser, script) as (port, alice, page, errors):
        await expect(page.locator("#midi-status")).to_contain_text(says)
        await expect(page.locator("#midi-in")).to_be_disabled()
        await join(page, "Lee", port)
        await page.keyboard.press("x")  # octave up: C5
        await page.keyboard.press("a")
        await press_screen_key(page, 48, 0.2)  # a soft C3
        await page.mouse.up()
        await wait_for(lambda: len(alice.received) == 4)
        assert alice.received[:2] == [note_on(0, 72, 100), note_off(0, 72, 64)]
        assert alice.received[2][:2] == note_on(0, 48, 1)[:2] and alice.received[2][2] < 60
        assert errors.seen == []


async def test_play_page_and_dashboard_load_without_console_errors(browser: Browser) -> None:  # noqa: F811
    (port,) = free_ports(1)
    context = await browser.new_context()
    try:
        async with serving(f'[rooms.Jam]\nport = {port}\nbrowser = true\nkey = "letmein"\n') as (
            _,
            url,
        ):
            dashboard = await context.new_page()
            errors = Errors(dashboard)
            await dashboard.goto(url + "/")
            await dashboard.wait_for_load_state("networkidle")
            await expect(dashboard.locator("#nav-play")).to_have_attribute("href", "/play")
            refused, _ = await open_play(context, url, f"?port={port}&key=wrong")
            await refused.fill("#name", "Guess")
            await expect(refused.locator(f"#port option[value='{port}']")).to_have_count(1)
            await refused.select_option("#port", str(port))
            await refused.click("#join")
            # The player's words, not a raw close code such as "closed (4403)".
            await expect(refused.locator("#state")).to_have_text("not joined: wrong room key")
            page, play_errors = await open_play(context, url, f"?port={port}&key=letmein")
            await page.wait_for_load_state("networkidle")
            await expect(page.locator("#key-label")).to_be_visible()
            await join(page, "Max", port)
            await expect(page.locator("#people li[data-name='Max']")).to_be_visible()
            favicon = await page.request.get(url + "/favicon.ico")
            assert favicon.status == 200 and "svg" in favicon.headers["content-type"]
            await dashboard.reload()
            await dashboard.wait_for_load_state("networkidle")
            await expect(
                dashboard.locator(f".card.port[data-port='{port}'] .participant[data-name='Max']")
            ).to_contain_text("browser")
            assert errors.seen == [] and play_errors.seen == []
    finally:
        await context.close()


async def test_the_play_page_opens_the_musicians_guide(browser: Browser) -> None:  # noqa: F811
    """The play page's "step by step" link and the dashboard's tab open docs/connect.md,
    served by the hub even when its other pages need the token."""
    (port,) = free_ports(1)
    guide = (_ROOT / "docs" / "connect.md").read_text(encoding="utf-8")
    title = guide.splitlines()[0].removeprefix("# ")
    sections = [line[3:] for line in guide.splitlines() if line.startswith("## ")]
    context = await browser.new_context()
    try:
        async with serving(f"[rooms.Jam]\nport = {port}\nbrowser = true\n", public=False) as (
            _,
            url,
        ):
            page, errors = await open_play(context, url)
            await page.click(".connect-help summary")
            await page.click("#guide-link")
            await expect(page).to_have_url(url + "/connect")
            await expect(page.locator("article h1")).to_have_text(title)
            await expect(page.locator("article h2")).to_have_text(sections)
            # The guide's table of contents jumps to its sections.
            await page.click("article a[href='#behind-a-home-router']")
            await expect(page).to_have_url(url + "/connect#behind-a-home-router")
            await expect(page.locator("#behind-a-home-router")).to_be_in_viewport()
            await page.click("nav a[href='/play']")
            await expect(page.locator("#join")).to_be_visible()
            assert errors.seen == []
            # The dashboard (its data needs the token here, the guide does not).
            dashboard = await context.new_page()
            await dashboard.goto(url + "/")
            await dashboard.click("#nav-guide")
            await expect(dashboard).to_have_url(url + "/connect")
            await expect(dashboard.locator("article h1")).to_have_text(title)
    finally:
        await context.close()


PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}
FINGER = 28  # px: the narrowest white key a fingertip can be asked to hit


async def tap_key(page: Page, note: int, depth: float = 0.85) -> None:
    box = await page.locator(f".pkey[data-note='{note}']").bounding_box()
    assert box is not None
    await page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] * depth)


async def test_a_phone_plays_by_touch_with_keys_a_finger_can_hit(browser: Browser) -> None:  # noqa: F811
    """At 390 px a touch screen gets fewer, wider keys around the octave (the octave
    buttons move them), no page wider than the screen, and no computer-keyboard help."""
    (port,) = free_ports(1)
    context = await browser.new_context(**PHONE)
    alice = PyPeer("alice")
    try:
        async with serving(f"[rooms.Jam]\nport = {port}\nbrowser = true\n") as (_, url):
            await alice.connect(port)
            page, errors = await open_play(context, url, f"?port={port}")
            await join(page, "Pat", port)
            assert await page.evaluate("document.documentElement.scrollWidth") <= 390

            whites = await page.locator(".pkey.white:visible").all()
            boxes = [box for key in whites if (box := await key.bounding_box())]
            assert len(boxes) >= 7, boxes
            assert min(b["width"] for b in boxes) >= FINGER, [b["width"] for b in boxes]
            assert all(b["x"] >= 0 and b["x"] + b["width"] <= 390 for b in boxes), boxes
            blacks = await page.locator(".pkey.black:visible").all()
            narrow = [box for key in blacks if (box := await key.bounding_box())]
            assert narrow and min(b["width"] for b in narrow) >= FINGER * 0.6, narrow
            await expect(page.locator(".pkey[data-note='60']")).to_be_visible()
            await expect(page.locator(".keys-help")).to_be_hidden()
            for hint in await page.locator(".keys-only").all():
                await expect(hint).to_be_hidden()
            await page.screenshot(path=str(_ROOT / "test-output" / "play-phone.png"))
            # What a MIDI network app would need instead: this host and the room's port.
            await expect(page.locator("#rtp-host")).to_have_text("127.0.0.1")
            await expect(page.locator("#rtp-port")).to_have_text(str(port))

            await tap_key(page, 60)  # a tapped middle C reaches the room, and ends
            await wait_for(lambda: len(alice.received) >= 2, 10, "the tapped C4")
            assert alice.received[0][:2] == note_on(0, 60, 1)[:2]
            assert alice.received[1] == note_off(0, 60, 64)

            await page.tap("#octave-up")  # the window moves up an octave
            await expect(page.locator("#octave")).to_have_text("5")
            await expect(page.locator(".pkey[data-note='60']")).to_be_hidden()
            await tap_key(page, 72)
            await wait_for(lambda: len(alice.received) >= 4, 10, "the tapped C5")
            assert alice.received[2][:2] == note_on(0, 72, 1)[:2]
            await page.tap("#sustain")  # the pedal on screen: down while touched, then up
            await wait_for(lambda: len(alice.received) >= 6, 10, "the pedal")
            assert alice.received[4:6] == [bytes((0xB0, 64, 127)), bytes((0xB0, 64, 0))]
            assert errors.seen == []
    finally:
        alice.close()
        await context.close()
