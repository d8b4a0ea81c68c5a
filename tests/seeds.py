"""Every random generator in the tests comes from ``seeded``: its seed is fixed by the
test (never ``hash()``, which changes per process), and the seeds a failing test used
are printed in its report (tests/conftest.py), so any failure reproduces."""

from __future__ import annotations

import random

used: list[tuple[str, int | str]] = []
"""(what, seed) for the test running now; conftest clears it before each test."""


def seeded(seed: int | str, what: str = "") -> random.Random:
    """A ``random.Random`` seeded with ``seed`` (a string seeds the same in every run)."""
    used.append((what, seed))
    return random.Random(seed)
