"""One local port pair (control P, data P+1) and every session on it.

``Host`` demultiplexes datagrams to sessions by SSRC (invitation token for
initiator replies), creates responder sessions for new invitations, and keeps the
counters an admin needs. Sans-IO like ``Session``: datagrams go into an outbox.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from midihub.rtp import packets
from midihub.rtp.commands import Section, decode_payload
from midihub.rtp.errors import ProtocolError
from midihub.rtp.events import Event, PeerJoined, PeerLeft
from midihub.rtp.packets import Clock, Feedback, Invitation
from midihub.rtp.session import Address, Datagram, PortKind, Role, Session, State, Timing


@dataclass(slots=True)
class Counters:
    """Per-host packet accounting. ``malformed`` counts datagrams dropped as unreadable."""

    received: int = 0
    malformed: int = 0
    stray: int = 0  # well-formed but for no session we know (late BY, unknown SSRC)
    rejected: int = 0  # invitations answered with NO
    sent: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def drop_malformed(self, error: ProtocolError) -> None:
        self.malformed += 1
        key = str(error).split(":", 1)[0][:60]
        self.reasons[key] = self.reasons.get(key, 0) + 1


class Host:
    """Sessions on one port pair. ``receive``/``tick``/``connect``/``close`` return
    events; the datagrams they cause wait in ``datagrams_to_send()``."""

    def __init__(
        self,
        name: str,
        *,
        rng: random.Random,
        timing: Timing | None = None,
        accept: bool = True,
        max_sessions: int = 64,
    ) -> None:
        self.name = name
        self.timing = timing or Timing()
        self.accept = accept
        self.max_sessions = max_sessions
        self.counters = Counters()
        self._rng = rng
        self._outbox: list[Datagram] = []
        self._by_peer: dict[int, Session] = {}  # peer SSRC → session (once known)
        self._by_token: dict[int, Session] = {}  # our initiations awaiting OK
        self._local_ssrcs: set[int] = set()

    # -- queries ---------------------------------------------------------------

    @property
    def sessions(self) -> list[Session]:
        """Every live session, established or not, initiated here or not."""
        return [*self._by_peer.values(), *self._by_token.values()]

    @property
    def established(self) -> list[Session]:
        return [s for s in self._by_peer.values() if s.state is State.ESTABLISHED]

    def datagrams_to_send(self) -> list[Datagram]:
        out = self._outbox.copy()  # sessions hold this very list: empty it in place
        self._outbox.clear()
        self.counters.sent += len(out)
        return out

    def next_timer(self) -> float | None:
        timers = [s.next_timer() for s in self.sessions]
        return min(timers) if timers else None

    # -- input -----------------------------------------------------------------

    def receive(self, data: bytes, kind: PortKind, addr: Address, now: float) -> list[Event]:
        """One datagram from ``addr`` on our ``kind`` port. Never raises on bad bytes:
        they are counted in ``counters.malformed`` and dropped."""
        self.counters.received += 1
        try:
            if packets.is_session_packet(data):
                return self._on_session_packet(packets.decode_session_packet(data), kind, addr, now)
            if kind is not PortKind.DATA:
                raise ProtocolError("RTP data on the control port")
            header, start, end = packets.decode_rtp_header(data)
            commands, journal_at = decode_payload(data, start, end)
            session = self._by_peer.get(header.ssrc)
            if session is None or session.state is not State.ESTABLISHED:
                self.counters.stray += 1
                return []
            journal = None if journal_at is None else (data, journal_at, end)
            return session.on_rtp(header, commands, now, journal)
        except ProtocolError as error:
            self.counters.drop_malformed(error)
            return []

    def _on_session_packet(
        self, packet: packets.SessionPacket, kind: PortKind, addr: Address, now: float
    ) -> list[Event]:
        if isinstance(packet, Clock):
            session = self._by_peer.get(packet.ssrc)
            if session is None or session.state is not State.ESTABLISHED:
                self.counters.stray += 1
                return []
            return session.on_clock(packet, kind, addr, now)
        if isinstance(packet, Feedback):
            session = self._by_peer.get(packet.ssrc)
            if session is None:
                self.counters.stray += 1
                return []
            session.last_heard = now
            session.feedback_sequence = packet.sequence
            if session.journal is not None:
                session.journal.on_feedback(packet.sequence)
            return []
        if not isinstance(packet, Invitation):  # RL: noted, nothing to do for MIDI rates
            return []
        command = packet.command
        if command == packets.INVITATION:
            return self._on_invitation(packet, kind, addr, now)
        if command == packets.ACCEPT:
            pending = self._by_token.get(packet.token)
            if pending is None:
                self.counters.stray += 1
                return []
            if not pending.on_accept(packet, kind, addr, now):
                return []
            del self._by_token[packet.token]
            self._by_peer[pending.peer_ssrc] = pending
            return [PeerJoined(pending)]
        if command == packets.REJECT:
            pending = self._by_token.pop(packet.token, None)
            if pending is None:
                self.counters.stray += 1
                return []
            return [self._ended(pending, "rejected", bye=False)]
        # BY: the peer ends the session (it may send one per port; the second is stray).
        session = self._by_peer.pop(packet.ssrc, None)
        if session is None:
            session = self._by_token.pop(packet.token, None)
        if session is None:
            self.counters.stray += 1
            return []
        return [self._ended(session, "bye", bye=False)]

    def _on_invitation(
        self, packet: Invitation, kind: PortKind, addr: Address, now: float
    ) -> list[Event]:
        session = self._by_peer.get(packet.ssrc)
        if session is not None:
            if session.role is Role.INITIATOR or (
                kind is PortKind.CONTROL and session.token != packet.token
            ):
                # Same SSRC, new token: the peer restarted. End the old session first.
                events: list[Event] = [
                    self._ended(self._by_peer.pop(packet.ssrc), "bye", bye=False)
                ]
                return events + self._on_invitation(packet, kind, addr, now)
            joined = session.on_invitation(packet, kind, addr, now)
            return [PeerJoined(session)] if joined else []
        if kind is PortKind.DATA or not self.accept or len(self._by_peer) >= self.max_sessions:
            # A data-port IN must follow a control-port one; otherwise we don't know it.
            self.counters.rejected += 1
            reply = Invitation(packets.REJECT, packet.token, 0, self.name)
            self._outbox.append((kind, packets.encode_invitation(reply), addr))
            return []
        session = Session(
            role=Role.RESPONDER,
            local_ssrc=self._new_ssrc(),
            local_name=self.name,
            token=packet.token,
            control_addr=addr,
            now=now,
            timing=self.timing,
            outbox=self._outbox,
        )
        session.peer_ssrc = packet.ssrc
        self._by_peer[packet.ssrc] = session
        session.on_invitation(packet, kind, addr, now)
        return []

    # -- output ----------------------------------------------------------------

    def connect(self, control_addr: Address, now: float, *, name: str | None = None) -> Session:
        """Invite a remote responder (initiator role); PeerJoined or PeerLeft follows.
        ``name``: the session name to introduce ourselves with (default: the host's)."""
        token = self._rng.getrandbits(32)
        while token in self._by_token:
            token = self._rng.getrandbits(32)
        session = Session(
            role=Role.INITIATOR,
            local_ssrc=self._new_ssrc(),
            local_name=name or self.name,
            token=token,
            control_addr=control_addr,
            now=now,
            timing=self.timing,
            outbox=self._outbox,
        )
        self._by_token[token] = session
        session.tick(now)
        return session

    def send(self, sessions: Iterable[Session], sections: Sequence[Section], now: float) -> None:
        """Send encoded command sections (see ``commands.encode_sections``) to sessions;
        what each carries feeds each session's recovery journal."""
        for session in sessions:
            session.send_lists(sections, now)

    def tick(self, now: float) -> list[Event]:
        events: list[Event] = []
        for session in self.sessions:
            if now < session.next_timer():
                continue
            reason = session.tick(now)
            if reason is not None:
                self._forget(session)
                events.append(self._ended(session, reason, bye=reason == "timeout"))
        return events

    def disconnect(self, session: Session, reason: str = "closed") -> list[Event]:
        """End one session from our side, with BY."""
        if session.state is State.CLOSED:
            return []
        self._forget(session)
        return [self._ended(session, reason, bye=True)]

    def close(self, reason: str = "closed") -> list[Event]:
        """End every session with BY (shutdown, port removed)."""
        events: list[Event] = []
        for session in self.sessions:
            events += self.disconnect(session, reason)
        return events

    def _forget(self, session: Session) -> None:
        if self._by_peer.get(session.peer_ssrc) is session:
            del self._by_peer[session.peer_ssrc]
        if self._by_token.get(session.token) is session:
            del self._by_token[session.token]

    def _ended(self, session: Session, reason: str, *, bye: bool) -> PeerLeft:
        if bye:
            session.send_bye()
        session.state = State.CLOSED
        self._local_ssrcs.discard(session.local_ssrc)
        return PeerLeft(session, reason)

    def _new_ssrc(self) -> int:
        while True:
            ssrc = self._rng.getrandbits(32)
            if ssrc and ssrc not in self._local_ssrcs:
                self._local_ssrcs.add(ssrc)
                return ssrc
