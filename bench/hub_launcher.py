"""``midihub`` with a chosen event loop: ``python bench/hub_launcher.py --loop asyncio serve ...``.

``midihub serve`` always takes uvloop when it is importable (``midihub.app.install_fast_loop``)
and has no switch for it, so the benchmark replaces that one function before running the
real CLI; everything else is the shipped code path.
"""

from __future__ import annotations

import asyncio
import sys

import midihub.app
from midihub.cli import main


def _standard_loop() -> str:
    return "asyncio"


def _uvloop() -> str:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--loop":
        choice, args = args[1], args[2:]
        midihub.app.install_fast_loop = _uvloop if choice == "uvloop" else _standard_loop
    main(args=args, prog_name="midihub")
