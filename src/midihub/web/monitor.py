"""Live feed of what arrives on a hub port, for the dashboard's monitor and
``midihub monitor``: Server-Sent Events.

What arrives is gathered per port for ``BATCH_INTERVAL``, serialised ONCE, and the
same bytes are handed to every viewer of the port. A viewer whose connection is not
draining (a slow or unread client) is skipped for that batch and the skip is counted,
so it costs one buffer-size check, never a serialisation or a wait; a viewer that reads
nothing for ``STALL_TIMEOUT`` is disconnected. Viewers are capped in all and per client
address, and the hub's packet path only appends to a bounded list."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from midihub.hub import Endpoint, Hub, participant_id
from midihub.hub.panic import Panicked
from midihub.midi import messages as m
from midihub.midi.notes import NoteRange, note_name
from midihub.midi.state import ChannelState
from midihub.rtp import Event, MidiReceived, PeerJoined, PeerLeft
from midihub.rtp.limits import SourceCounts
from midihub.rtp.limits import source_key as client_key
from midihub.web.guard import error, event_stream
from midihub.web.proxies import client_of

BATCH_INTERVAL = 0.05
KEEPALIVE = 15.0
STALL_TIMEOUT = 30.0
"""A viewer whose connection took nothing for this long is disconnected."""
PENDING_LIMIT = 1024
"""Events gathered per port between two batches; beyond it they are counted, not shown."""
WRITE_LOW_WATER = 16 * 1024
"""A viewer with more than this still unsent is skipped (its batch dropped)."""
YIELD_EVERY = 16
"""Viewers written between two returns to the event loop, so packets never wait long."""
SYSEX_SHOWN = 16
"""Bytes of a SysEx message shown in the stream; its length is always given."""

PARTICIPANTS: dict[str, Any] = {"type": "participants"}


def held_snapshot(hub: Hub, port: int) -> list[dict[str, Any]]:
    """Per channel (1..16) what the participants on ``port`` hold now, merged."""
    endpoint = hub.endpoints.get(port)
    if endpoint is None:
        return []
    merged: dict[int, dict[str, Any]] = {}
    for participant in endpoint.participants:
        for channel, held in participant.held.channels_held().items():
            _merge(merged.setdefault(channel, _empty(channel)), held)
    return [merged[channel] for channel in sorted(merged)]


def _empty(channel: int) -> dict[str, Any]:
    return {"channel": channel + 1, "notes": [], "sustain": False, "sostenuto": False, "bend": 0}


def _merge(into: dict[str, Any], held: ChannelState) -> None:
    known = {n["note"] for n in into["notes"]}
    for note, velocity in sorted(held.notes.items()):
        if note not in known:
            into["notes"].append({"note": note, "name": note_name(note), "velocity": velocity})
    into["notes"].sort(key=lambda n: n["note"])
    into["sustain"] = into["sustain"] or held.sustain
    into["sostenuto"] = into["sostenuto"] or held.sostenuto
    if held.bend != m.PITCH_BEND_CENTRE:
        into["bend"] = held.bend - m.PITCH_BEND_CENTRE


def message_json(message: bytes) -> dict[str, Any]:
    """One MIDI message for the stream; a SysEx as its length and first bytes only."""
    if message[0] == m.SYSEX_START:
        return {
            "bytes": list(message[:SYSEX_SHOWN]),
            "length": len(message),
            "kind": "sysex",
            "text": m.describe(message),  # "sysex (65536 bytes)": the length, no content
        }
    return {
        "bytes": list(message),
        "length": len(message),
        "kind": m.kind(message),
        "text": m.describe(message),
    }


def panic_text(note_range: NoteRange, channels: Sequence[int], whom: str) -> str:
    """A panic in words, for the monitor's event list and the hub's log."""
    on = (
        "every channel"
        if len(channels) == 16
        else "channel " + ", ".join(str(c + 1) for c in channels)
    )
    name = note_range.name.title()
    return f"panic: {name} ({note_range.low}-{note_range.high}) notes off on {on}, to {whom}"


def panic_json(endpoint: Endpoint, event: Panicked) -> dict[str, Any]:
    """A panic for the monitor's event list, with its line of text (``text``)."""
    note_range = event.note_range
    to = None
    if not event.everyone:
        to = {"id": participant_id(endpoint, event.who), "name": event.who.name}
    return {
        "type": "panic",
        "at": time.time(),
        "range": note_range.name.title(),
        "notes": [note_range.low, note_range.high],
        "channels": [c + 1 for c in event.channels],
        "to": to,
        "text": panic_text(
            note_range, event.channels, "everyone" if to is None else repr(to["name"] or to["id"])
        ),
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


@dataclass
class MonitorCounters:
    refused_total: int = 0  # the global viewer cap was reached
    refused_per_ip: int = 0  # the per-address viewer cap was reached
    batches_dropped: int = 0  # batches a viewer missed because it was not reading
    events_dropped: int = 0  # events not shown because a batch was full
    stalled: int = 0  # viewers disconnected for reading nothing


@dataclass(eq=False)
class Viewer:
    request: web.Request
    response: web.StreamResponse
    key: str
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    last_ready: float = field(default_factory=time.monotonic)

    def ready(self) -> bool:
        """Can take a write without waiting: connected, and the last ones went out."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            self.closed.set()
            return False
        if self.request.protocol.writing_paused:
            return False
        if transport.get_write_buffer_size() > WRITE_LOW_WATER:
            return False
        self.last_ready = time.monotonic()
        return True

    async def write(self, chunk: bytes) -> None:
        try:
            await self.response.write(chunk)
        except (OSError, RuntimeError):  # the client went away meanwhile
            self.closed.set()


class Monitor:
    """Fans hub events out to the viewers of each port."""

    def __init__(self, hub: Hub, *, limit: int = 64, per_ip: int = 8) -> None:
        self.hub = hub
        self.limit = limit
        self.per_ip = per_ip
        self.counters = MonitorCounters()
        self._viewers: dict[int, set[Viewer]] = defaultdict(set)
        self._open = SourceCounts()
        self._pending: dict[int, list[dict[str, Any]]] = {}
        self._scheduled: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        hub.listeners.append(self.on_event)
        hub.midi_listeners.append(self.on_event)

    @property
    def viewers(self) -> int:
        return self._open.total

    def on_event(self, endpoint: Endpoint, event: Event) -> None:
        """On the hub's packet path: append to the port's batch, nothing more."""
        port = endpoint.port
        if not self._viewers.get(port):
            return
        item: dict[str, Any]
        if isinstance(event, MidiReceived):
            item = {
                "type": "midi",
                "at": time.time(),
                "from": {
                    "id": participant_id(endpoint, event.who),
                    "name": event.who.name,
                    "transport": event.who.transport,
                },
                "messages": [message_json(msg) for _, msg in event.commands],
            }
        elif isinstance(event, PeerJoined | PeerLeft):
            item = PARTICIPANTS
        elif isinstance(event, Panicked):
            item = panic_json(endpoint, event)
        else:
            return
        pending = self._pending.setdefault(port, [])
        if len(pending) >= PENDING_LIMIT:
            self.counters.events_dropped += 1
            return
        pending.append(item)
        self._schedule(port)

    def _schedule(self, port: int) -> None:
        if port in self._scheduled or self._closed:
            return
        self._scheduled.add(port)
        asyncio.get_running_loop().call_later(BATCH_INTERVAL, self._start_delivery, port)

    def _start_delivery(self, port: int) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(port))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, port: int) -> None:
        try:
            items = self._pending.pop(port, [])
            viewers = list(self._viewers.get(port, ()))
            if items and viewers:
                chunk = self._encode(port, items)
                for index, viewer in enumerate(viewers):
                    if index and index % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # let packets through between viewers
                    if viewer.closed.is_set():
                        continue
                    if viewer.ready():
                        await viewer.write(chunk)
                    else:
                        self.counters.batches_dropped += 1
        finally:
            self._scheduled.discard(port)
            if self._pending.get(port):
                self._schedule(port)

    def _encode(self, port: int, items: list[dict[str, Any]]) -> bytes:
        """In arrival order: MIDI runs as one ``midi`` event each, a join or leave
        between them as a ``participants`` event (so a monitor prints who joined
        before what they played), a panic as a ``panic`` event."""
        parts: list[bytes] = []
        events: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            midi = item["type"] == "midi"
            if midi:
                events.append(item)
            if (not midi or index == len(items) - 1) and events:
                held = held_snapshot(self.hub, port)
                parts.append(sse("midi", {"port": port, "events": events, "held": held}))
                events = []
            if item["type"] == "panic":
                held = held_snapshot(self.hub, port)
                parts.append(sse("panic", {**item, "port": port, "held": held}))
            elif item is PARTICIPANTS:
                parts.append(
                    sse(
                        "participants",
                        {
                            "port": port,
                            "participants": self.participants(port),
                            "held": held_snapshot(self.hub, port),
                        },
                    )
                )
        return b"".join(parts)

    def close(self) -> None:
        """End every open stream (shutdown must not wait for viewers to leave)."""
        self._closed = True
        for viewers in self._viewers.values():
            for viewer in viewers:
                viewer.closed.set()
        for task in list(self._tasks):
            task.cancel()

    async def aclose(self) -> None:
        """``close``, then wait until every task it cancelled has ended."""
        tasks = list(self._tasks)
        self.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def participants(self, port: int) -> list[dict[str, Any]]:
        endpoint = self.hub.endpoints.get(port)
        if endpoint is None:
            return []
        return [
            {"id": participant_id(endpoint, s), "name": s.name, "transport": s.transport}
            for s in endpoint.participants
        ]

    def _admit(self, key: str) -> web.Response | None:
        """None when one more viewer from ``key`` fits, else the refusal."""
        if self._open.total >= self.limit:
            self.counters.refused_total += 1
            return error(503, "the hub has as many monitor viewers as it serves; try later")
        if self._open.of(key) >= self.per_ip:
            self.counters.refused_per_ip += 1
            return error(429, "too many monitor streams from your address; close one")
        self._open.add(key)
        return None

    def _release(self, key: str) -> None:
        self._open.remove(key)

    async def stream(self, request: web.Request, port: int) -> web.StreamResponse:
        key = client_key(client_of(request)[0])
        refusal = self._admit(key)
        if refusal is not None:
            return refusal
        viewer: Viewer | None = None
        try:
            response = await event_stream(request)
            viewer = Viewer(request, response, key)
            endpoint = self.hub.endpoints[port]
            await viewer.write(
                sse(
                    "snapshot",
                    {
                        "port": port,
                        "label": endpoint.label,
                        "participants": self.participants(port),
                        "held": held_snapshot(self.hub, port),
                    },
                )
            )
            self._viewers[port].add(viewer)
            await self._watch(viewer, port)
            return response
        finally:
            if viewer is not None:
                self._viewers[port].discard(viewer)
                if not self._viewers[port]:
                    del self._viewers[port]
                    self._pending.pop(port, None)
            self._release(key)

    async def _watch(self, viewer: Viewer, port: int) -> None:
        """Until the stream ends: keepalives, and a stalled reader is cut off."""
        while not self._closed and port in self.hub.endpoints and not viewer.closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(viewer.closed.wait(), KEEPALIVE)
                break
            if viewer.ready():
                await viewer.write(b": keepalive\n\n")
            elif time.monotonic() - viewer.last_ready > STALL_TIMEOUT:
                self.counters.stalled += 1
                transport = viewer.request.transport
                if transport is not None:
                    transport.abort()  # its unsent data would never drain
                viewer.closed.set()
