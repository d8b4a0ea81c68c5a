"""Text a sender chose, made inert for a terminal.

Participant names, port labels, message descriptions and the hub's error text all
reach ``midihub status`` and ``midihub monitor`` from the network. A name could
carry an escape sequence (clear the screen, set the window title), a newline that
forges an output line, a bidi override that reverses what follows, or thousands of
characters. The hub may sanitise names too, but the CLI can talk to any hub, so it
never trusts it: every such string goes through :func:`printable` before it is
shown, and is shown as plain text (a ``rich`` ``Text``, never markup).

The form: each character Python does not call printable (C0 and C1 controls, DEL,
format characters such as U+202E, line and paragraph separators, spaces other than
" ", unpaired surrogates) is written as its escape, ``\\x1b``, ``\\u202e`` or
``\\U000e0001``, so it is visible and nothing reaches the terminal as a control.
Everything else (``[/x]``, accents, CJK, emoji) is kept as it is. A result wider
than ``width`` terminal cells is cut on a whole character or escape and ends in
``…``.
"""

from __future__ import annotations

from rich.cells import cell_len

NAME_WIDTH = 40  # cells: a 64-byte name (the hub's cap) fits; a 20 KB one does not
MESSAGE_WIDTH = 200  # cells: error text and message descriptions
ELLIPSIS = "…"


def _shown(char: str) -> str:
    if char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object, width: int = NAME_WIDTH) -> str:
    """``text`` as one line of at most ``width`` cells that a terminal only displays."""
    raw = text if isinstance(text, str) else str(text)
    # Each character shows as at least one, so past width + 1 nothing more is seen.
    pieces = [_shown(char) for char in raw[: width + 1]]
    if len(raw) <= width and cell_len("".join(pieces)) <= width:
        return "".join(pieces)
    kept: list[str] = []
    used = cell_len(ELLIPSIS)
    for piece in pieces:
        cells = cell_len(piece)
        if used + cells > width or len(kept) >= width - 1:
            break
        kept.append(piece)
        used += cells
    return "".join(kept) + ELLIPSIS
