"""A week of latency history for many participants, written fast in SQL.

The tables are created as the first release created them (no roll-up, no index on
the minute), and the rows go in with plain INSERTs into ``latency_minutes``: exactly
what an existing deployment (or a benchmark seeding one) hands the hub. Values come
from a fixed formula, so every run builds the same database.

    python -m tests.history_seed PATH [--days 7] [--participants 50] [--now EPOCH]
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS participants (
    id INTEGER NOT NULL, name VARCHAR NOT NULL, address VARCHAR NOT NULL,
    hub_port INTEGER NOT NULL, first_seen FLOAT NOT NULL, last_seen FLOAT NOT NULL,
    PRIMARY KEY (id), UNIQUE (name, address, hub_port));
CREATE TABLE IF NOT EXISTS latency_minutes (
    participant_id INTEGER NOT NULL, minute INTEGER NOT NULL, count INTEGER NOT NULL,
    sum_ms FLOAT NOT NULL, min_ms FLOAT NOT NULL, min_at FLOAT NOT NULL,
    max_ms FLOAT NOT NULL, max_at FLOAT NOT NULL, last_ms FLOAT NOT NULL,
    last_at FLOAT NOT NULL,
    PRIMARY KEY (participant_id, minute), FOREIGN KEY(participant_id) REFERENCES participants (id));
"""

# One row per participant and minute: 6 samples, min 1..40 ms, max min+0..60 ms.
ROWS = """
WITH RECURSIVE m(minute) AS (
    SELECT :first UNION ALL SELECT minute + 60 FROM m WHERE minute + 60 <= :last
),
v AS (
    SELECT p.id AS pid, m.minute AS minute,
           1 + ((p.id * 7919 + m.minute / 60 * 104729) % 400) / 10.0 AS lo,
           ((p.id * 31 + m.minute / 60 * 17) % 600) / 10.0 AS spread
    FROM participants AS p CROSS JOIN m
)
INSERT INTO latency_minutes
    (participant_id, minute, count, sum_ms, min_ms, min_at, max_ms, max_at, last_ms, last_at)
SELECT pid, minute, 6, 6 * lo + 3 * spread, lo, minute + 7, lo + spread, minute + 31,
       lo + spread / 2, minute + 55
FROM v
"""


def seed(
    path: str | Path,
    *,
    days: float = 7,
    participants: int = 50,
    now: float | None = None,
    hub_port: int = 5004,
) -> int:
    """Fill ``path`` with ``days`` of minutes up to ``now`` for ``participants``
    (named ``p00``..); returns the number of minute rows written."""
    now = time.time() if now is None else now
    last = int(now // 60 * 60) - 60
    first = last - (round(days * 1440) - 1) * 60
    connection = sqlite3.connect(str(path))
    try:
        connection.executescript(SCHEMA)
        with connection:
            connection.executemany(
                "INSERT INTO participants (name, address, hub_port, first_seen, last_seen)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (f"p{i:02d}", f"10.0.{i // 250}.{i % 250 + 1}:5004", hub_port, first, last)
                    for i in range(participants)
                ],
            )
            connection.execute(ROWS, {"first": first, "last": last})
        (rows,) = connection.execute("SELECT count(*) FROM latency_minutes").fetchone()
        return int(rows)
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--now", type=float, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = seed(args.path, days=args.days, participants=args.participants, now=args.now)
    print(f"{rows} minute rows in {time.perf_counter() - started:.1f} s -> {args.path}")


if __name__ == "__main__":
    main()
