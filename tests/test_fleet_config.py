"""``[fleet]``: strict validation in the file's words, never the password in a message."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from midihub import config as c
from midihub.cli import main

GOOD = """
[rooms]
Jam = 5060
[fleet]
database = "postgresql://midihub:s3cret-pw@db.example.org:5432/fleet"
name = "eu-1"
address = "hub-eu.example.org"
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(c.ConfigError) as caught:
        c.parse(text)
    return caught.value.problems


def test_a_fleet_table_becomes_its_spec_with_defaults() -> None:
    spec = c.parse(GOOD).fleet_spec()
    assert spec is not None
    assert (spec.name, spec.address, spec.heartbeat, spec.down_after) == (
        "eu-1",
        "hub-eu.example.org",
        5.0,
        15.0,
    )
    assert spec.database.endswith("@db.example.org:5432/fleet")
    assert "s3cret-pw" not in repr(spec) and "s3cret-pw" not in spec.display
    assert "s3cret-pw" not in repr(c.parse(GOOD))
    assert spec.display == "midihub@db.example.org:5432/fleet"


def test_without_a_fleet_table_there_is_no_fleet() -> None:
    assert c.parse("[rooms]\nJam = 5060\n").fleet_spec() is None


def test_every_fleet_problem_is_named_without_the_password() -> None:
    problems = problems_of(
        '[fleet]\ndatabase = "mysql://u:s3cret-pw@h/db"\nname = "eu 1"\n'
        'address = "hub.example.org:5004"\n'
    )
    assert problems == [
        "line 2: fleet.database: u@h/db: expected a postgresql://user@host:port/dbname URL"
        " (scheme 'mysql')",
        "line 3: fleet.name: \"eu 1\" is not a hub name: 1-63 letters, digits, '.', '_' or"
        " '-', starting with a letter or digit",
        'line 4: fleet.address: "hub.example.org:5004" is not a host name or IP address (no'
        " port: the other hubs use this hub's room and group ports)",
    ]
    assert all("s3cret" not in p for p in problems)
    assert problems_of('[fleet]\ndatabase = "postgresql://h"\nname = "a"\naddress = "b"\n') == [
        "line 2: fleet.database: h/: the URL names no database (…/dbname)"
    ]
    assert "fleet.database: missing" in problems_of('[fleet]\nname = "a"\naddress = "b"\n')[0]


def test_the_down_bound_is_checked() -> None:
    base = GOOD + "heartbeat = {}\ndown_after = {}\n"
    assert problems_of(base.format(5, 31))[0].endswith("should be less than or equal to 30, not 31")
    assert "must be at most 30 s" in problems_of(base.format(6, 25))[0]
    assert "at least twice heartbeat" in problems_of(base.format(5, 8))[0]
    assert c.parse(base.format(0.5, 2)).fleet_spec() is not None


def test_config_check_validates_and_summarises_the_fleet(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    result = CliRunner().invoke(main, ["config", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "fleet: 'eu-1' at hub-eu.example.org, database midihub@db.example.org:5432/fleet" in (
        result.output
    )
    assert "s3cret" not in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('"eu-1"', '"eu/1"'))
    result = CliRunner().invoke(main, ["config", "check", str(bad)])
    assert result.exit_code == 1 and "fleet.name" in result.output


def test_a_reload_names_a_fleet_change_and_keeps_the_running_one() -> None:
    from midihub.app import restart_only_changes, still_running

    plain = c.parse("[rooms]\nJam = 5060\n")
    fleet = c.parse(GOOD)
    renamed = c.parse(GOOD.replace('"eu-1"', '"eu-2"'))
    assert restart_only_changes(plain, fleet) == {"fleet": ["(the table)"]}
    assert restart_only_changes(fleet, plain) == {"fleet": ["(the table)"]}
    assert restart_only_changes(fleet, renamed) == {"fleet": ["name"]}
    assert still_running(plain, fleet).fleet is None
    assert still_running(fleet, renamed).fleet == fleet.fleet
