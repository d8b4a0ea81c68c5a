"""``midihub`` with a chosen event loop: ``python bench/hub_launcher.py --loop asyncio serve ...``.

``midihub serve`` always takes uvloop when it is importable (``midihub.app.fast_loop``)
and has no switch for it, so the benchmark replaces that one function before running the
real CLI; everything else is the shipped code path.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import midihub.app
from midihub.cli import main


def _standard_loop() -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    return "asyncio", asyncio.new_event_loop


def _uvloop() -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    import uvloop

    return "uvloop", uvloop.new_event_loop


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--loop":
        choice, args = args[1], args[2:]
        midihub.app.fast_loop = _uvloop if choice == "uvloop" else _standard_loop
    main(args=args, prog_name="midihub")
