"""A listening port pair with its name, role and sessions."""

from __future__ import annotations

import random

from midihub.hub.guest import Guest
from midihub.hub.links import Link
from midihub.hub.spec import EndpointSpec
from midihub.hub.stats import ParticipantStats, Tally
from midihub.rtp import Limits, Peer, SessionSettings, SessionTable


def session_name(hub_name: str, spec: EndpointSpec) -> str:
    """The name peers list this port under (OK replies, Bonjour): which hub, and which
    group and direction or room."""
    return f"{hub_name} {spec.label}"


class Endpoint:
    """One hub port (control P, data P+1) as configured, with its sans-IO ``SessionTable``."""

    __slots__ = (
        "guests",
        "hub_links",
        "journal_repairs",
        "messages_in",
        "messages_out",
        "panics",
        "spec",
        "stats",
        "table",
        "tally",
    )

    def __init__(
        self,
        spec: EndpointSpec,
        hub_name: str,
        settings: SessionSettings,
        rng: random.Random,
        max_sessions: int,
        limits: Limits | None = None,
    ) -> None:
        self.spec = spec
        self.messages_in = 0  # MIDI messages received from participants here
        self.messages_out = 0  # MIDI messages sent to participants here (each copy)
        self.journal_repairs = 0
        self.panics = 0
        self.guests: list[Guest] = []  # participants that are not RTP sessions
        self.stats: dict[str, ParticipantStats] = {}  # by public id, while connected
        self.tally = Tally()  # messages each participant here was sent by forwards to all
        # Sessions here with another hub, by public id: ours (their Link), theirs (None).
        self.hub_links: dict[str, Link | None] = {}
        self.table = SessionTable(
            session_name(hub_name, spec),
            rng=rng,
            settings=settings,
            max_sessions=max_sessions,
            limits=limits,
            others=self._guest_count,  # admission counts guests with the sessions
        )

    @property
    def participants(self) -> list[Peer]:
        """Everyone here: joined RTP sessions (replays and links included), then guests."""
        return [*self.table.established, *self.guests]

    def _guest_count(self) -> int:
        return len(self.guests)

    def stats_of(self, public_id: str) -> ParticipantStats:
        stats = self.stats.get(public_id)
        if stats is None:
            stats = self.stats[public_id] = ParticipantStats(self.tally)
        return stats

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def label(self) -> str:
        return self.spec.label

    def __repr__(self) -> str:
        return f"<Endpoint {self.label} :{self.port}>"
