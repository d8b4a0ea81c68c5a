"""HTTPS with aiohttp's own TLS: Chromium loads the dashboard over TLS trusting
exactly one throwaway certificate (by its key's SPKI hash, not by ignoring errors),
and a renewed certificate is served after SIGHUP without a restart."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.attacks.web_support import make_certificate, serial_of, spki_hash, web_hub
from tests.ports import free_tcp_port
from tests.support import free_ports, wait_for
from tests.test_dashboard import CHROMIUM, FLAGS
from tests.test_serve import Served


@pytest.mark.browser
@pytest.mark.timeout(180)
async def test_chromium_loads_the_dashboard_over_tls_trusting_that_certificate(
    tmp_path: Path,
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    (port,) = free_ports(1)
    cert, key = make_certificate(tmp_path, serial=4242)
    async with (
        web_hub(f"[rooms]\nJam = {port}", tls=(cert, key)) as (_, _, server),
        async_playwright() as playwright,
    ):
        assert server.url.startswith("https://127.0.0.1:")
        # Without trusting the certificate, Chromium refuses it: the test below is
        # not passing because certificate errors are ignored.
        plain = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await plain.new_page()
            with pytest.raises(Exception, match="ERR_CERT"):
                await page.goto(server.url)
        finally:
            await plain.close()

        trusting = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*FLAGS, f"--ignore-certificate-errors-spki-list={spki_hash(cert)}"],
        )
        try:
            page = await trusting.new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            response = await page.goto(server.url)
            assert response is not None and response.status == 200
            headers = await response.all_headers()
            assert headers["content-security-policy"].startswith("default-src 'self'")
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"
            card = page.locator(f".card.port[data-port='{port}']")
            await expect(card).to_contain_text("Jam")  # app.js ran, the API answered
            await page.click("#tab-monitor")
            await expect(page.locator("#monitor-who")).to_contain_text("no one connected")
            # The dashboard works under default-src 'self': no inline script or style.
            assert not [text for text in console if "Content Security Policy" in text], console
        finally:
            await trusting.close()


def served_serial(port: int) -> int:
    """The serial number of the certificate a new TLS connection is given."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(der)


async def test_sighup_serves_a_renewed_certificate_and_says_web_changes_need_a_restart(
    tmp_path: Path,
) -> None:
    port_in, port_out = free_ports(2)
    web_port = free_tcp_port()
    cert, key = make_certificate(tmp_path, serial=1001)
    config = tmp_path / "midihub.toml"
    text = (
        f"[groups]\nBand = [{port_in}, {port_out}]\n"
        f'[web]\nlisten = "127.0.0.1:{web_port}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
    )
    config.write_text(text)
    served = await Served.start(
        "--config", str(config), "--db", ":memory:", cwd=tmp_path, own_web_port=False
    )
    try:
        await served.has(f"dashboard and API on https://127.0.0.1:{web_port}/")
        assert await asyncio.to_thread(served_serial, web_port) == 1001

        make_certificate(tmp_path, serial=2002)  # renewed in place, as an ACME client does
        served.proc.send_signal(signal.SIGHUP)
        await served.has("TLS certificate")
        assert await asyncio.to_thread(served_serial, web_port) == 2002
        assert "restart" not in served.log()  # nothing else changed

        # A broken renewal keeps the working certificate.
        key.write_text("not a key\n")
        served.proc.send_signal(signal.SIGHUP)
        await served.has("the previous certificate stays in use")
        assert await asyncio.to_thread(served_serial, web_port) == 2002

        config.write_text(
            text.replace("[web]\n", "[web]\nhosts = ['hub.example.org']\n")
            + "[stats]\nretention_days = 3\n"
        )
        served.proc.send_signal(signal.SIGHUP)
        await served.has(
            "reload: [web] changed; those settings take effect only after a restart: hosts"
        )
        await wait_for(lambda: served.log().count("configuration reloaded") == 3, 10)
        assert "[stats]" not in served.log()  # its retention applies live
        await wait_for(lambda: served.proc.returncode is None, 1)
    finally:
        await served.stop()
