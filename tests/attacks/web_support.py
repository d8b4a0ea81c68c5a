"""Helpers for the web attack tests: a hub with its web side configured as a test
needs, throwaway TLS certificates, and raw HTTP requests with any Host header."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from midihub.web import Api, WebServer
from midihub.web.connections import ConnectionLimits
from tests.support import TOKEN, RunningHub, make_config


@asynccontextmanager
async def web_hub(
    text: str,
    *,
    public: bool = True,
    tls: tuple[Path, Path] | None = None,
    limits: ConnectionLimits | None = None,
    **options: Any,
) -> AsyncIterator[tuple[RunningHub, Api, WebServer]]:
    """A hub on real sockets with its API; ``options`` go to ``Api`` (hosts, caps),
    ``limits`` to the web port's connection gate."""
    with RunningHub(make_config(text)) as running:
        loop = asyncio.get_running_loop()
        api = Api(running.hub, token=TOKEN, public=public, hub_time=loop.time, **options)
        running.server.on_forward = api.metrics.observe_forward
        cert, key = (str(tls[0]), str(tls[1])) if tls else (None, None)
        web = WebServer(
            api.application(),
            "127.0.0.1",
            0,
            tls_cert=cert,
            tls_key=key,
            limits=limits,
            registry=api.metrics.registry,
        )
        await web.start()
        try:
            yield running, api, web
        finally:
            await api.aclose()
            await web.close()


def make_certificate(directory: Path, serial: int, name: str = "cert") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, valid one day, written
    as ``name``.pem / ``name``.key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "midihub test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def spki_hash(cert_path: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what Chromium's
    --ignore-certificate-errors-spki-list trusts, exactly this key and nothing else."""
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def serial_of(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number


async def raw_request(port: int, request: bytes, limit: int = 1 << 20) -> tuple[int, bytes]:
    """Send ``request`` as is (any Host header, any bytes) and read the whole answer:
    (status, head and body). The request should say ``Connection: close``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(limit), 10)
        while True:
            more = await asyncio.wait_for(reader.read(limit), 10)
            if not more:
                break
            answer += more
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer
