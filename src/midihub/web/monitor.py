"""Live feed of what arrives on a hub port, for the dashboard's monitor and
``midihub monitor``: Server-Sent Events, batched so a flood of clock bytes costs
one push per interval, with bounded queues so a slow viewer never slows the hub."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Any

from aiohttp import web

from midihub.hub import Endpoint, Hub, participant_id
from midihub.hub.notes import ChannelState
from midihub.midi import messages as m
from midihub.midi.notes import note_name
from midihub.rtp import Event, MidiReceived, PeerJoined, PeerLeft

BATCH_INTERVAL = 0.05
KEEPALIVE = 15.0
QUEUE_LIMIT = 2048


def held_snapshot(hub: Hub, port: int) -> list[dict[str, Any]]:
    """Per channel (1..16) what the participants on ``port`` hold now, merged."""
    endpoint = hub.endpoints.get(port)
    if endpoint is None:
        return []
    merged: dict[int, dict[str, Any]] = {}
    for session in endpoint.host.established:
        state = hub.held(session)
        if state is None:
            continue
        for channel, held in state.held().items():
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
    return {"bytes": list(message), "kind": m.kind(message), "text": m.describe(message)}


class Monitor:
    """Fans hub events out to the viewers of each port."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._viewers: dict[int, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self.dropped = 0  # items a slow viewer missed
        hub.listeners.append(self.on_event)
        hub.midi_listeners.append(self.on_event)

    def on_event(self, endpoint: Endpoint, event: Event) -> None:
        viewers = self._viewers.get(endpoint.port)
        if not viewers:
            return
        item: dict[str, Any]
        if isinstance(event, MidiReceived):
            item = {
                "type": "midi",
                "at": time.time(),
                "from": {
                    "id": participant_id(endpoint, event.session),
                    "name": event.session.peer_name,
                },
                "messages": [message_json(msg) for _, msg in event.commands],
            }
        elif isinstance(event, PeerJoined | PeerLeft):
            item = {"type": "participants"}
        else:
            return
        for queue in viewers:
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self.dropped += 1

    def close(self) -> None:
        """End every open stream (shutdown must not wait for viewers to leave)."""
        for viewers in self._viewers.values():
            for queue in viewers:
                while True:
                    try:
                        queue.put_nowait({"type": "close"})
                        break
                    except asyncio.QueueFull:
                        queue.get_nowait()

    def participants(self, port: int) -> list[dict[str, Any]]:
        endpoint = self.hub.endpoints.get(port)
        if endpoint is None:
            return []
        return [
            {"id": participant_id(endpoint, s), "name": s.peer_name}
            for s in endpoint.host.established
        ]

    async def stream(self, request: web.Request, port: int) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self._viewers[port].add(queue)
        endpoint = self.hub.endpoints[port]
        try:
            await _send(
                response,
                "snapshot",
                {
                    "port": port,
                    "label": endpoint.label,
                    "participants": self.participants(port),
                    "held": held_snapshot(self.hub, port),
                },
            )
            while port in self.hub.endpoints:
                try:
                    first = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if first["type"] == "close":
                    break
                await asyncio.sleep(BATCH_INTERVAL)  # gather what else arrives meanwhile
                batch = [first]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                await self._flush(response, port, batch)
                if any(item["type"] == "close" for item in batch):
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._viewers[port].discard(queue)
        return response

    async def _flush(
        self, response: web.StreamResponse, port: int, batch: list[dict[str, Any]]
    ) -> None:
        """In arrival order: MIDI runs as one ``midi`` event each, a join or leave
        between them as a ``participants`` event (so a monitor prints who joined
        before what they played)."""
        events: list[dict[str, Any]] = []
        for index, item in enumerate(batch):
            if item["type"] == "midi":
                events.append(item)
            if (item["type"] != "midi" or index == len(batch) - 1) and events:
                held = held_snapshot(self.hub, port)
                await _send(response, "midi", {"port": port, "events": events, "held": held})
                events = []
            if item["type"] == "participants":
                await _send(
                    response,
                    "participants",
                    {
                        "port": port,
                        "participants": self.participants(port),
                        "held": held_snapshot(self.hub, port),
                    },
                )


async def _send(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    payload = json.dumps(data, separators=(",", ":"))
    await response.write(f"event: {event}\ndata: {payload}\n\n".encode())
