"""The client commands as a separate program: they load no server code, and a hub that
is absent, refuses or answers nonsense ends them with one line and the right status.

Each command runs as the installed ``midihub`` (a subprocess), against a stranger's
HTTP server on 127.0.0.1 built per case, so stderr and the exit status are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from midihub.cli import client
from tests.support import free_ports, free_tcp_port, serve_to_the_end
from tests.test_cli_monitor import MIDIHUB, run_cli
from tests.test_layers import ALLOWED

# What `midihub serve` brings in (the app and what it imports, and their libraries); a
# client command must load none of it.
SERVER_MODULES = (
    "midihub.app",
    *sorted(ALLOWED["midihub.app"]),
    *("aiohttp", "prometheus_client", "pydantic", "sqlalchemy", "zeroconf"),
)
RUN_AND_LIST_MODULES = """
import json, sys
sys.argv = ["midihub", *json.loads(sys.argv[1])]
from midihub.cli import main
try:
    main()
finally:
    print("\\nMODULES " + json.dumps(sorted(sys.modules)))
"""


def loaded_by(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``midihub ARGS`` in a fresh interpreter; what it printed and the modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},  # no MIDIHUB_TOKEN, no ./midihub.token
    )
    marker = done.stdout.rpartition("\nMODULES ")[2]
    return done, set(json.loads(marker))


def server_side(modules: set[str]) -> list[str]:
    inside = tuple(name + "." for name in SERVER_MODULES)
    return sorted(m for m in modules if m in SERVER_MODULES or m.startswith(inside))


@pytest.mark.parametrize(
    "args",
    [
        ["panic", "--port", "5040"],
        ["status"],
        ["status", "--json"],
        ["record", "list"],
        ["record", "stop", "x1"],
        ["panic", "--help"],
    ],
)
def test_client_commands_load_no_server_code(args: list[str], tmp_path: Path) -> None:
    web = f"127.0.0.1:{free_tcp_port()}"  # nobody: the command goes all the way to the request
    done, modules = loaded_by([*args, "--web", web], tmp_path)
    if "--help" not in args:
        assert done.returncode == 1 and "no hub answers" in done.stderr, done.stderr
    assert "midihub.cli.client" in modules
    assert server_side(modules) == []


def test_monitor_loads_the_http_client_but_no_server_code(tmp_path: Path) -> None:
    done, modules = loaded_by(
        ["monitor", "5040", "--web", f"127.0.0.1:{free_tcp_port()}"], tmp_path
    )
    assert done.returncode == 1 and "no hub answers" in done.stderr, done.stderr
    assert server_side(modules - {m for m in modules if m.split(".")[0] == "aiohttp"}) == []


def test_config_check_is_seen_loading_the_config_code(tmp_path: Path) -> None:
    """The check above can fail: a command that does load server code is caught by it."""
    (tmp_path / "midihub.toml").write_text("[rooms]\nJam = 5004\n")
    done, modules = loaded_by(["config", "check", "midihub.toml"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert {"midihub.config", "pydantic"} <= set(server_side(modules))


def test_client_reads_the_token_file_the_server_writes() -> None:
    from midihub.app import TOKEN_FILE

    assert client.TOKEN_FILE == TOKEN_FILE


# -- a stranger at the hub's address ------------------------------------------------

Handler = Callable[[web.Request], web.StreamResponse]


def answering(body: object = None, status: int = 200, text: str | None = None) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if text is not None:
            return web.Response(text=text, status=status)
        return web.json_response(body, status=status)

    return handle


@asynccontextmanager
async def stranger(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """An HTTP server answering ``routes`` (any method); its HOST:PORT."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


PARTICIPANTS = {"ports": [{"port": 5004, "label": "Jam", "owner": "Jam", "role": "room"}]}
SSE_NOT_JSON = "event: snapshot\ndata: {not json\n\n"

# Refusals: the hub's reason, and 2 where the command asked for something wrong.
REFUSALS = [
    # (route, HTTP status, the hub's error, command, exit status, what stderr says)
    ("participants", 404, "who?", "status", 1, "the hub refused: who? (HTTP 404)"),
    ("panic", 400, "no port 1", "panic --port 1", 2, "panic refused: no port 1"),
    ("panic", 403, "bad token", "panic --port 5004", 1, "panic refused: bad token"),
    (
        "recordings/x1/stop",
        404,
        "no recording\x1b[2J x1",
        "record stop x1",
        2,
        "the hub refused: no recording\\x1b[2J x1 (HTTP 404)",
    ),
    ("recordings/x1/stop", 503, "down", "record stop x1", 1, "the hub refused: down (HTTP 503)"),
    ("participants", 403, "private", "monitor 5004", 1, "the hub refused: private (HTTP 403)"),
]


def refused(
    route: str, http: int, error: str, command: str, code: int, said: str
) -> tuple[dict[str, Handler], list[str], int, str]:
    """A case: the hub refuses ``command`` at ``/api/ROUTE`` with ``error``."""
    return {f"/api/{route}": answering({"error": error}, http)}, command.split(), code, said


CASES = [
    # (routes, command, exit status, what stderr says)
    ({"/api/participants": answering(text="<html>hi</html>")}, ["status"], 1, "is not JSON"),
    (
        {"/api/participants": answering({"ports": 5}), "/api/latency": answering([])},
        ["status"],
        1,
        "not what this midihub expects (TypeError",
    ),
    ({"/api/panic": answering({})}, ["panic", "--port", "5004"], 1, "expects (KeyError: 'notes')"),
    ({"/api/recordings": answering([])}, ["record", "list"], 1, "expects (TypeError"),
    (
        {
            "/api/participants": answering(PARTICIPANTS),
            "/api/monitor": answering(text=SSE_NOT_JSON),
        },
        ["monitor", "5004", "--plain"],
        1,
        "expects (JSONDecodeError",
    ),
    *(refused(*row) for row in REFUSALS),
]


@pytest.mark.asyncio(loop_factories=["asyncio"])
@pytest.mark.parametrize(("routes", "command", "code", "said"), CASES)
async def test_a_stranger_answering_ends_a_command_with_one_line(
    routes: dict[str, Handler], command: list[str], code: int, said: str
) -> None:
    async with stranger(routes) as address:
        status, out, err = await run_cli(*command, "--web", address)
    assert (status, said in one_line(err)) == (code, True), (status, out, err)


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_something_not_speaking_http_is_a_bad_answer() -> None:
    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(babble, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        status, _, err = await run_cli("status", "--web", f"127.0.0.1:{port}")
    assert status == 1 and "is not HTTP (BadStatusLine)" in one_line(err), err


def test_a_bad_address_is_one_line() -> None:
    done = subprocess.run(
        [MIDIHUB, "status", "--web", "127.0.0.1:abc"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1, done.stderr
    assert "no hub answers at http://127.0.0.1:abc (nonnumeric port" in one_line(done.stderr)


# -- where a client command finds its hub -------------------------------------------


async def run_in(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``midihub ARGS`` run in ``cwd`` with no MIDIHUB_WEB or MIDIHUB_TOKEN but ``env``'s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MIDIHUB_")}
    clean.update(env or {})
    process = await asyncio.create_subprocess_exec(
        MIDIHUB, *args, cwd=cwd, env=clean, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def seen_token(tokens: list[str | None]) -> dict[str, Handler]:
    """A hub with one room that keeps the bearer token each request brought."""

    def keeping(body: object) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            tokens.append(request.headers.get("Authorization"))
            return web.json_response(body)

        return handle

    return {"/api/participants": keeping(PARTICIPANTS), "/api/latency": keeping([])}


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_client_command_finds_the_hub_of_the_configuration_here(tmp_path: Path) -> None:
    tokens: list[str | None] = []
    async with stranger(seen_token(tokens)) as address:
        port = address.rpartition(":")[2]
        # What `midihub serve` here would listen on: any address means this machine too.
        (tmp_path / "midihub.toml").write_text(
            f'[web]\nlisten = "0.0.0.0:{port}"\ntoken = "from-the-config"\n'
        )
        status, out, err = await run_in(tmp_path, "status", "--json")
        assert status == 0, err
        assert json.loads(out)["ports"] == PARTICIPANTS["ports"]
        assert tokens == ["Bearer from-the-config"] * 2
        # --config names another file, in another directory.
        elsewhere = tmp_path / "etc"
        elsewhere.mkdir()
        (elsewhere / "hub.toml").write_text(f'[web]\nlisten = "127.0.0.1:{port}"\n')
        status, _, err = await run_in(elsewhere, "status", "--json", "--config", "hub.toml")
        assert status == 0, err


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_web_then_the_environment_then_the_config_then_the_default(tmp_path: Path) -> None:
    nobody = [f"127.0.0.1:{free_tcp_port()}" for _ in range(3)]
    (tmp_path / "midihub.toml").write_text(f'[web]\nlisten = "{nobody[2]}"\n')
    env = {"MIDIHUB_WEB": nobody[1]}
    said = [
        (("--web", nobody[0]), env, f"{nobody[0]} (", "the address from --web;"),
        ((), env, f"{nobody[1]} (", "the address from MIDIHUB_WEB;"),
        ((), None, f"{nobody[2]} (", "the address from [web] listen in midihub.toml;"),
    ]
    for args, environment, where, origin in said:
        status, _, err = await run_in(tmp_path, "panic", "--port", "5004", *args, env=environment)
        assert status == 1 and where in one_line(err) and origin in err, err
    (tmp_path / "midihub.toml").unlink()
    if not tcp_port_free(8080):  # another hub (or a test's) answers there: nothing to show
        print("127.0.0.1:8080 is taken on this machine: the default's message is not checked")
        return
    _, _, err = await run_in(tmp_path, "record", "list")
    assert "at http://127.0.0.1:8080 (" in err and "from the default (no --web" in err, err


def tcp_port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.asyncio(loop_factories=["asyncio"])
@pytest.mark.parametrize(
    ("config", "said"),
    [
        ('[web]\nlisten = ""\n', 'the hub\'s web port is off ([web] listen = "")'),
        ("[web\nlisten = 1\n", "midihub.toml: TOML syntax: "),
        ("[web]\nlisten = 8080\n", "[web] listen must be HOST:PORT, not 8080"),
    ],
)
async def test_a_config_that_names_no_address_says_so(
    tmp_path: Path, config: str, said: str
) -> None:
    (tmp_path / "midihub.toml").write_text(config)
    status, _, err = await run_in(tmp_path, "status")
    assert status == 1 and said in one_line(err), err


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_busy_web_port_names_the_option_to_choose_another(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        (room,) = free_ports(1)
        (tmp_path / "midihub.toml").write_text(f"[rooms]\nJam = {room}\n")
        code, log = await serve_to_the_end(
            "--web", taken, "--bind", "127.0.0.1", cwd=tmp_path, timeout=15
        )
    assert code == 1, log
    assert f"cannot open the web port {taken}" in log and "--web HOST:PORT" in log, log


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_legacy_midiports_config_names_no_address(tmp_path: Path) -> None:
    (tmp_path / "midiports").write_text('{"GroupOne": [5040, 5042]}')
    _, _, err = await run_in(tmp_path, "status", "--config", "midiports")
    assert (
        "at http://127.0.0.1:8080 (" in one_line(err)
        and "the default (midiports sets no [web] listen)" in err
    )


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_refused_token_says_where_it_came_from(tmp_path: Path) -> None:
    """A stale ./midihub.token (a hub started here before) is named, not just "wrong"."""
    routes = {"/api/panic": answering({"error": "wrong token: control actions need"}, 401)}
    async with stranger(routes) as address:
        args = ("panic", "--port", "5004", "--web", address)
        _, _, err = await run_in(tmp_path, *args)
        assert "; give the hub's token with --token, $MIDIHUB_TOKEN or [web] token" in err
        (tmp_path / "midihub.token").write_text("stale\n")
        status, _, err = await run_in(tmp_path, *args)
        assert status == 1 and one_line(err) == (
            "panic refused: wrong token: control actions need "
            "(the token sent came from midihub.token)\n"
        )
        _, _, err = await run_in(tmp_path, *args, env={"MIDIHUB_TOKEN": "x"})
        assert err.endswith("(the token sent came from MIDIHUB_TOKEN)\n"), err
