"""One exception type per side of the wire, as h11 does."""


class ProtocolError(ValueError):
    """The peer sent bytes we cannot accept (malformed, truncated, unknown kind).

    Decoders raise only this, so a caller can count-and-drop with one ``except``.
    """


class LocalProtocolError(RuntimeError):
    """We asked the protocol to do something it cannot (e.g. send on a closed session)."""
