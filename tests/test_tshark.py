"""An independent decoder: Wireshark's RTP-MIDI dissector (tshark, installed by
``make tools``) reads every datagram the hub sent in loss runs over the in-memory
network, finds nothing malformed (but for its one known chapter-N quirk) and no
expert warning, and reads every journal as we meant it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import tshark
from tests.test_model_loss import HELD, PEDAL, Scenario, perform

pytestmark = pytest.mark.skipif(not tshark.available(), reason="tshark: run `make tools`")

BUSY = [
    HELD,
    PEDAL,
    (("on", 0, 1, [60, 61, 62, 63, 64, 65]), 0.01),
    (("bend", 0, 1, 300), 0.01),
    (("program", 0, 2, 5), 0.01),
    (("cc", 0, 2, 7, 99), 0.01),
    (("off", 0, 0, [48]), 0.01),
    (("sysex", 0, 2500), 0.01),
    (("cc", 0, 0, 121, 0), 0.2),
    (("offs+sysex", 0, 1, [60, 61], 1500), 0.3),
    (("on", 0, 2, [50, 51]), 0.01),
    (("reset", 0), 0.01),
    (("on", 0, 0, [49]), 0.01),
    (("panic",), 1.5),  # a held note turns stale: Y = 0
    (("off", 0, 1, [62]), 0.01),
]


def test_tshark_reads_every_hub_datagram_of_a_loss_run(tmp_path: Path) -> None:
    scenario = Scenario(
        1,
        True,
        BUSY,
        {"ra": ["drop", "pass", "drop", "dup", "late"] * 10, "rb": [], "p0": ["drop", "pass"] * 5},
        True,
    )
    outcome = perform(scenario, lossy=True)
    datagrams = [
        ((str(w.src[0]), w.src[1]), (str(w.dst[0]), w.dst[1]), w.data) for w in outcome.sent
    ]
    counts = tshark.check(datagrams, tmp_path)
    assert counts["journals"] > 20 and counts["channels"] > counts["journals"]
    print(counts)
