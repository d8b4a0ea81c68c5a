"""The ``midihub`` command and its subcommands.

Only ``serve`` and ``config check`` import the server side (the config, sockets, web
app), inside their command; the client commands talk to a hub's API through
``midihub.cli.client`` and end through ``midihub.cli.errors.hub_errors``. What only
one command needs (asyncio, rich, aiohttp) is imported in that command, so
``midihub panic`` starts in a fraction of the time ``serve`` takes to load.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from typing import TYPE_CHECKING

import click

from midihub import __version__
from midihub.cli.client import Hub, find_token, request
from midihub.cli.errors import hub_errors, inert
from midihub.cli.options import hub_options
from midihub.cli.record import record

if TYPE_CHECKING:
    from midihub.config import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="midihub")
def main() -> None:
    """midihub: an Internet MIDI hub for RTP MIDI (AppleMIDI) sessions."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="TOML file or legacy midiports JSON (default: ./midihub.toml, ./midiports).",
)
@click.option("--bind", help="Address to listen on (default 0.0.0.0; '::' for IPv6).")
@click.option(
    "--web",
    help="Dashboard and API address HOST:PORT (default [web] listen, else 127.0.0.1:8080).",
)
@click.option("--db", help="Latency history database file (default ./midihub.db; :memory:).")
@click.option(
    "--pid-file",
    type=click.Path(dir_okay=False),
    help="Write the hub's process id here while it runs (for kill -HUP); removed at exit.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
def serve(
    config_path: str | None,
    bind: str | None,
    web: str | None,
    db: str | None,
    pid_file: str | None,
    log_level: str,
) -> None:
    """Run the hub until Ctrl-C or SIGTERM; SIGHUP re-reads the configuration."""
    import asyncio
    import logging

    from midihub import config as config_module
    from midihub.app import App, DatabaseError, fast_loop
    from midihub.cli import pidfile
    from midihub.config import ConfigError
    from midihub.net import BindError
    from midihub.web.errors import WebError

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        config, path = config_module.load(config_path, bind)
        config.with_overrides(web=web, db=db)
    except ConfigError as error:
        _report(error)
        sys.exit(2)
    except ValueError as error:
        click.echo(f"--web: {error}", err=True)
        sys.exit(2)
    loop_name, new_loop = fast_loop()
    logging.getLogger("midihub").info(
        "midihub %s (%s event loop), pid %d, config: %s",
        __version__,
        loop_name,
        os.getpid(),
        path or "built-in defaults",
    )
    app = App(config, path, bind, web=web, db=db)
    try:
        with pidfile.pid_file(pid_file), asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(app.run())
    except (BindError, WebError, DatabaseError, pidfile.PidFileError) as error:
        hint = ""
        if getattr(error, "errno", None) == errno.EADDRINUSE:
            hint = (
                "; another program (another hub?) has it: choose another address with --web "
                'HOST:PORT or [web] listen (make run ARGS="--web 127.0.0.1:8081")'
                if isinstance(error, WebError)
                else "; another program (another hub?) has it: choose other ports in "
                "[groups] and [rooms] of the configuration, or another --bind address"
            )
        logging.getLogger("midihub").error("%s%s", error, hint)
        sys.exit(1)


@main.group("config")
def config_group() -> None:
    """Work with configuration files."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Report every problem in FILE (exit 1), or summarise it (exit 0)."""
    from midihub import config as config_module
    from midihub.config import ConfigError

    try:
        config, _ = config_module.load(file)
    except ConfigError as error:
        _report(error)
        sys.exit(1)
    click.echo(f"{file}: OK")
    for spec in config.endpoints():
        midi2 = "" if spec.midi2 is None else f"  (Network MIDI 2.0: {spec.midi2})"
        click.echo(f"  {spec.port}/{spec.port + 1}  {spec.label}{midi2}")
    fleet = config.fleet_spec()
    if fleet is not None:  # the URL without its password
        click.echo(f"  fleet: {fleet.name!r} at {fleet.address}, database {fleet.display}")


def _report(error: ConfigError) -> None:
    click.echo(f"{error.source}: {len(error.problems)} problem(s)", err=True)
    for problem in error.problems:
        click.echo(f"  {problem}", err=True)


@main.command()
@hub_options
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON for scripts.")
@click.option(
    "--fleet", "fleet", is_flag=True, help="Every hub of the fleet ([fleet]), from /api/fleet."
)
@click.option(
    "--token",
    help="Token, when the hub's pages are private (default $MIDIHUB_TOKEN, [web] token, "
    "./midihub.token).",
)
@hub_errors()
def status(hub: Hub, as_json: bool, fleet: bool, token: str | None) -> None:
    """Who is connected to the running hub, with latency and loss."""
    from midihub.cli.status import render_fleet, render_status  # rich

    secret = find_token(token, hub=hub)
    if fleet:
        document = request(hub, "/api/fleet", token=secret)
        if as_json:
            click.echo(json.dumps(document, indent=2))
            return
        render_fleet(document)
        return
    ports = request(hub, "/api/participants", token=secret)["ports"]
    rows = request(hub, "/api/latency", token=secret)
    if as_json:
        click.echo(json.dumps({"ports": ports, "latency": rows}, indent=2))
        return
    render_status(ports, rows)


@main.command()
@hub_options
@click.option("--port", "port", type=int, help="Hub port whose participants get the NoteOffs.")
@click.option(
    "--range",
    "note_range",
    default="All",
    show_default=True,
    type=click.Choice(["Low", "Mid", "High", "All"], case_sensitive=False),
    help="Low 0-42, Mid 43-85, High 86-127, All 0-127.",
)
@click.option("--channel", "channels", type=click.IntRange(1, 16), multiple=True)
@click.option("--participant", help="Only this participant (an id from `midihub status --json`).")
@click.option(
    "--token", help="Control token (default $MIDIHUB_TOKEN, [web] token, ./midihub.token)."
)
@click.option("--token-file", type=click.Path(dir_okay=False), help="File holding the token.")
@hub_errors(refused="panic refused: {message}", usage=(400,))
def panic(
    hub: Hub,
    port: int | None,
    note_range: str,
    channels: tuple[int, ...],
    participant: str | None,
    token: str | None,
    token_file: str | None,
) -> None:
    """All notes off: NoteOff for a range of notes on every channel, on a hub port."""
    if port is None and participant is None:
        raise click.UsageError("give --port (or --participant)")
    body: dict[str, object] = {"range": note_range.title()}
    if port is not None:
        body["port"] = port
    if channels:
        body["channels"] = sorted(set(channels))
    if participant:
        body["participant"] = participant
    result = request(hub, "/api/panic", body=body, token=find_token(token, token_file, hub))
    low, high = result["notes"]
    click.echo(
        inert(
            f"{result['range']} ({low}-{high}) notes off on port {result['port']}: "
            f"sent to {len(result['sentTo'])} participant(s)"
        )
    )


@main.command()
@hub_options
@click.argument("port")
@click.option("--plain", is_flag=True, help="One line per event, for piping; no screen.")
@click.option("--token", help="Token, when the hub's pages are private (web.public = false).")
@hub_errors()
def monitor(hub: Hub, port: str, plain: bool, token: str | None) -> None:
    """Watch what arrives on hub PORT (number, or group/room name): held notes per
    channel, pedals, bend and a log of other events. q or Ctrl-C quits."""
    import asyncio

    from midihub.cli.monitor import resolve_port, run  # aiohttp

    secret = find_token(token, hub=hub)
    headers = {"Authorization": f"Bearer {secret.value}"} if secret else {}
    ports = request(hub, "/api/participants", token=secret)["ports"]
    number = resolve_port(ports, port)  # its error text is made printable there
    url = f"{hub.url}/api/monitor?port={number}"
    asyncio.run(run(url, headers, plain=plain, out=sys.stdout))


main.add_command(record)
