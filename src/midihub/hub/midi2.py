"""Network MIDI 2.0 clients as participants: the glue between one port's sans-IO
``Midi2Host`` (midihub.midi2) and the hub, still without I/O.

A client is a ``Guest`` like a browser: one admission (``Hub.admit``: the port's
``max_participants``, plus ``sessions_per_source`` here), the same ``Intake`` caps, note
tracking and listeners (``Hub.play``), its RTT from pings (``Hub.measured``) and its
release when it goes (``Hub.depart``: Bye, timeout, never proving its address) or loses
what nothing repaired (``Hub.release_held``). UMP becomes the room's MIDI 1.0 byte
stream at this boundary, one ``UmpBridge`` per client. ``midihub.net.midi2`` moves the
datagrams.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Final

from midihub.hub.endpoint import session_name
from midihub.hub.guest import Guest
from midihub.hub.hub import Hub
from midihub.hub.spec import EndpointSpec, HubSpec
from midihub.midi2 import (
    ByeReason,
    Departed,
    Invited,
    Midi2Host,
    Midi2Settings,
    RttMeasured,
    SessionReset,
    UmpLost,
    UmpMessage,
    UmpReceived,
)
from midihub.midi2.translate import UmpBridge
from midihub.rtp import Address, Command, LeaveReason, Limits
from midihub.rtp.limits import SourceCounts, source_key
from midihub.rtp.packets import clean_name

TRANSPORT: Final = "midi2"
MAX_NAME_BYTES: Final = 98  # an endpoint name's limit in an Invitation


def product_id(hub: HubSpec, port: int) -> str:
    """The ProductInstanceId of one Network MIDI 2.0 port: ``[midi2] product_id``, or
    the hub name (ASCII letters, digits, dashes) and the port; at most 42 characters."""
    if hub.midi2.product_id:
        return hub.midi2.product_id
    base = re.sub(r"[^A-Za-z0-9-]+", "-", hub.name).strip("-") or "midihub"
    suffix = f"-{port}"
    return base[: 42 - len(suffix)] + suffix


def midi2_settings(hub: HubSpec, spec: EndpointSpec) -> Midi2Settings:
    """One port's host settings from the configuration: the one place they are made, at
    start and at each reload alike. The room's ``key`` is the shared secret."""
    assert spec.midi2 is not None
    settings = hub.midi2
    return Midi2Settings(
        name=session_name(hub.name, spec),
        product_id=product_id(hub, spec.midi2),
        secret=spec.key,
        users=dict(settings.users),
        fec=settings.fec,
        ping_interval=settings.ping_interval,
        timeout=hub.timeout,
        max_pending=hub.limits.max_pending,
        pending_per_source=hub.limits.pending_per_source,
    )


def leave_reason(event: Departed) -> LeaveReason:
    """The log's and the API's word for why a client is gone."""
    if event.by_client:
        return LeaveReason.BYE
    if not event.proven:
        return LeaveReason.HANDSHAKE_TIMEOUT  # never proved its address
    return _LEAVE_REASONS.get(event.reason, LeaveReason.CLOSED)


# The hub's own Byes, as the log words them (a client's Bye is always ``bye``).
_LEAVE_REASONS: Final[dict[int, LeaveReason]] = {
    ByeReason.TIMEOUT: LeaveReason.TIMEOUT,
    ByeReason.TOO_MANY_MISSING: LeaveReason.LIMIT,  # it kept losing what it sent
    ByeReason.POWER_DOWN: LeaveReason.SHUTDOWN,
}


def bye_reason(reason: LeaveReason) -> int:
    """The Bye the hub sends when it ends a client for ``reason``."""
    if reason is LeaveReason.SHUTDOWN:
        return ByeReason.POWER_DOWN
    return ByeReason.USER_TERMINATED


class Midi2Guest(Guest):
    """One joined Network MIDI 2.0 client. What the room plays goes out as UMP Data
    (``host.send``: sequence numbers, FEC, history), flushed by the socket layer."""

    transport = TRANSPORT

    def __init__(
        self, port: Midi2Port, name: str, address: Address, product: str, now: float
    ) -> None:
        super().__init__(name, address, now)
        self.port = port
        self.product_id = product
        settings = port.settings
        self.bridge = UmpBridge(settings.name, settings.product_id)

    def deliver(self, commands: Sequence[Command], now: float) -> None:
        to_client = self.bridge.to_client
        messages = [ump for _, message in commands for ump in to_client(message)]
        if messages:
            self.port.send(self, messages, now)

    def close(self, reason: LeaveReason) -> None:
        self.port.ended(self, bye_reason(reason))


class Midi2Port:
    """One Network MIDI 2.0 UDP port, joined to hub port ``endpoint_port``: its host,
    its clients by address, and what they cost."""

    def __init__(
        self,
        hub: Hub,
        midi2_port: int,
        spec: EndpointSpec,
        rng: random.Random,
        now: float,
    ) -> None:
        self.hub = hub
        self.midi2_port = midi2_port
        self.endpoint_port = spec.port
        self.settings = midi2_settings(hub.spec, spec)
        self.limits: Limits = hub.spec.limits
        self.host = Midi2Host(self.settings, rng, now)
        self.guests: dict[Address, Midi2Guest] = {}
        self._sources = SourceCounts()
        self.refused: Counter[str] = Counter()  # invitations refused: "full", "source-full"
        self.dropped: Counter[str] = Counter()  # UMP without a MIDI 1.0 form, of clients gone
        self.send_errors = 0
        # Something happened since the socket layer last drained us: datagrams to send,
        # and perhaps an earlier timer.
        self.dirty = False
        self.now = now  # the latest time the hub or the socket layer gave us

    def configure(self, hub: HubSpec, spec: EndpointSpec, now: float) -> None:
        """A reload: the new name, FEC depth, timers and caps, live. New credentials (the
        room's key, ``[midi2.users]``) end the clients that joined with the old ones, as
        a browser's key change does: they invite again, and authenticate anew."""
        self.now = max(self.now, now)
        self.dirty = True
        settings = midi2_settings(hub, spec)
        if (settings.secret, settings.users) != (self.settings.secret, self.settings.users):
            self.close(LeaveReason.REMOVED, now)
        self.settings = settings
        self.limits = hub.limits
        self.host.configure(settings, now)

    @property
    def dropped_by_kind(self) -> Counter[str]:
        """What the bridges dropped, of clients here and gone."""
        total = Counter(self.dropped)
        for guest in self.guests.values():
            total.update(guest.bridge.dropped)
        return total

    # -- from the socket layer -------------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        self.now = now
        self.dirty = True
        self._handle(self.host.receive(data, addr, now), now)

    def tick(self, now: float) -> None:
        self.now = now
        self.dirty = True
        self._handle(self.host.tick(now), now)

    def next_deadline(self) -> float | None:
        return self.host.next_deadline()

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        return self.host.datagrams_to_send()

    def close(self, reason: LeaveReason, now: float) -> None:
        """The port goes (reload) or the hub stops: each client is released to the
        others and told Bye."""
        self.now = now
        for guest in list(self.guests.values()):
            self.hub.depart(guest, reason, now)
            guest.close(reason)

    # -- the host's events -------------------------------------------------------

    def _handle(self, events: Sequence[object], now: float) -> None:
        for event in events:
            if isinstance(event, UmpReceived):
                self._ump(event, now)
            elif isinstance(event, Invited):
                self._invited(event, now)
            elif isinstance(event, RttMeasured):
                guest = self.guests.get(event.addr)
                if guest is not None:
                    self.hub.measured(guest, event.rtt, now)
            elif isinstance(event, SessionReset | UmpLost):
                self._lost(event, now)
            elif isinstance(event, Departed):
                guest = self._forget(event.addr)
                if guest is not None:
                    self.hub.depart(guest, leave_reason(event), now)

    def _ump(self, event: UmpReceived, now: float) -> None:
        guest = self.guests.get(event.addr)
        if guest is None:
            return
        bridge = guest.bridge
        commands: list[Command] = []
        replies: list[UmpMessage] = []
        for message in event.messages:
            midi, answers = bridge.from_client(message)
            commands += [(0, data) for data in midi]
            replies += answers
        if replies:  # Endpoint Discovery, Stream Configuration...
            self.host.send(guest.address, replies, now)
        session = self.host.session(guest.address)
        if session is not None:
            guest.packets_received = session.packets_received
            guest.packets_lost = session.packets_lost
        if commands:
            self.hub.play(guest, commands, now)

    def _lost(self, event: SessionReset | UmpLost, now: float) -> None:
        """The client's numbering restarted, or a gap was skipped: a SysEx open across
        it (in the bridge, or already segmented into the Intake) is dropped and counted,
        never glued to the next one; after a loss the notes it held are released at once
        (their NoteOff may be among what was lost; a note it plays after is its own)."""
        guest = self.guests.get(event.addr)
        if guest is None:
            return
        guest.bridge.packet_lost()
        guest.intake.packet_lost()
        session = self.host.session(guest.address)
        if session is not None:
            guest.packets_lost = session.packets_lost
        if event.lost:
            self.hub.release_held(guest, now)

    def _invited(self, event: Invited, now: float) -> None:
        """An authenticated invitation: the hub's one admission, and the per-source cap."""
        addr = event.addr
        old = self._forget(addr)
        if old is not None:  # invited again from the same address: the old one is gone
            self.hub.depart(old, LeaveReason.CLOSED, now)
        source = source_key(addr[0])
        if self._sources.of(source) >= self.limits.sessions_per_source:
            self.refused["source-full"] += 1
            self.host.refuse(addr, ByeReason.TOO_MANY_SESSIONS, now)
            return
        name = clean_name(event.name, MAX_NAME_BYTES) or "midi2"
        product = clean_name(event.product_id, 42)
        guest = Midi2Guest(self, name, addr, product, now)
        refusal = self.hub.admit(self.endpoint_port, guest, now)
        if refusal is not None:
            self.refused["full" if "full" in refusal else "closed"] += 1
            self.host.refuse(addr, ByeReason.TOO_MANY_SESSIONS, now)
            return
        self.guests[addr] = guest
        self._sources.add(source)
        self.host.accept(addr, now)

    # -- from the hub -------------------------------------------------------------

    def send(self, guest: Midi2Guest, messages: list[UmpMessage], now: float) -> None:
        if self.guests.get(guest.address) is guest:
            self.dirty = True
            self.host.send(guest.address, messages, now)

    def ended(self, guest: Midi2Guest, reason: int) -> None:
        """The hub ended ``guest`` (it already released it): Bye."""
        if self._forget(guest.address) is guest:
            self.dirty = True
            self.host.bye(guest.address, reason, self.now)

    def _forget(self, addr: Address) -> Midi2Guest | None:
        guest = self.guests.pop(addr, None)
        if guest is not None:
            self._sources.remove(source_key(addr[0]))
            self.dropped.update(guest.bridge.dropped)
        return guest

    def __repr__(self) -> str:
        return f"<Midi2Port {self.midi2_port} -> {self.endpoint_port}: {len(self.guests)}>"
