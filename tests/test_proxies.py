"""Behind a reverse proxy: the client address comes from X-Forwarded-For / Forwarded only
when the connection is a trusted proxy's, read from the right; per-address limits and the
participant list use it (real hubs on 127.0.0.1, browsers over aiohttp's WebSocket); the
README's nginx and Caddy examples carry what /play needs."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from multidict import CIMultiDict, CIMultiDictProxy

from midihub import config as c
from midihub.app import App
from midihub.cli import main
from midihub.config import parse, parse_listen, proxy_network
from midihub.web.proxies import client_address, forwarded_for
from tests.support import free_ports, free_tcp_port, serving, wait_for
from tests.test_play import Inbox, room

ROOT = Path(__file__).resolve().parents[1]
PROXIES = (proxy_network("127.0.0.1"), proxy_network("10.0.0.0/8"), proxy_network("fd00::/8"))
PROXY = ("127.0.0.1", 40000)


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def from_proxy(*pairs: tuple[str, str], peer: tuple[str, int] = PROXY) -> tuple[str, int]:
    return client_address(peer, headers(*pairs), PROXIES)


# -- reading the headers ---------------------------------------------------------------


def test_x_forwarded_for_is_read_from_the_right_past_trusted_proxies() -> None:
    assert from_proxy(("X-Forwarded-For", "203.0.113.7")) == ("203.0.113.7", 0)
    # A client's own X-Forwarded-For stays left of what the proxy appended.
    assert from_proxy(("X-Forwarded-For", "198.51.100.1, 203.0.113.7")) == ("203.0.113.7", 0)
    assert from_proxy(("X-Forwarded-For", "198.51.100.1, 203.0.113.7, 10.1.2.3")) == (
        "203.0.113.7",
        0,
    )
    # Several lines are one list, in order.
    assert from_proxy(("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.7")) == (
        "203.0.113.7",
        0,
    )
    # Ports and IPv6, bracketed or not; IPv4-mapped IPv6 is the IPv4 address.
    assert from_proxy(("X-Forwarded-For", "203.0.113.7:4711")) == ("203.0.113.7", 4711)
    assert from_proxy(("X-Forwarded-For", "[2001:db8::1]:80")) == ("2001:db8::1", 80)
    assert from_proxy(("X-Forwarded-For", "2001:db8::1")) == ("2001:db8::1", 0)
    assert from_proxy(("X-Forwarded-For", "::ffff:203.0.113.7")) == ("203.0.113.7", 0)
    # Every hop a trusted proxy (a request made on the proxy's host): the leftmost.
    assert from_proxy(("X-Forwarded-For", "10.0.0.9, 127.0.0.1")) == ("10.0.0.9", 0)


def test_forwarded_is_read_as_rfc_7239_says() -> None:
    assert from_proxy(("Forwarded", 'for="[2001:db8:cafe::17]:4711"')) == (
        "2001:db8:cafe::17",
        4711,
    )
    assert from_proxy(("Forwarded", "For=192.0.2.60;proto=http;by=203.0.113.43")) == (
        "192.0.2.60",
        0,
    )
    assert from_proxy(("Forwarded", "for=198.51.100.1, for=192.0.2.43 ; proto=https")) == (
        "192.0.2.43",
        0,
    )
    assert from_proxy(("Forwarded", 'for=192.0.2.43, for="[fd00::5]"')) == ("192.0.2.43", 0)
    assert forwarded_for(['for=a;by=b , for="x\\"y"']) == ["a", 'x"y']
    assert forwarded_for(["proto=https, for=a"]) == ["", "a"]


@pytest.mark.parametrize(
    "pairs",
    [
        (),  # nothing forwarded
        (("X-Forwarded-For", ""),),
        (("X-Forwarded-For", "hub.example.org"),),
        (("X-Forwarded-For", "203.0.113.7, unknown"),),  # the hop in the way is unknown
        (("X-Forwarded-For", "203.0.113.7:port"),),
        (("X-Forwarded-For", "203.0.113.7:70000"),),
        (("X-Forwarded-For", "203.0.113.7:\u0661\u0662"),),  # digits, but not ASCII ones
        (("X-Forwarded-For", "fe80::1%\x1b[31m"),),  # a zone is the sender's free text
        (("Forwarded", 'for="[fe80::1%eth0]:80"'),),
        (("X-Forwarded-For", ", ".join(["10.0.0.1"] * 40)),),  # too many hops
        (("Forwarded", "for=unknown"),),
        (("Forwarded", "for=_hidden"),),
        (("Forwarded", "proto=https"),),  # no for=
        (("Forwarded", "for=203.0.113.7 garbage"),),
        (("Forwarded", 'for="[2001:db8::1"'),),
        # The two headers name different clients: one was the client's, passed through.
        (("Forwarded", "for=198.51.100.1"), ("X-Forwarded-For", "203.0.113.7")),
    ],
)
def test_a_header_a_trusted_proxy_sent_that_cannot_be_read_gives_the_proxy(
    pairs: Sequence[tuple[str, str]],
) -> None:
    assert from_proxy(*pairs) == PROXY


def test_headers_from_anyone_else_are_ignored() -> None:
    for peer in (("203.0.113.9", 5000), ("127.0.0.2", 5000), ("11.0.0.1", 1), ("fe00::1", 1)):
        assert from_proxy(("X-Forwarded-For", "198.51.100.1"), peer=peer) == peer
        assert from_proxy(("Forwarded", "for=198.51.100.1"), peer=peer) == peer
    assert client_address(PROXY, headers(("X-Forwarded-For", "198.51.100.1")), ()) == PROXY
    # The proxy's own address may come IPv4-mapped (a hub listening on ::).
    assert from_proxy(("X-Forwarded-For", "203.0.113.7"), peer=("::ffff:10.0.0.2", 1)) == (
        "203.0.113.7",
        0,
    )


def test_trusted_proxies_setting_is_checked(tmp_path: Path) -> None:
    config = parse('[web]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8", "[::1]", "fd00::/8"]\n')
    assert config.web.trusted_proxies == ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"]
    bad = tmp_path / "midihub.toml"
    bad.write_text('[web]\ntrusted_proxies = ["10.0.0.1/8", "10.0.0.0/33"]\n')
    result = CliRunner().invoke(main, ["config", "check", str(bad)])
    assert result.exit_code == 1
    assert (
        "web.trusted_proxies: '10.0.0.1/8' has bits set past its prefix length; did you "
        "mean 10.0.0.0/8?" in result.output
    )
    bad.write_text('[web]\ntrusted_proxies = ["proxy.example.org"]\n')
    result = CliRunner().invoke(main, ["config", "check", str(bad)])
    assert result.exit_code == 1
    assert "'proxy.example.org' is not an IP address or network" in result.output


# -- a hub behind a proxy -------------------------------------------------------------


@asynccontextmanager
async def session_from(source: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client whose connections come from ``source`` (any 127/8 address)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def join(
    session: aiohttp.ClientSession, url: str, port: int, name: str, **forwarded: str
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """A browser joining ``port``, with the headers a proxy would add (``xff``,
    ``forwarded``)."""
    sent = {}
    if "xff" in forwarded:
        sent["X-Forwarded-For"] = forwarded["xff"]
    if "forwarded" in forwarded:
        sent["Forwarded"] = forwarded["forwarded"]
    ws = await session.ws_connect(url + "/api/play/ws", origin=url, headers=sent)
    await ws.send_str(json.dumps({"type": "hello", "name": name, "port": port}))
    reply = await ws.receive(timeout=10)
    assert reply.type == aiohttp.WSMsgType.TEXT, reply
    return ws, json.loads(reply.data)


async def addresses(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """Browser name -> address, as ``/api/participants`` lists them."""
    async with session.get(url + "/api/participants") as response:
        document = await response.json()
    return {
        row["name"]: row["address"]
        for port in document["ports"]
        for row in port["participants"]
        if row["transport"] == "browser"
    }


async def refused_per_ip(session: aiohttp.ClientSession, url: str, **forwarded: str) -> None:
    sent = {"X-Forwarded-For": forwarded["xff"]} if "xff" in forwarded else {}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(url + "/api/play/ws", origin=url, headers=sent)
    assert refused.value.status == 429


async def test_behind_a_trusted_proxy_each_browser_counts_by_its_own_address() -> None:
    (port,) = free_ports(1)
    config = room(port) + '[web]\nbrowser_per_ip = 2\ntrusted_proxies = ["127.0.0.1"]\n'
    inboxes: list[Inbox] = []
    async with serving(config) as (_, url), aiohttp.ClientSession() as session:
        try:
            # Five browsers through the proxy, more than browser_per_ip, each its own.
            for n in range(5):
                ws, welcome = await join(session, url, port, f"b{n}", xff=f"203.0.113.{n + 1}")
                assert welcome["type"] == "welcome", welcome
                inboxes.append(Inbox(ws))
            # A forged chain names the forger, by the hop the proxy appended; and a
            # Forwarded header (RFC 7239, IPv6 with a port) is read the same way.
            ws, welcome = await join(session, url, port, "forger", xff="198.51.100.1, 203.0.113.50")
            assert welcome["type"] == "welcome", welcome
            inboxes.append(Inbox(ws))
            ws, welcome = await join(
                session, url, port, "v6", forwarded='for="[2001:db8::7]:4711";proto=https'
            )
            assert welcome["type"] == "welcome", welcome
            inboxes.append(Inbox(ws))
            seen = await addresses(session, url)
            assert seen == {
                **{f"b{n}": f"203.0.113.{n + 1}:0" for n in range(5)},
                "forger": "203.0.113.50:0",
                "v6": "[2001:db8::7]:4711",
            }
            # The per-address cap still holds, per forwarded address.
            ws, welcome = await join(session, url, port, "b0 again", xff="203.0.113.1")
            inboxes.append(Inbox(ws))
            await refused_per_ip(session, url, xff="198.51.100.9, 203.0.113.1")
            # A connection that is not the proxy's is its own client, whatever it says.
            async with session_from("127.0.0.3") as direct:
                ws, welcome = await join(direct, url, port, "direct", xff="203.0.113.99")
                assert welcome["type"] == "welcome", welcome
                inboxes.append(Inbox(ws))
                assert (await addresses(session, url))["direct"].startswith("127.0.0.3:")
        finally:
            for inbox in inboxes:
                await inbox.close()


async def test_without_trusted_proxies_forwarded_headers_are_ignored() -> None:
    (port,) = free_ports(1)
    config = room(port) + "[web]\nbrowser_per_ip = 2\n"
    inboxes: list[Inbox] = []
    async with serving(config) as (_, url), aiohttp.ClientSession() as session:
        try:
            for n in range(2):
                ws, welcome = await join(session, url, port, f"b{n}", xff=f"203.0.113.{n + 1}")
                assert welcome["type"] == "welcome", welcome
                inboxes.append(Inbox(ws))
            await refused_per_ip(session, url, xff="203.0.113.3")
            seen = await addresses(session, url)
            assert set(seen) == {"b0", "b1"}
            assert all(address.startswith("127.0.0.1:") for address in seen.values()), seen
        finally:
            for inbox in inboxes:
                await inbox.close()


async def test_monitor_and_dashboard_streams_count_by_the_forwarded_address() -> None:
    """Both allow 8 streams per address: ten through the proxy, from ten clients, pass."""
    (port,) = free_ports(1)
    config = f'[rooms]\nR = {port}\n[web]\ntrusted_proxies = ["127.0.0.0/8"]\n'
    async with serving(config) as (_, url), aiohttp.ClientSession() as session:
        streams: list[aiohttp.ClientResponse] = []
        try:
            for n in range(10):
                for path in (f"/api/monitor?port={port}", "/api/events"):
                    response = await session.get(
                        url + path, headers={"X-Forwarded-For": f"203.0.113.{n + 1}"}
                    )
                    streams.append(response)
                    assert response.status == 200, (path, n, await response.text())
        finally:
            for response in streams:
                response.close()


async def test_trusted_proxies_reload_live_for_requests_and_the_gate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "midihub")
    file = tmp_path / "midihub.toml"
    (port,) = free_ports(1)
    web = free_tcp_port()
    base = (
        f"[mdns]\nenabled = false\n[rooms.Jam]\nport = {port}\nbrowser = true\n"
        f"[web]\nlisten = '127.0.0.1:{web}'\nconnections_per_ip = 2\n"
    )
    file.write_text(base)
    config, _ = c.load(file, "127.0.0.1")
    app = App(config, file, "127.0.0.1", db=":memory:")
    running = asyncio.create_task(app.run())
    url = f"http://127.0.0.1:{web}"
    inboxes: list[Inbox] = []
    try:
        await wait_for(lambda: app.web is not None, 10, "the web port")
        assert app.web is not None
        gate = app.web.gate
        async with aiohttp.ClientSession() as session:
            ws, _ = await join(session, url, port, "before", xff="203.0.113.1")
            inboxes.append(Inbox(ws))
            assert (await addresses(session, url))["before"].startswith("127.0.0.1:")
            file.write_text(base + 'trusted_proxies = ["127.0.0.1"]\n')
            assert app.reload() is None
            ws, _ = await join(session, url, port, "after", xff="203.0.113.2")
            inboxes.append(Inbox(ws))
            seen = await addresses(session, url)
            assert seen["after"] == "203.0.113.2:0"
            assert seen["before"].startswith("127.0.0.1:")  # keeps what it came in with
            assert f"Jam :{port}: 'after' from 203.0.113.2:0 joined" in caplog.text
            # The proxy's connections are exempt from connections_per_ip (2).
            for n in range(3):
                ws, welcome = await join(session, url, port, f"more{n}", xff=f"192.0.2.{n}")
                assert welcome["type"] == "welcome", welcome
                inboxes.append(Inbox(ws))
            assert gate.sources.of("127.0.0.1") >= 5
            assert gate.counters.refused_per_source == 0
            for inbox in inboxes:
                await inbox.close()
    finally:
        app.stop()
        await asyncio.wait_for(running, 15)


# -- the README's examples ----------------------------------------------------------------


def proxy_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("**Behind a reverse proxy.**")
    return readme[start : readme.index("\n### ", start)]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)


def nginx_blocks(text: str) -> dict[str, Any]:
    """nginx's configuration syntax as nested dicts: ``{"directive args": [..]}`` for
    simple directives (their arguments, each occurrence), blocks as ``{"name args":
    {...}}``. Comments are dropped; quotes are kept off the arguments."""
    tokens = re.findall(r"""#[^\n]*|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[{};]|[^\s{};"'#]+""", text)
    stack: list[dict[str, Any]] = [{}]
    words: list[str] = []
    for token in tokens:
        if token.startswith("#"):
            continue
        if token == "{":
            block: dict[str, Any] = {}
            stack[-1][" ".join(words)] = block
            stack.append(block)
            words = []
        elif token == "}":
            assert not words, f"unterminated directive {words}"
            stack.pop()
        elif token == ";":
            stack[-1].setdefault(words[0], []).append(words[1:])
            words = []
        else:
            words.append(token[1:-1] if token[0] in "\"'" else token)
    assert len(stack) == 1 and not words, "unbalanced braces"
    return stack[0]


def readme_hub() -> tuple[str, int]:
    """Where the README's proxies send requests: the hub's default web address, which
    the README tells the admin to keep."""
    section = proxy_section()
    listen = re.search(r'`listen = "([^"]+)"`', section)
    assert listen is not None
    assert listen.group(1) == c.WebConfig().listen
    return parse_listen(listen.group(1))


def test_readme_nginx_example_passes_websockets_and_the_client_address() -> None:
    (block,) = fenced(proxy_section(), "nginx")
    parsed = nginx_blocks(block)
    # The map that turns an upgrade request's Upgrade into Connection: upgrade.
    (map_name,) = [name for name in parsed if name.startswith("map ")]
    assert map_name.split() == ["map", "$http_upgrade", "$connection_upgrade"]
    assert parsed[map_name] == {"default": [["upgrade"]], "": [["close"]]}
    server = parsed["server"]
    location = server["location /"]
    host, port = readme_hub()
    assert location["proxy_pass"] == [[f"http://{host}:{port}"]]
    assert location["proxy_http_version"] == [["1.1"]]
    set_headers = {name.lower(): value for name, value in location["proxy_set_header"]}
    assert set_headers["upgrade"] == "$http_upgrade"
    assert set_headers["connection"] in ("upgrade", "$connection_upgrade")
    assert set_headers["host"] == "$host"
    assert set_headers["x-forwarded-for"] == "$proxy_add_x_forwarded_for"
    assert location["proxy_buffering"] == [["off"]]  # the monitor's stream flows
    # nginx cuts a connection quiet for 60 s by default; a monitor may be.
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = location[timeout]
        assert re.fullmatch(r"\d+[hm]", value[0]), (timeout, value)
    assert server["server_name"] == [["hub.example.org"]]


def test_readme_caddy_example_proxies_to_the_hub() -> None:
    # Caddy's reverse_proxy passes Host and WebSocket upgrades and sets X-Forwarded-For
    # by default, so the block needs nothing but the hub's address.
    (block,) = fenced(proxy_section(), "caddy")
    host, port = readme_hub()
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    assert lines == ["hub.example.org {", f"reverse_proxy {host}:{port}", "}"]


def test_readme_trusted_proxies_example_trusts_where_the_proxy_connects_from() -> None:
    (block,) = fenced(proxy_section(), "toml")
    config = parse(block)
    host, _ = readme_hub()
    assert "hub.example.org" in config.web.hosts
    proxy = ipaddress.ip_address(host)  # the proxy connects to the hub from there
    assert any(proxy in network for network in config.web.proxy_networks)
    # The every-option block names the setting too.
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^# trusted_proxies = \[", readme, re.M)
