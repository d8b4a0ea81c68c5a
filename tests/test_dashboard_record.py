"""The dashboard's Recordings page in Debian's Chromium (Playwright): the record button
starts and stops a recording of a live port, the list shows it, and its download
link returns a Standard MIDI File that mido reads."""

from __future__ import annotations

import io
from pathlib import Path

import aiohttp
import mido
import pytest
from playwright.async_api import Browser, expect

from midihub.midi.messages import note_off, note_on
from tests.record_support import recording_hub
from tests.support import TOKEN, PyPeer, free_ports, wait_for
from tests.test_dashboard import browser, only_the_hub, open_page, shot

__all__ = ["browser"]  # the fixture, shared with the other dashboard tests

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


async def test_record_button_list_and_download(browser: Browser, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    async with recording_hub(f"[rooms]\nJam = {port}", tmp_path) as hub:
        alice = PyPeer("alice")
        try:
            await alice.connect(port)
            page, requested = await open_page(browser, hub.url)
            await page.fill("#token", TOKEN)
            await page.locator("#token").dispatch_event("change")
            await page.click("#tab-recordings")
            button = page.locator(f"button.record[data-port='{port}']")
            await expect(button).to_have_text("● Record")
            await expect(page.locator("#recordings-empty")).to_be_visible()

            await button.click()
            await expect(button).to_have_text("■ Stop")
            status = page.locator(f".rec-status[data-port='{port}']")
            await expect(status).to_contain_text("recording")
            await wait_for(lambda: len(hub.manager.active) == 1, 5, "the recording")
            alice.send(note_on(0, 60, 100))
            alice.send(note_off(0, 60))
            (recording,) = hub.manager.active.values()
            await wait_for(lambda: recording.messages == 2 and recording.size > 0, 5)
            await expect(status).to_contain_text("kB")  # running time and size on disk
            await expect(status).not_to_contain_text("· 0.0 kB")
            row = page.locator(f"#recordings-table tr[data-id='{recording.id}']")
            await expect(row).to_contain_text("alice")
            await shot(page, "recordings")

            await button.click()
            await expect(button).to_have_text("● Record")
            await expect(row).to_have_attribute("data-state", "done")
            link = row.locator("a.download")
            href = await link.get_attribute("href")
            assert href == f"/api/recordings/{recording.id}/file"
            async with (
                aiohttp.ClientSession() as client,
                client.get(hub.url + href) as response,
            ):
                assert response.status == 200
                assert response.headers["Content-Type"] == "audio/midi"
                data = await response.read()
            midi = mido.MidiFile(file=io.BytesIO(data), charset="utf-8")
            assert [t.name for t in midi.tracks[1:]] == ["alice"]
            assert [bytes(e.bin()) for e in midi.tracks[1] if not e.is_meta] == [
                note_on(0, 60, 100),
                note_off(0, 60),
            ]
            async with page.expect_download() as download_info:
                await link.click()
            download = await download_info.value
            assert download.suggested_filename == f"{recording.id}.mid"
            only_the_hub(requested, hub.url)
        finally:
            alice.close()
