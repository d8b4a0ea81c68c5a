"""The ``midihub`` command."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from midihub import __version__
from midihub import config as config_module
from midihub.config import ConfigError
from midihub.net import BindError


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
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
def serve(config_path: str | None, bind: str | None, log_level: str) -> None:
    """Run the hub until Ctrl-C or SIGTERM; SIGHUP re-reads the configuration."""
    from midihub.app import App, install_fast_loop

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        config, path = config_module.load(config_path, bind)
    except ConfigError as error:
        _report(error)
        sys.exit(2)
    loop_name = install_fast_loop()
    logging.getLogger("midihub").info(
        "midihub %s (%s event loop), config: %s",
        __version__,
        loop_name,
        path or "built-in defaults",
    )
    app = App(config, path, bind)
    try:
        asyncio.run(app.run())
    except BindError as error:
        logging.getLogger("midihub").error("%s", error)
        sys.exit(1)


@main.group("config")
def config_group() -> None:
    """Work with configuration files."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Report every problem in FILE (exit 1), or summarise it (exit 0)."""
    try:
        config, _ = config_module.load(file)
    except ConfigError as error:
        _report(error)
        sys.exit(1)
    click.echo(f"{file}: OK")
    for spec in config.endpoints():
        click.echo(f"  {spec.port}/{spec.port + 1}  {spec.label}")


def _report(error: ConfigError) -> None:
    click.echo(f"{error.source}: {len(error.problems)} problem(s)", err=True)
    for problem in error.problems:
        click.echo(f"  {problem}", err=True)
