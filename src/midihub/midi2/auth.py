"""Invitation authentication: a 16-octet nonce from the host, a SHA-256 digest back.

Shared secret: SHA-256(nonce ‖ secret). User: SHA-256(nonce ‖ user ‖ password), the
user name sent beside the digest. Plain concatenation, not HMAC: that is what
amidi2net, Zephyr and pymidi2 do (and interoperate with); docs/protocol.md.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Mapping

from midihub.midi2.commands import NONCE_SIZE


def new_nonce(rng: random.Random) -> bytes:
    return rng.randbytes(NONCE_SIZE)


def secret_digest(nonce: bytes, secret: str) -> bytes:
    return hashlib.sha256(nonce + secret.encode("utf-8")).digest()


def user_digest(nonce: bytes, user: str, password: str) -> bytes:
    return hashlib.sha256(nonce + user.encode("utf-8") + password.encode("utf-8")).digest()


def check_secret(nonce: bytes, secret: str, digest: bytes) -> bool:
    return hmac.compare_digest(secret_digest(nonce, secret), digest)


def check_user(nonce: bytes, users: Mapping[str, str], user: str, digest: bytes) -> bool:
    """True if ``user`` is known and ``digest`` proves its password. An unknown user
    costs the same hash as a known one and gives the same answer as a wrong password
    (Zephyr's way: no user enumeration)."""
    password = users.get(user)
    expected = user_digest(nonce, user, password if password is not None else "\x00")
    return hmac.compare_digest(expected, digest) and password is not None
