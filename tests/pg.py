"""A throw-away PostgreSQL cluster for the fleet tests: Debian's ``postgresql`` server
(``make postgres`` installs it), initialised in a temporary directory and started on a
free loopback port with its socket in a temporary directory, fsync off. As root the
server runs as the ``postgres`` user (PostgreSQL refuses to run as root).

- ``pg`` (session-scoped): the running ``PgCluster``; stopped and removed at the end.
- ``pg_url`` (per test): the URL of a new, empty database on it, so tests never see
  each other's rows.

A machine without ``initdb`` fails these tests with the command that installs it:
they are never skipped (CI must run them).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import LOCALHOST, free_tcp_port

READY_TIMEOUT = 60.0  # seconds for a (re)started server to accept connections
SUPERUSER = "postgres"


def find_bin(name: str) -> Path:
    """A PostgreSQL server program: Debian keeps them out of PATH, per major version
    (the newest wins)."""
    found = shutil.which(name)
    if found:
        return Path(found)
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if not versions:
        pytest.fail(
            f"PostgreSQL's {name} is not installed: `make postgres` installs Debian's "
            "postgresql package (the fleet tests need a real server and are never skipped)",
            pytrace=False,
        )
    return Path(versions[-1])


class PgCluster:
    """One server: ``url(database)``, ``stop()`` (``pg_ctl stop -m fast``) and ``start()``
    again, on the same port and data."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="midihub-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.sockets.mkdir()
        self.port = free_tcp_port()
        self.log = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)
            for path in (self.root, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", SUPERUSER, "--"]
        self._databases = itertools.count(1)
        self._run(
            find_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        settings = {
            "listen_addresses": f"'{LOCALHOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockets}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "16MB",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.start()

    def _run(self, program: Path, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(program), *args], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{program.name} failed: {done.stderr}{done.stdout}\n{log}")

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        self._run(
            find_bin("pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60"
        )
        self.wait_ready()

    def running(self) -> bool:
        status = subprocess.run(
            [*self._as, str(find_bin("pg_ctl")), "status", "-D", str(self.data)],
            capture_output=True,
            timeout=30,
        )
        return status.returncode == 0

    def ensure_running(self) -> None:
        """Started again if a test stopped it and failed before starting it."""
        if not self.running():
            self.start()
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        self._run(find_bin("pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")

    def wait_ready(self) -> None:
        """pg_isready until it says yes (by condition; generous bound)."""
        deadline = time.monotonic() + READY_TIMEOUT
        ready = find_bin("pg_isready")
        while True:
            done = subprocess.run(
                [str(ready), "-h", LOCALHOST, "-p", str(self.port), "-U", SUPERUSER, "-q"],
                timeout=30,
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL not ready after {READY_TIMEOUT} s")
            time.sleep(0.05)

    def url(self, database: str = SUPERUSER) -> str:
        return f"postgresql://{SUPERUSER}@{LOCALHOST}:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database's URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._databases)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def pg_url(pg: PgCluster) -> str:
    pg.ensure_running()  # a test before may have stopped it and failed
    return pg.new_database()
