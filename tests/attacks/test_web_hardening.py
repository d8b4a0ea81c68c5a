"""Web hardening against strangers on the open Internet: the Host check (DNS
rebinding), security headers, the token only in headers for control actions with
JSON bodies, and bad input answered 400 with no traceback (never a 500)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from midihub.web.guard import Guard, host_name
from tests.attacks.web_support import raw_request, web_hub
from tests.support import TOKEN, free_ports

ROOM = "[rooms]\nR = {port}"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


def refused(metrics: str, reason: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f'midihub_web_requests_refused_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no refused counter for {reason}:\n{metrics}")


async def metrics_text(base: str) -> str:
    async with aiohttp.ClientSession() as client, client.get(base + "/metrics") as response:
        assert response.status == 200
        return await response.text()


async def get_with_host(
    port: int, host: bytes, path: bytes = b"/api/participants"
) -> tuple[int, bytes]:
    """GET ``path`` with the Host header ``host``, sent as is: the status and the answer."""
    request = b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)
    return await raw_request(port, request)


async def test_every_response_carries_the_security_headers() -> None:
    (port,) = free_ports(1)
    async with web_hub(ROOM.format(port=port)) as (_, _, server):
        base = server.url.rstrip("/")
        async with aiohttp.ClientSession() as client:
            for method, path, status in (
                ("GET", "/", 200),
                ("GET", "/static/app.js", 200),
                ("GET", "/static/style.css", 200),
                ("GET", "/connect", 200),
                ("GET", "/api/health", 200),
                ("GET", "/metrics", 200),
                ("GET", "/nowhere", 404),
                ("GET", "/api/monitor?port=1", 400),
                ("POST", "/api/panic", 401),
            ):
                async with client.request(method, base + path) as response:
                    assert response.status == status, (path, response.status)
                    for name, value in HEADERS.items():
                        assert response.headers.get(name, "").startswith(value), (path, name)
        status, answer = await get_with_host(server.port, b"evil.example", b"/")
        assert status == 421 and b"X-Frame-Options: DENY" in answer


async def test_a_foreign_host_header_is_refused_and_counted() -> None:
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 reaches
    the hub with Host: evil.example; it must get nothing."""
    (port,) = free_ports(1)
    async with web_hub(ROOM.format(port=port), hosts=["hub.example.org"]) as (_, _, server):
        base = server.url.rstrip("/")
        before = refused(await metrics_text(base), "host")
        for host in (
            b"evil.example",
            b"evil.example:%d" % server.port,
            b"127.0.0.1.evil.example",
            b"hub.example.org.evil.example",
            b"",
            b"[::1",
            b"localhost:80:80",
        ):
            status, answer = await get_with_host(server.port, host)
            assert status == 421, (host, answer[:200])
            assert b"[web] hosts" in answer
            assert b"R" not in answer.split(b"\r\n\r\n", 1)[1].replace(b"[web]", b"")
        for host in (
            b"127.0.0.1:%d" % server.port,
            b"127.0.0.2",
            b"localhost:%d" % server.port,
            b"LOCALHOST.",
            b"[::1]:%d" % server.port,
            b"hub.example.org",
            b"Hub.Example.Org:443",
        ):
            status, answer = await get_with_host(server.port, host)
            assert status == 200, (host, answer[:300])
        assert refused(await metrics_text(base), "host") - before == 7


def test_a_specific_bind_address_is_a_name_of_its_own() -> None:
    """Bound to 0.0.0.0 the hub cannot know its public names: the admin lists them.
    Bound to one address, that address is allowed without configuration."""
    assert not Guard(bind="0.0.0.0").host_allowed("203.0.113.7:8080")
    assert Guard(bind="203.0.113.7").host_allowed("203.0.113.7:8080")
    assert Guard(bind="2001:db8::7").host_allowed("[2001:db8::7]:8080")
    assert Guard(bind="::", hosts=["203.0.113.7"]).host_allowed("203.0.113.7")
    assert not Guard(bind="::").host_allowed("[2001:db8::7]:8080")
    assert host_name("[::1]:8080") == "::1"
    assert host_name("exa mple") is None
    assert host_name("ex\x1bample") is None


async def test_control_actions_need_the_header_and_a_json_body() -> None:
    (port,) = free_ports(1)
    async with web_hub(ROOM.format(port=port)) as (_, _, server):
        base = server.url.rstrip("/")
        body = json.dumps({"port": port, "range": "Low"})
        async with aiohttp.ClientSession() as client:
            # The token in the URL (leaks into logs, history, Referer) is not enough.
            async with client.post(
                f"{base}/api/panic?token={TOKEN}",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response:
                assert response.status == 401
                assert "header" in (await response.json())["error"]
            auth = {"Authorization": f"Bearer {TOKEN}"}
            # What a cross-site form can send: no JSON content type.
            for content_type in ("application/x-www-form-urlencoded", "text/plain"):
                async with client.post(
                    base + "/api/panic",
                    data=body,
                    headers={**auth, "Content-Type": content_type},
                ) as response:
                    assert response.status == 415, content_type
                    assert "Content-Type: application/json" in (await response.json())["error"]
            async with client.post(base + "/api/reload", headers=auth) as response:
                assert response.status == 415
            async with client.post(
                base + "/api/panic",
                data=body,
                headers={"X-Midihub-Token": TOKEN, "Content-Type": "application/json"},
            ) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["port"] == port
            async with client.post(
                base + "/api/panic", json={"port": port}, headers=auth
            ) as response:
                assert response.status == 200


async def test_private_pages_take_the_url_token_only_on_the_monitor_stream() -> None:
    (port,) = free_ports(1)
    async with web_hub(ROOM.format(port=port), public=False) as (_, _, server):
        base = server.url.rstrip("/")
        async with aiohttp.ClientSession() as client:
            for path in ("/api/participants", "/api/latency", "/metrics"):
                async with client.get(f"{base}{path}?token={TOKEN}") as response:
                    assert response.status == 401, path
            async with client.get(f"{base}/api/monitor?port={port}&token={TOKEN}") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/event-stream")
        assert refused(await metrics_text_with_token(base), "token") >= 3


async def metrics_text_with_token(base: str) -> str:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as client,
        client.get(base + "/metrics", headers=headers) as response,
    ):
        return await response.text()


NASTY_GETS = [
    "/api/monitor?port=" + "9" * 5000,
    "/api/monitor?port=%C2%B2",  # "²": str.isdigit() says yes, int() says no
    "/api/monitor?port=%D9%A3",  # Arabic-Indic three
    "/api/monitor?port=%FF%FE",
    "/api/monitor?port=-2",
    "/api/latency/history?since=" + "9" * 5000,
    "/api/latency/history?since=" + "9" * 400 + "h",
    "/api/latency/history?since=nan",
    "/api/latency/history?since=1e999",
    "/api/latency/history?since=%00",
    "/api/latency/history?since=9999-99-99",
    "/api/latency/history?participant=" + "x" * 5000,
    "/api/latency/history?points=" + "9" * 5000,
    "/api/latency/history?points=%C2%B2",
    "/api/latency/history?points=0",
]
NASTY_BODIES: list[bytes] = [
    b"[" * 50_000,
    b'{"port": ' * 20_000,
    b"\xff\xfe{}",
    b'{"port": NaN}',
    b'{"port": Infinity}',
    b'{"port": "' + b"9" * 5000 + b'"}',
    b'{"port": 1e400}',
    b'{"port": "\xc2\xb2"}',
    b'{"participant": {"a": 1}}',
    b'{"participant": "' + b"x" * 5000 + b'"}',
    b'{"range": ["Low"]}',
    b'{"range": "' + b"L" * 5000 + b'"}',
    b'{"channels": "1-16"}',
    b'{"channels": [1e400]}',
    b"[]",
    b"",
    b"\x00",
]


async def test_bad_input_is_a_400_never_a_500_or_a_traceback() -> None:
    (port,) = free_ports(1)
    async with web_hub(ROOM.format(port=port)) as (_, _, server):
        base = server.url.rstrip("/")
        answers: list[tuple[str, int, Any]] = []
        async with aiohttp.ClientSession() as client:
            for path in NASTY_GETS:
                async with client.get(base + path) as response:
                    answers.append((path, response.status, await response.text()))
            auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            for body in NASTY_BODIES:
                async with client.post(base + "/api/panic", data=body, headers=auth) as response:
                    answers.append((repr(body[:30]), response.status, await response.text()))
            big = b'{"port": ' + b" " * 70_000 + b"1}"
            async with client.post(base + "/api/panic", data=big, headers=auth) as response:
                answers.append(("70 KB body", response.status, await response.text()))
        for what, status, text in answers:
            assert status in (400, 413), (what, status, text[:300])
            assert "Traceback" not in text and 'File "' not in text, what
            assert len(text) < 1000, (what, len(text))  # nothing echoed back at length
            if status == 400:
                assert json.loads(text)["error"], what
        metrics = await metrics_text(base)
        assert refused(metrics, "internal_error") == 0
        assert refused(metrics, "bad_request") >= len(NASTY_GETS) + len(NASTY_BODIES)


async def test_an_unexpected_error_is_a_generic_json_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    (port,) = free_ports(1)
    from midihub.web import Api, WebServer
    from tests.support import RunningHub, make_config

    with RunningHub(make_config(ROOM.format(port=port))) as running:
        api = Api(running.hub, token=TOKEN, hub_time=lambda: 0.0)
        app = api.application()

        async def broken(request: web.Request) -> web.Response:
            raise KeyError("secret internals /etc/midihub")

        app.router.add_get("/api/broken", broken)
        server = WebServer(app, "127.0.0.1", 0)
        await server.start()
        try:
            async with (
                aiohttp.ClientSession() as client,
                client.get(server.url + "api/broken") as response,
            ):
                assert response.status == 500
                text = await response.text()
                assert response.headers["X-Frame-Options"] == "DENY"
            assert json.loads(text) == {"error": "internal error; the hub's log has the details"}
            assert "secret" not in text and "Traceback" not in text
            assert "secret internals" in caplog.text  # the admin still sees what broke
            assert api.guard.counters.internal_error == 1
        finally:
            await api.aclose()
            await server.close()


async def test_recording_actions_take_the_same_strict_json_and_ports(tmp_path: Path) -> None:
    """The recordings API is a control API like panic: JSON bodies only, ports from
    ASCII digits, nothing echoed at length, never a 500."""
    from tests.record_support import recording_hub

    (port,) = free_ports(1)
    async with recording_hub(ROOM.format(port=port), tmp_path) as recorded:
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        cases: list[tuple[str, bytes, dict[str, str]]] = [
            ("/api/recordings", b'{"port": "' + b"9" * 5000 + b'"}', auth),
            ("/api/recordings", '{"port": "²"}'.encode(), auth),
            ("/api/recordings", b'{"port": 99999999999999999999}', auth),
            ("/api/recordings", b'{"port": ' * 20_000, auth),
            ("/api/recordings", b"[" * 50_000, auth),
            ("/api/recordings", b'{"port": 5}', {**auth, "Content-Type": "text/plain"}),
            ("/api/recordings/" + "x" * 5000 + "/stop", b"{}", auth),
            ("/api/recordings/" + "x" * 5000 + "/play", b'{"port": 5}', auth),
        ]
        async with aiohttp.ClientSession() as client:
            for path, body, headers in cases:
                async with client.post(recorded.url + path, data=body, headers=headers) as r:
                    text = await r.text()
                    assert r.status in (400, 404, 413, 415), (path[:40], body[:30], r.status)
                    assert "Traceback" not in text and len(text) < 1000, (path[:40], text[:200])
            async with client.get(recorded.url + "/api/recordings") as r:
                assert r.status == 200 and (await r.json()) is not None
