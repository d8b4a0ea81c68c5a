"""Outbound links: remote RTP MIDI endpoints the hub invites and keeps joined.

Sans-IO like the rest of the hub: a ``Link`` only decides *when* to try again
(exponential back-off, reset by a successful join); the socket layer resolves the
address and the ``SessionTable`` does the invitation.

Hub-to-hub links never loop: a link introduces itself with a name ending in
``LINK_MARK``, so the remote hub knows the session is a hub too, and MIDI that
arrives from a hub link is passed to local participants only, never to another
hub link. Every message therefore crosses at most one hub-to-hub hop.
"""

from __future__ import annotations

from typing import Final

from midihub.hub.spec import LinkSpec
from midihub.rtp import LeaveReason, Session

LINK_MARK: Final = "(midihub link)"
BACKOFF_FIRST: Final = 1.0  # seconds before the first retry
BACKOFF_MAX: Final = 30.0


def link_name(hub_name: str, label: str) -> str:
    return f"{hub_name} {label} {LINK_MARK}"


def is_link_name(name: str) -> bool:
    return name.endswith(LINK_MARK)


class Link:
    """One configured link and its retry schedule."""

    __slots__ = (
        "attempts",
        "backoff",
        "last_error",
        "next_attempt",
        "resolving",
        "session",
        "spec",
        "up_since",
    )

    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
        self.session: Session | None = None
        self.resolving = False  # the socket layer is looking up the address
        self.next_attempt = 0.0
        self.backoff = BACKOFF_FIRST
        self.attempts = 0  # invitations since the link was last up
        self.up_since: float | None = None
        self.last_error: LeaveReason | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.spec.remote, self.spec.port

    @property
    def up(self) -> bool:
        return self.up_since is not None

    def due(self, now: float) -> bool:
        return self.session is None and not self.resolving and now >= self.next_attempt

    def joined(self, now: float) -> None:
        self.up_since = now
        self.backoff = BACKOFF_FIRST
        self.attempts = 0
        self.last_error = None

    def failed(self, now: float, reason: LeaveReason) -> None:
        """The session ended or could not start: try again after the back-off."""
        self.session = None
        self.resolving = False
        self.up_since = None
        self.last_error = reason
        self.next_attempt = now + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def __repr__(self) -> str:
        state = "up" if self.up else f"down ({self.last_error or 'not yet tried'})"
        return f"<Link {self.spec.remote} → :{self.spec.port} {state}>"
