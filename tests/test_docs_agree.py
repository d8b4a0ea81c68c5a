"""What the README and the repository say about running a hub agrees with the code: the
files a hub writes where it runs are ignored by git, the leave reasons and `serve`'s
options are all documented, and the README and the Makefile give one time for a bench."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from midihub.app import TOKEN_FILE
from midihub.cli.commands import serve
from midihub.config import StatsConfig
from midihub.rtp.events import LeaveReason

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_what_a_hub_writes_where_it_runs_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    database = StatsConfig().database
    written = [
        TOKEN_FILE,
        database,
        f"{database}-wal",  # SQLite's write-ahead log beside it
        f"{database}-shm",
        "recordings/Jam_20250301T201502Z.mid",  # [record] dir: recordings/ beside the database
        "midihub.pid",  # the README's --pid-file
    ]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *written],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    not_ignored = [
        line.split("\t")[-1] for line in done.stdout.splitlines() if line.startswith("::")
    ]
    assert not_ignored == [], done.stdout + done.stderr


def test_the_readme_names_every_leave_reason() -> None:
    listed = README[README.index("Leave reasons:") :].split("\n\n")[0]
    named = set(re.findall(r"`([a-z-]+)`", listed))
    assert sorted({reason.value for reason in LeaveReason} - named) == []


def test_the_serve_synopsis_has_every_option() -> None:
    (synopsis,) = re.findall(r"^- `midihub serve ([^`]*)`", README, re.MULTILINE)
    options = {name for param in serve.params for name in param.opts if name.startswith("--")}
    assert sorted(options - set(re.findall(r"--[a-z-]+", synopsis)) - {"--help"}) == []


def test_the_readme_and_the_makefile_give_one_time_for_a_bench() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (minutes,) = re.findall(r"not part of `make test`, ~(\d+) min\)", makefile)
    (said,) = re.findall(r"`make bench` \(not part of `make test`, about (\d+) minutes\)", README)
    assert said == minutes
