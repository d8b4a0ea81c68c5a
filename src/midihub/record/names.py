"""Text from senders (session names) and from the configuration made safe for file
names, SMF track names and log lines: no control characters, bounded length."""

from __future__ import annotations

import re
import unicodedata

MAX_NAME = 64
"""Characters kept of a player's name (RTP MIDI allows far longer ones)."""

_FILE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
RECORDING_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
"""What a recording id (its file stem) may look like; anything else is refused."""


def display_name(text: str, limit: int = MAX_NAME) -> str:
    """A name fit for a track name, a marker or a log line: control and format
    characters (terminal escapes, bidi overrides) become spaces, runs collapse."""
    cleaned = "".join(
        " " if unicodedata.category(ch)[0] in ("C", "Z") else ch for ch in text[: limit * 4]
    )
    return " ".join(cleaned.split())[:limit] or "(unnamed)"


def file_part(text: str, limit: int = 40) -> str:
    """ASCII letters, digits, ``.``, ``_`` and ``-`` only (other runs become ``-``),
    never starting with a dot: safe on every filesystem and in a URL."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    part = _FILE_UNSAFE.sub("-", ascii_text).strip("-.")[:limit].strip("-.")
    return part or "port"
