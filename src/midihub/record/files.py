"""The recordings directory: journals finished into SMFs, the index read back at
start, and retention. Blocking file work: called from the writer thread or through
``asyncio.to_thread``, never on the packet loop."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from midihub.record import journal, smf
from midihub.record.names import RECORDING_ID

log = logging.getLogger("midihub.record")


def finish(path: Path) -> smf.Info:
    """Turn a journal into ``<id>.mid`` beside it, streaming, and delete the journal
    (only once the SMF is in place: a crash meanwhile leaves the journal to recover)."""
    target = path.with_name(path.name.removesuffix(journal.SUFFIX) + smf.SUFFIX)
    with journal.Reader(path) as reader:
        info = smf.write(reader, target)
    path.unlink()
    return info


def left_over(directory: Path) -> list[Path]:
    """The journals in ``directory`` (none if it does not exist yet): listed before any
    recording starts, they are those a crash (or a stop past the shutdown budget) left."""
    try:
        return sorted(directory.glob("*" + journal.SUFFIX))
    except OSError:
        return []


def recover(journals: list[Path]) -> list[smf.Info]:
    """Journals left by a crash (or a full disk) become SMFs holding everything flushed
    (the caller logs them, once they are in its index)."""
    recovered: list[smf.Info] = []
    for path in journals:
        try:
            info = finish(path)
        except (OSError, ValueError) as error:
            log.error("cannot recover recording %s: %s", path.name, error)
            continue
        recovered.append(info)
    return recovered


def scan(directory: Path, known: dict[str, smf.Info] | None = None) -> dict[str, smf.Info]:
    """Every recording in the directory, by id (files that are not ours are left alone);
    those in ``known`` (just recovered) are not read again."""
    found: dict[str, smf.Info] = {}
    for path in sorted(directory.glob("*" + smf.SUFFIX)):
        stem = path.name.removesuffix(smf.SUFFIX)
        if not RECORDING_ID.match(stem):
            continue
        if known is not None and stem in known:
            found[stem] = known[stem]
            continue
        try:
            info = smf.read_info(path)
        except ValueError as error:
            log.warning("ignoring %s", error)
            continue
        found[stem] = info
    return found


def expired(
    index: dict[str, smf.Info], *, retention_days: float, max_bytes: float, now: float | None = None
) -> list[str]:
    """Recordings to delete: older than the retention, then the oldest until the rest
    fit in ``max_bytes``."""
    now = time.time() if now is None else now
    oldest_first = sorted(index.items(), key=lambda item: item[1].header.start)
    cutoff = now - retention_days * 86400
    doomed = [rid for rid, info in oldest_first if info.header.start < cutoff]
    total = sum(info.size for rid, info in oldest_first if rid not in doomed)
    for rid, info in oldest_first:
        if total <= max_bytes:
            break
        if rid not in doomed:
            doomed.append(rid)
            total -= info.size
    return doomed


def delete(directory: Path, rid: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / (rid + smf.SUFFIX)).unlink()
