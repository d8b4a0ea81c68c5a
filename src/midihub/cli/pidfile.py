"""``midihub serve --pid-file PATH``: the hub's process id in a file while it runs, so
``kill -HUP "$(cat PATH)"`` reloads this hub and no other (``pidof`` names every hub
on the machine)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


class PidFileError(OSError):
    """The pid file cannot be written; the message names it."""


@contextlib.contextmanager
def pid_file(path: str | None) -> Iterator[None]:
    """Write this process's id to ``path`` (replaced whole, never half-written) and
    remove it on the way out, unless another process has written its own there since."""
    if path is None:
        yield
        return
    target = Path(path)
    mine = f"{os.getpid()}\n"
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        partial.write_text(mine, encoding="ascii")
        partial.replace(target)
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise PidFileError(
            error.errno or 0, f"cannot write the pid file {path}: {error.strerror or error}"
        ) from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if target.read_text(encoding="ascii") == mine:
                target.unlink()
