"""What a started hub has loaded: a feature's libraries come in when it is used, so an
idle hub with the web or Bonjour off does not carry them (docs/benchmarks.md, "Idle
memory"). Each case runs ``midihub serve`` through the command line in a fresh
interpreter, which lists ``sys.modules`` once the hub is ready and then stops it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import free_port_pair, free_tcp_port

# The command line as `midihub serve ARGS`, with one hook: once the app is ready, print
# what is loaded and stop it the way SIGTERM would (App.stop).
SERVE_AND_LIST_MODULES = """
import asyncio, json, sys
sys.argv = ["midihub", "serve", *json.loads(sys.argv[1])]
from midihub import app
run = app.App.run
async def run_then_list(self):
    task = asyncio.ensure_future(run(self))
    while not self.ready and not task.done():
        await asyncio.sleep(0.02)
    if self.ready:
        print("MODULES " + json.dumps(sorted(sys.modules)), flush=True)
        self.stop()
    await task
app.App.run = run_then_list
from midihub.cli import main
main()
"""
LIBRARIES = ("aiohttp", "prometheus_client", "zeroconf", "mido", "psycopg")
"""Libraries that only a feature needs: the web stack, Bonjour, SMF work in a child,
the fleet's PostgreSQL driver."""


def loaded_by_serve(config: str, tmp_path: Path) -> set[str]:
    """The top-level names of the modules ``midihub serve`` loaded by the time it was ready."""
    (tmp_path / "midihub.toml").write_text(config)
    args = ["--config", "midihub.toml", "--bind", "127.0.0.1", "--db", ":memory:"]
    done = subprocess.run(
        [sys.executable, "-c", SERVE_AND_LIST_MODULES, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    marker = done.stdout.rpartition("MODULES ")[2]
    return {name.split(".")[0] for name in json.loads(marker)} | set(json.loads(marker))


def test_a_hub_with_the_web_and_bonjour_off_loads_neither(tmp_path: Path) -> None:
    port = free_port_pair()
    loaded = loaded_by_serve(
        f'[web]\nlisten = ""\n[mdns]\nenabled = false\n[rooms]\nJam = {port}\n', tmp_path
    )
    assert "midihub.net" in loaded  # the hub did run
    assert sorted(loaded & set(LIBRARIES)) == []


def test_the_web_loads_its_stack_and_nothing_else(tmp_path: Path) -> None:
    """The same probe sees a feature's libraries once the feature is on."""
    port = free_port_pair()
    web = f"127.0.0.1:{free_tcp_port()}"
    loaded = loaded_by_serve(
        f'[web]\nlisten = "{web}"\n[mdns]\nenabled = false\n[rooms]\nJam = {port}\n', tmp_path
    )
    assert {"aiohttp", "prometheus_client"} <= loaded
    assert sorted(loaded & {"zeroconf", "mido"}) == []


def test_a_fleet_loads_its_driver(tmp_path: Path) -> None:
    """With [fleet] the driver loads (and the hub is ready even with no database there)."""
    port = free_port_pair()
    dead = f"postgresql://nobody@127.0.0.1:{free_tcp_port()}/fleet"
    loaded = loaded_by_serve(
        f'[web]\nlisten = ""\n[mdns]\nenabled = false\n[rooms]\nJam = {port}\n'
        f'[fleet]\ndatabase = "{dead}"\nname = "eu-1"\naddress = "127.0.0.1"\n',
        tmp_path,
    )
    assert {"psycopg", "midihub.fleet.store"} <= loaded
    assert sorted(loaded & {"aiohttp", "zeroconf", "mido"}) == []
