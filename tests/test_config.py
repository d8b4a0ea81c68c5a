"""Configuration files: TOML, the legacy midiports JSON, and every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from midihub import config as c
from midihub.cli import main

MINIMAL = """
[groups]
GroupOne = [5040, 5042]   # [in, out]
[rooms]
Jam = 5060
"""


def test_minimal_toml() -> None:
    config = c.parse(MINIMAL)
    assert config.groups["GroupOne"].in_port == 5040
    assert config.groups["GroupOne"].out_port == 5042
    assert config.rooms["Jam"].port == 5060
    assert [(e.port, e.label) for e in config.endpoints()] == [
        (5040, "GroupOne in"),
        (5042, "GroupOne out"),
        (5060, "Jam"),
    ]
    assert config.bind == "0.0.0.0" and config.timeout == 30


def test_extended_toml_tables() -> None:
    config = c.parse(
        """
        bind = "::"
        name = "studio"
        timeout = 45
        [groups.Band]
        in = 6000
        out = 6002
        [rooms.Jam]
        port = 6010
        """
    )
    assert config.bind == "::" and config.name == "studio" and config.timeout == 45
    assert config.groups["Band"].out_port == 6002 and config.rooms["Jam"].port == 6010


def test_legacy_json_is_accepted_unchanged() -> None:
    config = c.parse('{"GroupOne": [5040, 5042], "GroupTwo": [5050, 5052]}')
    assert {k: (g.in_port, g.out_port) for k, g in config.groups.items()} == {
        "GroupOne": (5040, 5042),
        "GroupTwo": (5050, 5052),
    }


def test_no_file_gives_the_default_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config, path = c.load(None)
    assert path is None
    assert {k: (g.in_port, g.out_port) for k, g in config.groups.items()} == c.DEFAULT_GROUPS


def test_search_order_prefers_toml_then_midiports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "midiports").write_text('{"Old": [7000, 7002]}')
    config, path = c.load(None)
    assert path == Path("midiports") and list(config.groups) == ["Old"]
    (tmp_path / "midihub.toml").write_text("[rooms]\nNew = 7100\n")
    config, path = c.load(None)
    assert path == Path("midihub.toml") and list(config.rooms) == ["New"]


def test_bind_override() -> None:
    assert c.parse(MINIMAL, bind="::1").bind == "::1"


def problems_of(text: str) -> list[str]:
    with pytest.raises(c.ConfigError) as info:
        c.parse(text, "bad.toml")
    return info.value.problems


def test_every_problem_is_reported_with_its_field_and_line() -> None:
    problems = problems_of(
        """[groups]
A = [5041, 5044]
B = [5044, 5046]
[rooms]
A = 5060
"""
    )
    joined = "\n".join(problems)
    assert "line 2: groups.A.in: port 5041 is odd" in joined
    assert "groups.B.in: port 5044 is already used by groups.A.out" in joined
    assert "rooms.A: name 'A' is also a group" in joined
    assert len(problems) >= 3


def test_overlapping_pairs_are_named() -> None:
    problems = problems_of("[groups]\nA = [5040, 5042]\n[rooms]\nR = 5043\n")
    assert any("rooms.R" in p and "overlap" in p and "5042" in p for p in problems)


def test_pydantic_field_errors_name_the_field() -> None:
    problems = problems_of('timeout = -1\nbogus = 1\n[groups]\nA = [5040]\n[rooms]\nR = "x"\n')
    joined = "\n".join(problems)
    assert "line 1: timeout:" in joined
    assert (
        "line 2: unknown option 'bogus'; the options here: bind, ck_interval, fleet, groups"
        in joined
    )
    assert "groups.A: a group is [in, out]" in joined
    assert "rooms.R" in joined


def test_toml_syntax_error_names_the_line() -> None:
    assert "line 3" in problems_of("[groups]\nA = [5040,\nB = 1\n")[0]


def test_legacy_json_duplicate_names_and_syntax() -> None:
    assert any(
        "name used twice" in p for p in problems_of('{"A": [5040, 5042], "A": [5050, 5052]}')
    )
    assert "JSON syntax: line 2" in problems_of('{"A": [5040, 5042],\n ]')[0]


def test_config_check_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL)
    result = CliRunner().invoke(main, ["config", "check", str(good)])
    assert result.exit_code == 0 and "5060/5061  Jam" in result.output
    bad = tmp_path / "midiports"
    bad.write_text('{"A": [5041, 5042]}')
    result = CliRunner().invoke(main, ["config", "check", str(bad)])
    assert result.exit_code == 1
    assert "groups.A.in: port 5041 is odd" in result.output
    assert "overlap" in result.output
    missing = CliRunner().invoke(main, ["config", "check", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 1 and "cannot read" in missing.output


def test_table_form_problems_point_at_the_table_line() -> None:
    problems = problems_of("[groups]\nA = [5040, 5044]\n\n[groups.B]\nin = 5044\nout = 5046\n")
    assert problems == ["line 4: groups.B.in: port 5044 is already used by groups.A.out"]


def test_an_unknown_option_is_named_with_the_closest_valid_one(tmp_path: Path) -> None:
    problems = problems_of(
        '[rooms.Jam]\nport = 5060\nkye = "secret-key"\n[webb]\n[limits]\nmax_sysx = 9\n'
    )
    assert problems == [  # top to bottom
        "line 3: rooms.Jam: unknown option 'kye' (did you mean 'key'?)",
        "line 4: unknown option 'webb' (did you mean 'web'?)",
        "line 6: limits: unknown option 'max_sysx' (did you mean 'max_sysex'?)",
    ]
    file = tmp_path / "midihub.toml"
    file.write_text('[rooms.Jam]\nport = 5060\nkye = "secret-key"\n')
    result = CliRunner().invoke(main, ["config", "check", str(file)])
    assert result.exit_code == 1
    assert "rooms.Jam: unknown option 'kye' (did you mean 'key'?)" in result.output
    assert "Extra inputs" not in result.output


def test_types_are_strict_in_the_files_words() -> None:
    problems = problems_of(
        '[rooms.Jam]\nport = 5060\nbrowser = "yes"\njournal = 1\n'
        '[limits]\nmax_sysex = "65536"\nsysex_rate = "fast"\nmax_pending = 8.0\n'
        '[mdns]\nenabled = "no"\n[web]\nlisten = 8080\n'
    )
    assert problems == [
        'line 3: rooms.Jam.browser: expected true or false, not "yes"',
        "line 4: rooms.Jam.journal: expected true or false, not 1",
        'line 6: limits.max_sysex: expected a whole number, not "65536"',
        'line 7: limits.sysex_rate: expected a number, not "fast"',
        "line 8: limits.max_pending: expected a whole number, not 8.0",
        'line 10: mdns.enabled: expected true, false or "auto", not "no"',
        "line 12: web.listen: expected text in quotes, not 8080",
    ]


def test_a_whole_number_is_a_number() -> None:
    """Strict types refuse strings for numbers, not 30 for a float field."""
    config = c.parse(
        "timeout = 30\n[rooms.Jam]\nport = 5060\nrelease_after = 2\n[limits]\nsysex_rate = 1000\n"
    )
    assert config.timeout == 30.0 and isinstance(config.timeout, float)
    assert config.rooms["Jam"].release_after == 2.0 and config.limits.sysex_rate == 1000.0


def test_limits_are_said_without_the_librarys_words() -> None:
    problems = problems_of('timeout = 0\n[web]\ntoken = "short"\nhosts = [' + '"a",' * 65 + "]\n")
    assert problems == [
        "line 1: timeout: should be greater than 0, not 0",
        'line 3: web.token: should have at least 8 characters, not "short"',
        "line 4: web.hosts: should have at most 64 items, not 65",
    ]
