"""Participants that are not RTP sessions, such as a browser over WebSocket.

The hub routes between ``Peer``s. RTP sessions live in each port's ``SessionTable`` and get
MIDI as encoded RTP sections; a ``Guest`` gets the plain commands through
``deliver`` and is told to go with ``close``. Note tracking, stats, panic, the API,
the monitor and metrics treat both alike (``Endpoint.participants``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from midihub.midi.held import NoteState
from midihub.rtp import Command, Counters, LeaveReason, Limits, Who
from midihub.rtp.intake import Intake


class Guest(abc.ABC):
    """The public face the hub needs (see ``midihub.rtp.Peer``) plus two verbs. The
    transport fills in ``rtt`` and the packet counters as it measures them."""

    transport = "guest"

    def __init__(self, name: str, address: tuple[Any, ...], now: float) -> None:
        self.public_id = ""  # drawn by the hub on admission
        self.name = name
        self.address = address
        self.created = now
        self.joined_at: float | None = None
        self.rtt: float | None = None
        self.packets_received = 0
        self.packets_lost = 0
        self.held = NoteState()  # kept by the hub from what it plays
        self.intake = Intake(Limits(), Counters(), now)  # its port's caps, set on admission
        self.who = Who("", name, address, self.transport)  # with its id once admitted

    @abc.abstractmethod
    def deliver(self, commands: Sequence[Command], now: float) -> None:
        """MIDI for this participant. Must not block or raise: queue it, and if the
        participant cannot keep up, drop it (and ``close``) on the transport's side."""

    def deliver_from(self, sender: str, commands: Sequence[Command], now: float) -> None:
        """MIDI the participant with API id ``sender`` played. A transport that shows
        who played what (a browser lights keys per player) overrides this; the rest
        get ``deliver``."""
        self.deliver(commands, now)

    @abc.abstractmethod
    def close(self, reason: LeaveReason) -> None:
        """The hub ends this participant (its port went away, the hub stops, an admin
        kicked it); the transport says goodbye. The hub has already forgotten it."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.public_id}>"
