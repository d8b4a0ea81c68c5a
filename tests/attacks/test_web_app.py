"""The process around the web side: the generated token file (never through a
planted symlink, never a file someone else could have written), a database that
cannot be opened (exit 1 before any UDP port opens), and ``web.public``'s default."""

from __future__ import annotations

import logging
import socket
import stat
from pathlib import Path

import pytest

from midihub.app import token_file
from midihub.config import WebConfig
from tests.support import free_ports, serve_to_the_end


def test_a_symlink_planted_at_the_token_path_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "authorized_keys"
    target.write_text("precious\n")
    target.chmod(0o644)
    path = tmp_path / "midihub.token"
    path.symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="midihub"):
        token = token_file(path)
    assert target.read_text() == "precious\n"  # untouched
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode) and not path.is_symlink()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert path.read_text() == token + "\n" and len(token) >= 16
    assert "not a private regular file" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["authorized_keys", "midihub.token"]


def test_a_private_token_file_is_kept_and_a_readable_one_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "midihub.token"
    first = token_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token_file(path) == first  # same hub restarted: `midihub panic` keeps working
    path.chmod(0o644)  # someone else may have read (or written) it
    with caplog.at_level(logging.WARNING, logger="midihub"):
        second = token_file(path)
    assert second != first and "writing a new one" in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_token_file_that_cannot_be_written_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="midihub"):
        token = token_file(blocker / "midihub.token")
    assert len(token) >= 16
    assert "cannot write the token file" in caplog.text


async def test_a_database_that_cannot_be_opened_exits_1_before_any_udp_port(
    tmp_path: Path,
) -> None:
    port_in, port_out = free_ports(2)
    (tmp_path / "midihub.toml").write_text(f"[groups]\nBand = [{port_in}, {port_out}]\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    database = blocker / "midihub.db"  # its directory is a regular file
    code, log = await serve_to_the_end(
        "--bind", "127.0.0.1", "--db", str(database), cwd=tmp_path, timeout=30
    )
    lines = log.splitlines()
    assert code == 1, lines
    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1, lines
    assert f"cannot open the database {database}" in errors[0]
    assert not any("listening" in line for line in lines), lines
    assert not any("Traceback" in line for line in lines), lines
    for port in (port_in, port_in + 1, port_out, port_out + 1):  # never bound: still free
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", port))


def test_pages_are_private_by_default_when_the_web_port_leaves_loopback() -> None:
    assert WebConfig().pages_public is True  # 127.0.0.1:8080
    assert WebConfig(listen="[::1]:8080").pages_public is True
    assert WebConfig(listen="localhost:8080").pages_public is True
    assert WebConfig(listen="0.0.0.0:8080").pages_public is False
    assert WebConfig(listen="[::]:8080").pages_public is False
    assert WebConfig(listen="203.0.113.7:8080").pages_public is False
    assert WebConfig(listen="0.0.0.0:8080", public=True).pages_public is True
    assert WebConfig(listen="127.0.0.1:8080", public=False).pages_public is False


def test_tls_cert_and_key_go_together() -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        WebConfig(tls_cert="/etc/midihub/cert.pem")
    with pytest.raises(ValueError, match="not a host name"):
        WebConfig(hosts=["evil example"])
    assert WebConfig(hosts=["Hub.Example.org", "[2001:db8::1]"]).hosts == [
        "hub.example.org",
        "2001:db8::1",
    ]
