"""The fleet directory in PostgreSQL: plain SQL on one psycopg connection.

Every function here blocks: ``Fleet`` calls them on its worker thread, never on the
event loop. Every time is the SERVER's (``now()`` in SQL): the hubs' clocks never reach
the directory, so a hub whose clock is off is neither shown down nor kept alive by it.

Tables (created idempotently under an advisory lock, so hubs starting together do not
race on ``CREATE TABLE IF NOT EXISTS``): ``fleet_hubs`` (one row per hub name: the
instance that holds it, its address, version, start and last heartbeat, and its own
down bound), ``fleet_rooms`` and ``fleet_participants`` (a hub's, replaced at every
heartbeat, deleted with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from midihub.fleet.records import HubRecord, ParticipantRecord, RoomRecord
from midihub.hub.spec import FleetSpec

Connection = psycopg.Connection[tuple[Any, ...]]
LostConnection = psycopg.OperationalError

SCHEMA_LOCK = 0x6D6964696875  # pg_advisory_xact_lock key: "midihu"
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fleet_hubs (
        name text PRIMARY KEY,
        instance text NOT NULL,
        address text NOT NULL,
        version text NOT NULL,
        started timestamptz NOT NULL,
        last_seen timestamptz NOT NULL,
        down_after double precision NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS fleet_rooms (
        hub text NOT NULL REFERENCES fleet_hubs (name) ON DELETE CASCADE,
        name text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('room', 'group')),
        ports integer[] NOT NULL,
        PRIMARY KEY (hub, name)
    )""",
    """CREATE TABLE IF NOT EXISTS fleet_participants (
        hub text NOT NULL REFERENCES fleet_hubs (name) ON DELETE CASCADE,
        id text NOT NULL,
        name text NOT NULL,
        port integer NOT NULL,
        transport text NOT NULL,
        rtt_ms double precision,
        PRIMARY KEY (hub, id)
    )""",
)

# Take the name when it is free, ours (this instance: a renewal), or held by a hub that
# stopped renewing within its own bound; otherwise nothing is returned: refused.
REGISTER = """
INSERT INTO fleet_hubs AS h (name, instance, address, version, started, last_seen, down_after)
VALUES (%(name)s, %(instance)s, %(address)s, %(version)s, now(), now(), %(down_after)s)
ON CONFLICT (name) DO UPDATE SET
    instance = excluded.instance,
    address = excluded.address,
    version = excluded.version,
    started = CASE WHEN h.instance = excluded.instance THEN h.started ELSE now() END,
    last_seen = now(),
    down_after = excluded.down_after
WHERE h.instance = excluded.instance
   OR h.last_seen + h.down_after * interval '1 second' < now()
RETURNING h.started
"""
HOLDER = """
SELECT address, extract(epoch FROM now() - last_seen) FROM fleet_hubs WHERE name = %s
"""
EXPIRE = "DELETE FROM fleet_hubs WHERE last_seen < now() - %s * interval '1 second'"
DEREGISTER = "DELETE FROM fleet_hubs WHERE name = %s AND instance = %s"
HUBS = """
SELECT name, address, version, started, last_seen,
       last_seen + down_after * interval '1 second' > now()
FROM fleet_hubs ORDER BY name
"""
ROOMS = "SELECT hub, name, kind, ports FROM fleet_rooms ORDER BY hub, name"
PARTICIPANTS = """
SELECT hub, id, name, port, transport, rtt_ms FROM fleet_participants ORDER BY hub, port, id
"""
CONNECT_TIMEOUT = 5  # seconds (libpq's connect_timeout)
STATEMENT_TIMEOUT_MS = 10_000
TCP_USER_TIMEOUT_MS = 10_000  # a silent network fails a statement instead of hanging it


@dataclass(frozen=True, slots=True)
class Refused:
    """Another live hub holds our name: where it is, and how long ago it renewed."""

    address: str
    seconds_ago: float


def connect(spec: FleetSpec) -> Connection:
    """One connection, bounded in every wait (connect, statements, a silent peer)."""
    return psycopg.connect(
        spec.database,
        autocommit=True,  # each ``transaction()`` block is one BEGIN ... COMMIT
        connect_timeout=CONNECT_TIMEOUT,
        application_name=f"midihub {spec.name}"[:63],
        # A hub cut off mid-transaction must not hold rows (or locks) for long.
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
        f" -c idle_in_transaction_session_timeout={STATEMENT_TIMEOUT_MS}",
        tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
    )


def create_schema(connection: Connection) -> None:
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for statement in SCHEMA:
            connection.execute(statement)


def heartbeat(
    connection: Connection,
    spec: FleetSpec,
    instance: str,
    version: str,
    rooms: tuple[RoomRecord, ...],
    participants: tuple[ParticipantRecord, ...],
) -> Refused | None:
    """Register or renew this hub with its rooms and participants, and delete whatever
    expired (any hub does it): one transaction. Refused when another live instance
    holds the name."""
    with connection.transaction():
        connection.execute(EXPIRE, (spec.expire_after,))
        taken = connection.execute(
            REGISTER,
            {
                "name": spec.name,
                "instance": instance,
                "address": spec.address,
                "version": version,
                "down_after": spec.down_after,
            },
        ).fetchone()
        if taken is None:
            row = connection.execute(HOLDER, (spec.name,)).fetchone()
            address, ago = (str(row[0]), float(str(row[1]))) if row else ("?", 0.0)
            return Refused(address, ago)
        connection.execute("DELETE FROM fleet_rooms WHERE hub = %s", (spec.name,))
        connection.execute("DELETE FROM fleet_participants WHERE hub = %s", (spec.name,))
        with connection.cursor() as cursor:
            if rooms:
                cursor.executemany(
                    "INSERT INTO fleet_rooms (hub, name, kind, ports) VALUES (%s, %s, %s, %s)",
                    [(spec.name, r.name, r.kind, list(r.ports)) for r in rooms],
                )
            if participants:
                cursor.executemany(
                    "INSERT INTO fleet_participants (hub, id, name, port, transport, rtt_ms)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (spec.name, p.id, p.name, p.port, p.transport, p.rtt_ms)
                        for p in participants
                    ],
                )
    return None


def deregister(connection: Connection, name: str, instance: str) -> None:
    """A clean stop: the name is free at once (a restart takes it without waiting)."""
    with connection.transaction():
        connection.execute(DEREGISTER, (name, instance))


def read(connection: Connection) -> tuple[HubRecord, ...]:
    """Every hub with its rooms and participants, from one snapshot of the database."""
    with connection.transaction():
        connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        hubs = connection.execute(HUBS).fetchall()
        rooms: dict[str, list[RoomRecord]] = {}
        for hub, name, kind, ports in connection.execute(ROOMS):
            rooms.setdefault(str(hub), []).append(
                RoomRecord(str(name), "group" if kind == "group" else "room", tuple(ports))
            )
        participants: dict[str, list[ParticipantRecord]] = {}
        for hub, pid, name, port, transport, rtt in connection.execute(PARTICIPANTS):
            participants.setdefault(str(hub), []).append(
                ParticipantRecord(
                    str(pid),
                    str(name),
                    int(port),
                    str(transport),
                    None if rtt is None else float(rtt),
                )
            )
    records = []
    for name, address, version, started, last_seen, up in hubs:
        assert isinstance(started, datetime) and isinstance(last_seen, datetime)
        records.append(
            HubRecord(
                str(name),
                str(address),
                str(version),
                started,
                last_seen,
                bool(up),
                tuple(rooms.get(str(name), ())),
                tuple(participants.get(str(name), ())),
            )
        )
    return tuple(records)


def server_now(connection: Connection) -> datetime:
    with connection.transaction():
        row = connection.execute("SELECT now()").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]
