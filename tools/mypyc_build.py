"""Compile the sans-IO core (``midihub.rtp``, ``midihub.midi``) with mypyc: an optional build.

The compiled build is a copy of the whole package in ``build/mypyc/`` (gitignored) with
the core's extension modules beside their copied sources; ``src/`` stays pure Python and
nothing compiled ever lands in it. Putting ``build/mypyc`` first on ``PYTHONPATH`` runs
the compiled build (``make run`` does, when this script succeeds; ``make test-compiled``
runs the suite on it; ``bench/core.py --compare`` times both).

It never goes stale silently: ``build/mypyc/_midihub_build.json`` records a hash of every
file of ``src/midihub`` the copy was made from (and of this script), this script rebuilds
only when one differs, and the copy's ``midihub/__init__.py`` ends with a check
(``_midihub_build.py``) that refuses to import the copy once a file in ``src/midihub``
changed.

    .venv/bin/python tools/mypyc_build.py [--optional] [--force]

``--optional``: without a C compiler or Python's headers, say so and exit 1 (``make run``
then runs the pure-Python package) instead of failing loudly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "midihub"
OUT = ROOT / "build" / "mypyc"
MANIFEST = "_midihub_build.json"
# What mypyc compiles (packages under src/midihub): the strict-typed sans-IO core. The rest
# of the package (hub/, net/, web/, ...) is copied and stays interpreted.
COMPILED = ("midihub/midi", "midihub/rtp")
# Modules of those packages left interpreted, and why (docs/benchmarks.md, "Compiled core").
INTERPRETED = {
    # mypyc cannot subclass RuntimeError natively ("Inheriting from most builtin types is
    # unimplemented"); the way round, mypy_extensions.mypyc_attr(native_class=False), would
    # make mypy_extensions a runtime dependency, for two exception classes off the hot path.
    "midihub/rtp/errors.py",
    # The hub's own events (hub/panic.py: Panicked, Released) subclass Event, and
    # interpreted classes cannot inherit from compiled ones ("TypeError: interpreted
    # classes cannot inherit from compiled"); mypyc_attr(allow_interpreted_subclasses=True)
    # would again need mypy_extensions at run time.
    "midihub/rtp/events.py",
}

CHECK = '''"""Refuses a compiled midihub whose sources changed (tools/mypyc_build.py wrote it)."""

import hashlib
import json
from pathlib import Path

_build = json.loads((Path(__file__).parent / "_midihub_build.json").read_text())
_source = Path(_build["source"])
if _source.is_dir():  # a copy deployed without its sources has nothing to compare with
    _now = {
        str(path.relative_to(_source)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(_source.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }
    if _now != _build["files"]:
        changed = sorted(set(_now.items()) ^ set(_build["files"].items()))
        raise ImportError(
            f"the compiled midihub in {Path(__file__).parent} is stale: "
            f"{', '.join(sorted({name for name, _ in changed}))} changed in {_source}; "
            "run `make compiled` (tools/mypyc_build.py) or drop build/mypyc from PYTHONPATH"
        )
'''
HOOK = "\n\nimport _midihub_build  # noqa: E402  (tools/mypyc_build.py: refuses a stale build)\n"


def hashes(source: Path) -> dict[str, str]:
    """Every file of the package (the web pages' static files too: the copy serves its own)."""
    return {
        str(path.relative_to(source)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(source.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def up_to_date() -> bool:
    try:
        built = json.loads((OUT / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return bool(
        built.get("source") == str(SOURCE)
        and built.get("files") == hashes(SOURCE)
        and built.get("builder") == builder()
    )


def builder() -> str:
    """This script's hash: a change to what it compiles, or how, rebuilds too."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def toolchain() -> str | None:
    """Why this machine cannot compile, or None when it can."""
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "Python's C headers (Python.h) are not installed"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    return None


def seal(out: Path, source: Path, files: dict[str, str]) -> None:
    """Make the copy of ``source`` in ``out`` refuse to import once ``source`` no longer
    has exactly ``files`` (its hashes when it was copied)."""
    (out / "_midihub_build.py").write_text(CHECK)
    with (out / "midihub" / "__init__.py").open("a") as init:
        init.write(HOOK)
    manifest = {"source": str(source), "builder": builder(), "files": files}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))


def build() -> None:
    stage = OUT.with_name("mypyc.new")
    shutil.rmtree(stage, ignore_errors=True)
    files = hashes(SOURCE)
    shutil.copytree(SOURCE, stage / "midihub", ignore=shutil.ignore_patterns("__pycache__"))
    modules = sorted(
        str(path.relative_to(stage))
        for package in COMPILED
        for path in (stage / package).rglob("*.py")
        if str(path.relative_to(stage)) not in INTERPRETED
    )
    setup = (
        "from setuptools import setup\n"
        "from mypyc.build import mypycify\n"
        f"setup(name='midihub-core', ext_modules=mypycify({['--strict', *modules]!r},"
        " target_dir='c'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", setup, "build_ext", "--inplace", "--build-temp", "c/obj"],
        cwd=stage,
        env={**os.environ, "PYTHONPATH": ""},  # mypy must not see another tree's midihub
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if done.returncode != 0:
        print(done.stdout, file=sys.stderr)
        raise subprocess.CalledProcessError(done.returncode, done.args)
    shutil.rmtree(stage / "c")
    shutil.rmtree(stage / "build")
    seal(stage, SOURCE, files)
    shutil.rmtree(OUT, ignore_errors=True)
    stage.rename(OUT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optional", action="store_true", help="exit 1 without a toolchain")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args()
    if not args.force and up_to_date():
        return 0
    missing = toolchain()
    if missing is not None:
        print(f"mypyc build skipped: {missing}; running pure Python", file=sys.stderr)
        if args.optional:
            return 1
        raise SystemExit(f"cannot compile: {missing}")
    print(f"compiling {', '.join(COMPILED)} with mypyc into {OUT} ...", file=sys.stderr)
    try:
        build()
    except subprocess.CalledProcessError:
        if args.optional:
            print("mypyc build failed (above); running pure Python", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
