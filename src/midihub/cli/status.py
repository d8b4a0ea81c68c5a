"""``midihub status``: the API's answer as a table an admin reads at a glance.

Every string from the API (names, addresses, labels) is shown through
:func:`~midihub.cli.printable.printable` as a ``Text``, never as markup: one line per
participant whatever the name holds.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from midihub.cli.printable import MESSAGE_WIDTH, printable


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _port(port: Any, labels: dict[Any, Any]) -> str:
    return printable(f"{port} {labels.get(port, '')}".strip())


def _address(row: dict[str, Any]) -> str:
    """Where it is, and how it joined when that is not RTP MIDI (as the dashboard shows)."""
    transport = row.get("transport")
    address = printable(row["address"])
    return address if transport in (None, "rtp") else f"{address} · {printable(transport)}"


def render_status(
    ports: list[dict[str, Any]], rows: list[dict[str, Any]], console: Console | None = None
) -> None:
    # Piped output is for reading later or grepping: never squeeze it into 80 columns.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    live = [row for row in rows if row.get("connected")]
    labels = {p["port"]: p["label"] for p in ports}
    if not live:
        console.print(Text(f"midihub: no participants on {len(ports)} port(s)"))
    else:
        table = Table(
            title=Text(
                f"midihub: {len(live)} participant(s) on {len(ports)} port(s), latency in ms"
            ),
            title_justify="left",
        )
        for heading in ("participant", "port", "address", "connected"):
            table.add_column(heading, no_wrap=True)
        for heading in ("last", "avg", "min", "max", "jitter", "loss %"):
            table.add_column(heading, justify="right", no_wrap=True)
        for row in sorted(live, key=lambda r: (r["port"], str(r["name"] or ""))):
            cells = [
                printable(row["name"] or "(unnamed)"),
                _port(row["port"], labels),
                _address(row),
                _duration(row.get("connectedFor")),
                _ms(row["lastLatency"]),
                _ms(row["averageLatency"]),
                _ms(row["minLatency"]),
                _ms(row["maxLatency"]),
                _ms(row.get("jitter")),
                f"{row.get('lossPercent', 0.0):.1f}",
            ]
            table.add_row(*(Text(cell) for cell in cells))
        console.print(table)
    idle = [p for p in ports if not p["participants"]]
    if idle:
        console.print(Text("no one on: " + ", ".join(_port(p["port"], labels) for p in idle)))


def render_fleet(document: dict[str, Any], console: Console | None = None) -> None:
    """``midihub status --fleet``: one row per hub, then one per player (with its hub)."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    if not document.get("enabled"):
        console.print(Text("midihub: the fleet is off on this hub (no [fleet] in its config)"))
        return
    hubs = document["hubs"]
    error = printable(document.get("error"), MESSAGE_WIDTH)
    state = "connected" if document.get("connected") else f"no database ({error})"
    console.print(
        Text(f"fleet seen from {printable(document['name'])}: {len(hubs)} hub(s), {state}")
    )
    table = Table()
    for heading in ("hub", "address", "state", "last heartbeat", "version", "rooms", "players"):
        table.add_column(heading, no_wrap=heading != "rooms")
    for hub in hubs:
        rooms = ", ".join(
            f"{room['name']} ({'/'.join(str(p) for p in room['ports'])})" for room in hub["rooms"]
        )
        cells = [
            hub["name"] + (" (this hub)" if hub.get("self") else ""),
            hub["address"],
            "up" if hub["up"] else "DOWN",
            hub["lastSeen"],
            hub["version"],
            rooms or "-",
            str(len(hub["participants"])),
        ]
        table.add_row(*(Text(printable(cell)) for cell in cells))
    console.print(table)
    players = [p for hub in hubs for p in hub["participants"]]
    if not players:
        console.print(Text("no players on any hub"))
        return
    table = Table(title=Text("players, latency in ms"), title_justify="left")
    for heading in ("player", "hub", "room", "port", "transport"):
        table.add_column(heading, no_wrap=True)
    table.add_column("latency", justify="right", no_wrap=True)
    for player in sorted(players, key=lambda p: (p["hub"], p["port"], str(p["name"]))):
        cells = [
            player["name"] or "(unnamed)",
            player["hub"],
            player["room"] or "-",
            str(player["port"]),
            player["transport"],
            _ms(player["latency"]),
        ]
        table.add_row(*(Text(printable(cell)) for cell in cells))
    console.print(table)
    links = document.get("links", [])
    if links:
        console.print(
            Text(
                "links dialed: "
                + ", ".join(
                    f"{printable(link['hub'])} {printable(link['room'])} "
                    + ("up" if link["up"] else "down")
                    for link in links
                )
            )
        )
