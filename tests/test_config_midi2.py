"""Network MIDI 2.0 in the configuration: a room's ``midi2``, a group's ``midi2_in`` /
``midi2_out``, the ``[midi2]`` table, and every clash named."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from midihub import config as c
from midihub.cli import main
from midihub.hub.spec import Midi2Spec

FULL = """
name = "studio"
[rooms.Jam]
port = 5070
midi2 = 5673
key = "sesame"
[groups.Band]
in = 5040
out = 5042
midi2_in = 5674
midi2_out = 5675
[midi2]
fec = 5
ping_interval = 2.5
product_id = "studio-1"
[midi2.users]
alice = "correct horse"
"""


def test_ports_settings_and_users_reach_the_frozen_spec() -> None:
    spec = c.parse(FULL).spec()
    assert {(e.label, e.midi2, e.key) for e in spec.endpoints} == {
        ("Jam", 5673, "sesame"),
        ("Band in", 5674, None),
        ("Band out", 5675, None),
    }
    assert spec.midi2 == Midi2Spec(
        fec=5, ping_interval=2.5, product_id="studio-1", users=(("alice", "correct horse"),)
    )
    assert "correct horse" not in repr(spec.midi2) and "sesame" not in repr(spec)


def test_without_midi2_nothing_changes() -> None:
    spec = c.parse("[rooms]\nJam = 5060\n").spec()
    assert [e.midi2 for e in spec.endpoints] == [None]
    assert spec.midi2 == Midi2Spec()  # fec 3: amidi2net's default, the majority's


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "[rooms.A]\nport = 5070\nmidi2 = 5070\n",
            "line 1: rooms.A.midi2: port 5070 is already used by rooms.A",
        ),
        (
            "[rooms.A]\nport = 5070\nmidi2 = 5071\n",
            "line 1: rooms.A.midi2: port 5071 is already used by rooms.A (its RTP data port)",
        ),
        (
            "[rooms.A]\nport = 5070\nmidi2 = 5673\n[rooms.B]\nport = 5080\nmidi2 = 5673\n",
            "line 4: rooms.B.midi2: port 5673 is already used by rooms.A.midi2",
        ),
        (
            "[groups.G]\nin = 5040\nout = 5042\nmidi2_out = 5043\n",
            "line 1: groups.G.midi2_out: port 5043 is already used by groups.G.out"
            " (its RTP data port)",
        ),
        (
            "[rooms.A]\nport = 5070\nmidi2 = 70000\n",
            "line 3: rooms.A.midi2: port 70000 is outside 1..65535",
        ),
        (
            '[rooms.A]\nport = 5070\nmidi2 = "5673"\n',
            'line 3: rooms.A.midi2: expected a whole number, not "5673"',
        ),
        (
            "[rooms]\nA = 5070\n[midi2]\nfec = 11\n",
            "line 4: midi2.fec: should be less than or equal to 10, not 11",
        ),
        (
            '[rooms]\nA = 5070\n[midi2.users]\nbob = "short"\n',
            "line 3: midi2.users: user 'bob': a password is 8 to 128 characters",
        ),
        (
            '[rooms]\nA = 5070\n[midi2]\nproduct_id = "caf\\u00e9"\n',
            "line 4: midi2.product_id: should match pattern",
        ),
        (
            "[rooms]\nA = 5070\n[midi2]\nfek = 2\n",
            "line 4: midi2: unknown option 'fek' (did you mean 'fec'?)",
        ),
    ],
)
def test_every_mistake_is_named(text: str, problem: str) -> None:
    with pytest.raises(c.ConfigError) as caught:
        c.parse(text)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_config_check_lists_the_midi2_ports_and_reports_a_clash(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(FULL)
    result = CliRunner().invoke(main, ["config", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "5070/5071  Jam  (Network MIDI 2.0: 5673)" in result.output
    assert "5042/5043  Band out  (Network MIDI 2.0: 5675)" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text(FULL.replace("midi2_out = 5675", "midi2_out = 5041"))
    result = CliRunner().invoke(main, ["config", "check", str(bad)])
    assert result.exit_code == 1
    assert "groups.Band.midi2_out: port 5041 is already used by groups.Band.in" in result.output
