"""``midihub record …``: start, stop, list, download, replay and delete recordings of
a running hub through its API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from midihub.cli.client import Hub, find_token, request
from midihub.cli.errors import hub_errors
from midihub.cli.options import hub_options

_token = click.option(
    "--token", help="Control token (default $MIDIHUB_TOKEN, [web] token, ./midihub.token)."
)
# No such recording, or one in the wrong state for the request, is the caller's mistake.
_errors = hub_errors(usage=(400, 404, 409))


def _call(hub: Hub, path: str, token: str | None = None, **options: Any) -> Any:
    """One API request; the long timeout covers a stop writing its SMF."""
    return request(hub, path, token=find_token(token, hub=hub), timeout=35.0, **options)


def _size(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 1_000_000 else f"{size / 1000:.1f} kB"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _line(row: dict[str, Any]) -> str:
    players = ", ".join(row["players"]) or "-"
    state = "" if row["state"] == "done" else f"  [{row['state']}]"
    error = f"  {row['error']}" if row.get("error") else ""
    return (
        f"{row['id']}  port {row['port']} {row['label']}  {row['start']}  "
        f"{_duration(row['duration'])}  {_size(row['size'])}  {players}{state}{error}"
    )


@click.group("record")
def record() -> None:
    """Record jams as Standard MIDI Files, list, download and replay them."""


@record.command("start")
@hub_options
@_token
@click.argument("port", type=int)
@_errors
def start(hub: Hub, token: str | None, port: int) -> None:
    """Start recording the room or group of hub PORT; prints the recording's id."""
    row = _call(hub, "/api/recordings", token, body={"port": port})
    click.echo(f"recording {row['id']} started on port {row['port']} ({row['label']})")


@record.command("stop")
@hub_options
@_token
@click.argument("recording_id")
@_errors
def stop(hub: Hub, token: str | None, recording_id: str) -> None:
    """Stop a recording; its SMF is written before this returns."""
    row = _call(hub, f"/api/recordings/{recording_id}/stop", token, body={})
    click.echo(f"stopped {_line(row)}")
    click.echo(f"download it with `midihub record get {row['id']}`")


@record.command("list")
@hub_options
@click.option("--token", help="Token, when the hub's pages are private.")
@_errors
def list_(hub: Hub, token: str | None) -> None:
    """Recordings, newest first: id, port, start (UTC), duration, size, players."""
    rows = _call(hub, "/api/recordings", token)["recordings"]
    if not rows:
        click.echo("no recordings")
    for row in rows:
        click.echo(_line(row))


@record.command("get")
@hub_options
@click.option("--token", help="Token, when the hub's pages are private.")
@click.argument("recording_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default: ID.mid")
@_errors
def get(hub: Hub, token: str | None, recording_id: str, output: str | None) -> None:
    """Download a recording's Standard MIDI File."""
    data = _call(hub, f"/api/recordings/{recording_id}/file", token, raw=True)
    target = Path(output or f"{recording_id}.mid")
    target.write_bytes(data)
    click.echo(f"{target}: {len(data)} bytes")


@record.command("play")
@hub_options
@_token
@click.argument("recording_id")
@click.argument("port", type=int)
@_errors
def play(hub: Hub, token: str | None, recording_id: str, port: int) -> None:
    """Replay a recording into hub PORT as a participant named after it."""
    row = _call(hub, f"/api/recordings/{recording_id}/play", token, body={"port": port})
    click.echo(
        f"replay {row['id']} of {row['recording']} playing into port {row['port']} "
        f"({_duration(row['duration'])}); stop it with `midihub record stop-replay {row['id']}`"
    )


@record.command("stop-replay")
@hub_options
@_token
@click.argument("replay_id")
@_errors
def stop_replay(hub: Hub, token: str | None, replay_id: str) -> None:
    """Stop a replay; what it holds is released."""
    row = _call(hub, f"/api/replays/{replay_id}/stop", token, body={})
    click.echo(f"replay {row['id']} of {row['recording']}: {row['state']}")


@record.command("delete")
@hub_options
@_token
@click.argument("recording_id")
@_errors
def delete(hub: Hub, token: str | None, recording_id: str) -> None:
    """Delete a recording's file."""
    _call(hub, f"/api/recordings/{recording_id}", token, method="DELETE")
    click.echo(f"deleted {recording_id}")
