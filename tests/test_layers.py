"""The package's layers, as its imports show them (parsed with ``ast``, nothing imported).

Lower layers never reach up: the MIDI model and the sans-IO RTP core import nothing
above them (and no IO), the hub and sockets take plain specs rather than pydantic
config, and the command line loads server code only inside ``serve`` and ``config
check``. A new top-level module or package has to be given a row in ``ALLOWED``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
ROOT = "midihub"

# Each top-level module or package of midihub, and the others it may import.
# "midihub" is the package's own __init__ (its __version__).
ALLOWED: dict[str, set[str]] = {
    "midihub.midi": set(),
    "midihub.rtp": {"midihub.midi"},
    "midihub.midi2": {"midihub.midi", "midihub.rtp"},  # sans-IO Network MIDI 2.0, like rtp
    "midihub.config": {"midihub.hub", "midihub.rtp"},  # it builds the hub's specs
    "midihub.hub": {"midihub.midi", "midihub.midi2", "midihub.rtp"},
    "midihub.net": {"midihub.hub", "midihub.rtp"},
    "midihub.history": set(),
    "midihub.bonjour": set(),
    "midihub.fleet": {"midihub", "midihub.hub"},  # the shared directory (PostgreSQL)
    "midihub.record": {"midihub.config", "midihub.hub", "midihub.midi", "midihub.rtp"},
    "midihub.web": {
        "midihub",
        "midihub.config",
        "midihub.fleet",
        "midihub.hub",
        "midihub.midi",
        "midihub.record",
        "midihub.rtp",
    },
    # app, config, net and web inside the serve and config-check commands only: see
    # CLI_MODULE_LEVEL for what loading midihub.cli (every client command) may import.
    "midihub.cli": {
        "midihub",
        "midihub.app",
        "midihub.config",
        "midihub.midi",
        "midihub.net",
        "midihub.web",
    },
    "midihub.app": {
        "midihub.bonjour",
        "midihub.config",
        "midihub.hub",
        "midihub.net",
        "midihub.record",
        "midihub.rtp",
        "midihub.history",
        "midihub.fleet",
        "midihub.web",
    },
    "midihub.__main__": {"midihub.cli"},
    "midihub": set(),
}
CLI_MODULE_LEVEL = {"midihub", "midihub.midi"}
NO_IO = ("asyncio", "socket", "selectors", "select", "ssl", "time", "threading", "os")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, "midihub.rtp.session"
    name: str  # what it names, "midihub.midi.messages.Message" or "struct"
    line: int
    module_level: bool  # runs when the module is imported (not in a function, not typing-only)

    def __str__(self) -> str:
        path = self.module.replace(".", "/")
        return f"{path}:{self.line} imports {self.name}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [f"{base}.{alias.name}" for alias in node.names]


def imports_of(path: Path) -> list[Import]:
    module = module_name(path)
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(nodes: list[ast.stmt], module_level: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in _names(node, module, is_package):
                    found.append(Import(module, name, node.lineno, module_level))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body, False)
            elif isinstance(node, ast.If):
                visit(node.body, module_level and not _is_type_checking(node.test))
                visit(node.orelse, module_level)
            else:
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        statements = [c for c in children if isinstance(c, ast.stmt)]
                        for child in children:  # except handlers and match cases hold bodies
                            if isinstance(child, ast.excepthandler | ast.match_case):
                                statements += child.body
                        visit(statements, module_level)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)).body, True)
    return found


ALL_IMPORTS = [i for path in sorted((SOURCE / ROOT).rglob("*.py")) for i in imports_of(path)]
UNITS = {
    module_name(p)
    for p in (SOURCE / ROOT).iterdir()
    if p.suffix == ".py" or (p / "__init__.py").exists()
}


def unit(name: str) -> str:
    """The top-level module or package a dotted name is in ("midihub" for the root's own
    names such as ``__version__``); "" outside midihub."""
    parts = name.split(".")
    if parts[0] != ROOT:
        return ""
    if len(parts) == 1:
        return ROOT
    top = f"{ROOT}.{parts[1]}"
    return top if top in UNITS else ROOT


def inside(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def from_(*packages: str) -> list[Import]:
    return [i for i in ALL_IMPORTS if inside(i.module, *packages)]


def test_the_parser_sees_lazy_typing_only_and_relative_imports() -> None:
    """The helpers above can tell the cases apart, or the checks below prove nothing."""
    cli = [i for i in ALL_IMPORTS if i.module == "midihub.cli.commands"]
    lazy = {i.name for i in cli if not i.module_level}
    eager = {i.name for i in cli if i.module_level}
    assert "midihub.app.App" in lazy and "midihub.cli.errors.hub_errors" in eager
    assert "midihub.config.ConfigError" in lazy and "midihub.config.ConfigError" not in eager
    assert unit("midihub.__version__") == ROOT and unit("midihub.rtp.session.X") == "midihub.rtp"
    relative = ast.parse("from .session import Session\nfrom .. import midi\n").body
    names = [_names(n, "midihub.rtp", True) for n in relative if isinstance(n, ast.ImportFrom)]
    assert names == [["midihub.rtp.session.Session"], ["midihub.midi"]]


def test_every_module_has_a_layer() -> None:
    assert sorted(UNITS - set(ALLOWED)) == []


def test_the_layers_have_no_cycle() -> None:
    done: set[str] = set()
    path: list[str] = []

    def walk(node: str) -> None:
        assert node not in path, " -> ".join([*path, node])
        if node in done:
            return
        path.append(node)
        for below in ALLOWED.get(node, set()):
            walk(below)
        path.pop()
        done.add(node)

    for node in ALLOWED:
        walk(node)


def test_each_module_imports_only_the_layers_it_may() -> None:
    wrong = [
        str(i)
        for i in ALL_IMPORTS
        if (target := unit(i.name))
        and target != unit(i.module)
        and target not in ALLOWED[unit(i.module)]
    ]
    assert wrong == []


def test_rtp_imports_only_rtp_and_midi() -> None:
    outside = [
        str(i)
        for i in from_("midihub.rtp")
        if inside(i.name, ROOT) and not inside(i.name, "midihub.rtp", "midihub.midi")
    ]
    assert outside == []


def test_midi_imports_nothing_else_from_midihub() -> None:
    outside = [
        str(i)
        for i in from_("midihub.midi")
        if inside(i.name, ROOT) and not inside(i.name, "midihub.midi")
    ]
    assert outside == []


def test_the_sans_io_core_imports_no_io() -> None:
    """No sockets, clocks, threads or event loop below the hub (design.md)."""
    core = ("midihub.rtp", "midihub.midi", "midihub.midi2")
    io = [str(i) for i in from_(*core) if inside(i.name, *NO_IO)]
    assert io == []


def test_the_cli_loads_server_code_only_inside_a_command() -> None:
    """Module-level imports run for every command; a lazy import inside a command's
    function runs for that command only (``serve`` imports the server stack)."""
    eager = from_("midihub.cli")
    eager = [i for i in eager if i.module_level]
    server = [
        str(i)
        for i in eager
        if unit(i.name) and unit(i.name) not in {"midihub.cli", *CLI_MODULE_LEVEL}
    ]
    assert server == []
    heavy = ("aiohttp", "sqlalchemy", "pydantic", "zeroconf", "prometheus_client", "mido")
    # Only the monitor uses aiohttp (its SSE client), and only `midihub monitor` loads it.
    assert [str(i) for i in eager if inside(i.name, *heavy) and "monitor" not in i.module] == []
    assert [str(i) for i in eager if inside(i.name, "midihub.cli.monitor")] == []


def test_hub_and_net_know_no_pydantic_or_config() -> None:
    wrong = [
        str(i)
        for i in from_("midihub.hub", "midihub.net")
        if inside(i.name, "pydantic", "midihub.config")
    ]
    assert wrong == []


def test_serve_imports_the_web_and_bonjour_libraries_only_where_used() -> None:
    """The app loads the web stack in ``_start_web`` and Bonjour's zeroconf when an
    advertiser starts; ``midihub.web`` names its parts lazily, so importing its
    ``errors`` (``serve`` catches ``WebError``) loads no aiohttp
    (tests/test_startup_imports.py checks the running process)."""
    features = ("aiohttp", "prometheus_client", "zeroconf", "mido")
    eager = [i for i in from_("midihub.app", "midihub.bonjour") if i.module_level]
    eager += [i for i in ALL_IMPORTS if i.module == "midihub.web" and i.module_level]
    wrong = [
        str(i)
        for i in eager
        if inside(i.name, *features)
        or (inside(i.name, "midihub.web") and not inside(i.name, "midihub.web.errors"))
    ]
    assert wrong == []
    cli = [i.name for i in from_("midihub.cli") if inside(i.name, "midihub.web")]
    assert cli == ["midihub.web.errors.WebError"]  # serve's, inside the command
