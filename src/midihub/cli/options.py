"""What every client command is told about its hub: where it is (``--web``,
``--config``), resolved by :func:`midihub.cli.client.find_hub` in one place."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from midihub.cli.client import Hub, HubConfigError, find_hub


def hub_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds ``--web`` and ``--config`` and hands the command ``hub``, a :class:`Hub`."""

    @click.option(
        "--web",
        help="The hub's web address HOST:PORT (default $MIDIHUB_WEB, else [web] listen "
        "in ./midihub.toml or --config, else 127.0.0.1:8080).",
    )
    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="The hub's configuration, for its address and token (default ./midihub.toml).",
    )
    @functools.wraps(command)
    def with_hub(*args: Any, web: str | None, config_path: str | None, **kwargs: Any) -> Any:
        try:
            hub: Hub = find_hub(web, config_path)
        except HubConfigError as error:
            raise click.ClickException(str(error)) from None
        return command(*args, hub=hub, **kwargs)

    return with_hub
