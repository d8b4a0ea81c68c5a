"""The long file work of recordings (finishing a journal, reading the directory at
start) in a child process: its Python loops never contend with the packet loop for
the GIL. (On a thread they did: clock-sync replies on another port waited up to 5 ms
while a 50 MB journal finished, p50 1.3 ms instead of 0.1.) The child streams, so
its memory does not grow with a recording either.

The parent side (``Children``) blocks: call it from the writer thread or
``asyncio.to_thread``. ``Children.stop`` kills what still runs at shutdown: a journal
it was finishing stays whole and is finished at the next start.

    python -m midihub.record.worker finish JOURNAL | prepare DIRECTORY [JOURNAL ...]
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from midihub.record import files, smf
from midihub.record.journal import Header

log = logging.getLogger("midihub.record")


class Interrupted(Exception):
    """The child was killed (shutdown): its work is left for the next start."""


def _info(info: smf.Info) -> dict[str, Any]:
    return {
        "header": info.header.as_dict(),
        "duration": info.duration,
        "players": info.players,
        "messages": info.messages,
        "size": info.size,
    }


def _from_info(data: dict[str, Any]) -> smf.Info:
    return smf.Info(
        Header.from_dict(data["header"]),
        float(data["duration"]),
        [str(name) for name in data["players"]],
        int(data["messages"]),
        int(data["size"]),
    )


class Children:
    """The children of one recordings manager: ``stop`` kills those running and any
    started after (shutdown). Its methods block: call them off the loop."""

    def __init__(self) -> None:
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def finish(self, path: Path) -> smf.Info:
        """``files.finish`` in a child process; ValueError when it failed (the reason)."""
        answer = self._run("finish", str(path))
        if "error" in answer:
            raise ValueError(str(answer["error"]))
        return _from_info(answer["info"])

    def prepare(
        self, directory: Path, journals: list[Path]
    ) -> tuple[dict[str, smf.Info], list[str]]:
        """Recover ``journals`` (left unfinished), then read every recording of the
        directory (``files.recover`` and ``files.scan`` in a child process): the
        recordings by id, and the ids of those recovered."""
        answer = self._run("prepare", str(directory), *map(str, journals))
        if "error" in answer:
            raise OSError(str(answer["error"]))  # the directory is unusable
        found = {rid: _from_info(info) for rid, info in answer["found"].items()}
        return found, [str(rid) for rid in answer["recovered"]]

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            children = list(self._running)
        for child in children:
            with contextlib.suppress(OSError):
                child.kill()

    def _run(self, command: str, *targets: str) -> dict[str, Any]:
        """The child's answer; raises ``Interrupted`` if it was killed. A child that
        cannot be started (no ``fork`` allowed, say) is replaced by doing the work here."""
        root = str(Path(__file__).resolve().parents[2])  # where ``midihub`` is
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root if not path else root + os.pathsep + path}
        argv = [sys.executable, "-m", "midihub.record.worker", command, *targets]
        if self._stopped:
            raise Interrupted("stopping")
        try:
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
        except OSError as error:
            log.warning("cannot start the recording worker (%s): working in the hub", error)
            return _answer(command, *targets)
        with child:
            with self._lock:
                self._running.add(child)
                if self._stopped:
                    child.kill()
            try:
                out, _ = child.communicate()
            finally:
                with self._lock:
                    self._running.discard(child)
        if child.returncode < 0:
            raise Interrupted(f"killed by signal {-child.returncode}")
        try:
            answer: dict[str, Any] = json.loads(out)
        except ValueError:
            return {"error": f"the recording worker failed (exit {child.returncode})"}
        return answer


def _answer(command: str, target: str, *journals: str) -> dict[str, Any]:
    """The work itself, as the child answers it."""
    answer: dict[str, Any]
    try:
        if command == "finish":
            answer = {"info": _info(files.finish(Path(target)))}
        elif command == "prepare":
            directory = Path(target)
            left = [Path(name) for name in journals]
            recovered = {info.header.id: info for info in files.recover(left)}
            found = files.scan(directory, recovered)
            answer = {
                "found": {rid: _info(info) for rid, info in found.items()},
                "recovered": list(recovered),
            }
        else:
            answer = {"error": f"unknown command {command!r}"}
    except (OSError, ValueError) as error:
        answer = {"error": getattr(error, "strerror", None) or str(error)}
    return answer


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    sys.stdout.write(json.dumps(_answer(*argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
