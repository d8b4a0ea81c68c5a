"""One room, three kinds of participant: a Network MIDI 2.0 client (the independent test
client over UDP), a third-party RTP MIDI peer (npm ``rtpmidi``) and a browser on /play
(Debian's Chromium, Playwright). Every message exact in every direction."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from midihub.midi.messages import note_off, note_on
from tests.interop.npm_peer import NpmPeer
from tests.midi2_client import Midi2Client
from tests.seeds import seeded
from tests.support import free_ports, serving, wait_for
from tests.test_dashboard import browser  # noqa: F401  (the Chromium fixture)
from tests.test_midi2_hub import cv1, join, note2, send
from tests.test_play_page import hook, index_of, open_play, wait_hook
from tests.test_play_page import join as join_page

pytestmark = [pytest.mark.browser, pytest.mark.interop, pytest.mark.timeout(180)]


async def test_a_midi2_client_an_npm_peer_and_a_browser_play_in_one_room(
    browser: Browser,  # noqa: F811
) -> None:
    port, midi2 = free_ports(2)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    peer = await NpmPeer.start("rtp-ray")
    text = f'name = "hub"\n[rooms.Jam]\nport = {port}\nmidi2 = {midi2}\nbrowser = true\n'
    udp = None
    try:
        async with serving(text) as (_, url):
            await peer.connect(port)
            udp = await join(midi2, Midi2Client(name="Win MIDI 2", rng=seeded(1, "m2 page")))
            core = udp.core
            page, errors = await open_play(context, url, f"?port={port}")
            await join_page(page, "Ana", port)
            await wait_hook(page, "p.participants.length === 3")
            people = await hook(page, "participants")
            m2_index, _ = index_of(people, "Win MIDI 2")
            ray_index, _ = index_of(people, "rtp-ray")
            assert next(p for p in people if p["name"] == "Win MIDI 2")["transport"] == "midi2"

            # The Network MIDI 2.0 client plays: a MIDI 1.0 note and a MIDI 2.0 one (its
            # 16-bit velocity scaled to 7 bits), and lets both go.
            send(udp, cv1(0x90, 60, 100), note2(True, 1, 64, 0xC800))
            send(udp, cv1(0x80, 60, 0), note2(False, 1, 64, 0))
            from_m2 = [note_on(0, 60, 100), note_on(1, 64, 100), note_off(0, 60), note_off(1, 64)]
            assert await peer.wait_midi(4) == from_m2
            await wait_hook(page, f"p.received.filter(r => r[0] === {m2_index}).length === 4")
            heard = await hook(page, "received")
            assert [bytes(m) for i, m in heard if i == m2_index] == from_m2

            # The RTP MIDI peer plays: the client gets MIDI 1.0 in UMP, the page bytes.
            peer.send(note_on(2, 50, 90), note_off(2, 50))
            from_ray = [note_on(2, 50, 90), note_off(2, 50)]
            await wait_for(lambda: len(core.received) >= 2, 10, "ray's notes at the client")
            assert core.received == [cv1(0x92, 50, 90), cv1(0x82, 50, 0)]
            await wait_hook(page, f"p.received.filter(r => r[0] === {ray_index}).length === 2")
            heard = await hook(page, "received")
            assert [bytes(m) for i, m in heard if i == ray_index] == from_ray

            # The browser plays C4 from the computer keyboard.
            await page.keyboard.down("a")
            await page.keyboard.up("a")
            from_page = [note_on(0, 60, 100), note_off(0, 60, 64)]
            await wait_for(lambda: len(core.received) >= 4, 10, "Ana's note at the client")
            assert core.received[2:] == [cv1(0x90, 60, 100), cv1(0x80, 60, 64)]
            assert await peer.wait_midi(4 + 2) == from_m2 + from_page
            assert [bytes(m) for m in await hook(page, "sent")] == from_page
            assert errors.seen == []
    finally:
        if udp is not None:
            udp.close()
        await peer.close()
        await context.close()
