"""The optional mypyc build (tools/mypyc_build.py) never runs stale and never hides in src/.

The compiled build is a copy of the package in ``build/mypyc``; it must refuse to import
once a source file it was copied from changed, and nothing compiled may sit beside the
sources (an extension module there would shadow its ``.py`` silently, for every run).
``make test-compiled`` runs the suite on the build with ``MIDIHUB_COMPILED=1``: then the
core must really be the compiled one.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mypyc_build", ROOT / "tools/mypyc_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_compiled_module_sits_beside_the_sources() -> None:
    src = ROOT / "src" / "midihub"
    assert [p for p in src.rglob("*") if p.name.endswith(tuple(EXTENSION_SUFFIXES))] == []


def test_compiled_modules_are_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    suffix = EXTENSION_SUFFIXES[0]
    paths = [
        f"build/mypyc/midihub/rtp/session{suffix}",
        f"build/mypyc/0123456789abcdef0123__mypyc{suffix}",
        f"src/midihub/rtp/session{suffix}",  # where a stray in-place build would put it
    ]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert [line for line in done.stdout.splitlines() if line.startswith("::")] == []


def test_a_copy_refuses_to_import_once_its_sources_changed(tmp_path: Path) -> None:
    """The check the build adds to its copy (no compiler needed: the copy is of a
    stand-in package, sealed as the build seals build/mypyc)."""
    build = builder()
    source = tmp_path / "src" / "midihub"
    source.mkdir(parents=True)
    (source / "__init__.py").write_text("VALUE = 1\n")
    (source / "core.py").write_text("X = 1\n")
    out = tmp_path / "out"
    shutil.copytree(source, out / "midihub")
    build.seal(out, source, build.hashes(source))

    def load() -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(out)}
        return subprocess.run(
            [sys.executable, "-c", "import midihub; print(midihub.VALUE)"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )

    fresh = load()
    assert (fresh.returncode, fresh.stdout) == (0, "1\n"), fresh.stderr
    (source / "core.py").write_text("X = 2\n")
    stale = load()
    assert stale.returncode != 0
    assert "is stale: core.py changed" in stale.stderr
    (source / "core.py").write_text("X = 1\n")
    assert load().returncode == 0
    (source / "new.py").write_text("")  # a new module is a change too
    assert "is stale: new.py changed" in load().stderr
    (source / "new.py").unlink()
    (source / "page.html").write_text("")  # and a new or changed page the copy would serve
    assert "is stale: page.html changed" in load().stderr


def test_no_interpreted_class_inherits_from_a_compiled_one() -> None:
    """mypyc's classes take no interpreted subclasses ("TypeError: interpreted classes
    cannot inherit from compiled" when one is made): outside the compiled modules, no
    class of the package, the tests or the tools may derive from a class defined in one.
    Parsed (``ast``), so the pure-Python run catches it before the compiled run does."""
    build = builder()
    src = ROOT / "src"

    def compiled(path: Path) -> bool:
        name = str(path.relative_to(src))
        return name.startswith(build.COMPILED) and name not in build.INTERPRETED

    defined = {
        node.name: path
        for path in src.rglob("*.py")
        if compiled(path)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    }
    outside = [
        path
        for folder in ("src", "tests", "bench", "tools")
        for path in (ROOT / folder).rglob("*.py")
        if not (path.is_relative_to(src) and compiled(path))
    ]
    wrong = [
        f"{path.relative_to(ROOT)}: {node.name}({name}) of {defined[name].name}"
        for path in outside
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        for base in node.bases
        if (name := ast.unparse(base).rpartition(".")[2]) in defined
    ]
    assert wrong == []


@pytest.mark.skipif(os.environ.get("MIDIHUB_COMPILED") != "1", reason="pure-Python run")
def test_the_compiled_run_uses_the_compiled_core() -> None:
    """Under ``make test-compiled`` every core module but those the build leaves
    interpreted is an extension module, from the build that matches src/."""
    build = builder()
    assert build.up_to_date()
    left = {name.removesuffix(".py").replace("/", ".") for name in build.INTERPRETED}
    for package in build.COMPILED:
        for path in sorted((ROOT / "src" / package).glob("*.py")):
            name = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
            name = name.removesuffix(".__init__")
            module = importlib.import_module(name)
            assert module.__file__ is not None
            compiled = module.__file__.endswith(tuple(EXTENSION_SUFFIXES))
            assert compiled == (name not in left), module.__file__
            assert Path(module.__file__).is_relative_to(build.OUT)
