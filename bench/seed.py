"""A latency-history database as a long-running hub leaves it: ``days`` x ``participants``
of per-minute rows (7 x 50 = 504,000, what ``retention_days = 7`` holds for a regular
group), for the "dashboards open" scenario.

The tables are created here with the schema of ``midihub.store`` as it was when this
scenario was written (``participants`` + the raw per-minute ``latency_minutes``), frozen
on purpose: a hub that changes its schema must migrate such a database on start, and the
benchmark then measures the migrated one. Rows come from one recursive CTE (deterministic
values, no RNG), so seeding takes about a second.

``python bench/seed.py PATH [--participants 50] [--days 7] [--hub-port 5004]``
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE participants (
    id INTEGER NOT NULL,
    name VARCHAR NOT NULL,
    address VARCHAR NOT NULL,
    hub_port INTEGER NOT NULL,
    first_seen FLOAT NOT NULL,
    last_seen FLOAT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (name, address, hub_port)
);
CREATE TABLE latency_minutes (
    participant_id INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum_ms FLOAT NOT NULL,
    min_ms FLOAT NOT NULL,
    min_at FLOAT NOT NULL,
    max_ms FLOAT NOT NULL,
    max_at FLOAT NOT NULL,
    last_ms FLOAT NOT NULL,
    last_at FLOAT NOT NULL,
    PRIMARY KEY (participant_id, minute),
    FOREIGN KEY(participant_id) REFERENCES participants (id)
);
"""

# One row per participant and minute; latencies vary by participant and minute, so
# min/avg/max differ and no aggregate can be answered from a single row.
ROWS = """
WITH RECURSIVE m(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM m WHERE i < :minutes - 1)
INSERT INTO latency_minutes
SELECT r.pid, r.minute, cnt, cnt * (lo + 0.8), lo, r.minute + 5, lo + hi, r.minute + 40,
       lo + 0.6, r.minute + 55
FROM (
    SELECT p.id AS pid, :first + 60 * m.i AS minute,
           10 + (p.id * 31 + m.i) % 5 AS cnt,
           2.0 + (p.id % 10) * 0.5 + ((p.id * 7 + m.i * 13) % 10) / 10.0 AS lo,
           1.5 + ((m.i * 17 + p.id) % 50) / 10.0 AS hi
    FROM participants AS p, m
) AS r
"""


def names(participants: int) -> list[str]:
    return [f"player{i:02d}" for i in range(participants)]


def seed(path: Path, participants: int = 50, days: int = 7, hub_port: int = 5004) -> int:
    """Create the database at ``path`` (which must not exist); returns the rows written.
    The newest minute is the current one, the oldest ``days`` ago, so the hub's retention
    (``days``) keeps all of them."""
    minutes = days * 24 * 60
    now = time.time()
    newest = int(now // 60 * 60)
    first = newest - (minutes - 1) * 60
    connection = sqlite3.connect(path)
    try:
        connection.executescript(SCHEMA)
        connection.executemany(
            "INSERT INTO participants (id, name, address, hub_port, first_seen, last_seen)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (i + 1, name, f"192.0.2.{i + 1}:5004", hub_port, first, newest + 59)
                for i, name in enumerate(names(participants))
            ],
        )
        connection.execute(ROWS, {"minutes": minutes, "first": first})
        connection.commit()
        connection.execute("PRAGMA journal_mode=WAL")  # as the store opens it
        (count,) = connection.execute("SELECT count(*) FROM latency_minutes").fetchone()
    finally:
        connection.close()
    return int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--hub-port", type=int, default=5004)
    args = parser.parse_args()
    started = time.monotonic()
    rows = seed(args.path, args.participants, args.days, args.hub_port)
    print(f"{rows} rows in {time.monotonic() - started:.2f} s: {args.path}")


if __name__ == "__main__":
    main()
