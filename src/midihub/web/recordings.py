"""HTTP handlers for recordings and replays. Access rules come from the API's
middleware: anything but GET needs the token."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from midihub.record.manager import RecordingError, RecordingManager
from midihub.web.guard import error as _error
from midihub.web.guard import json_object, parse_port, shorten


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object body, by the same strict rules as every control action."""
    try:
        return await json_object(request)
    except ValueError as problem:
        raise RecordingError(400, f'{problem}; send {{"port": N}}') from None


def _port(body: dict[str, Any]) -> int:
    port = body.get("port")
    if isinstance(port, str):
        port = parse_port(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise RecordingError(400, f'give the hub port: {{"port": N}}, not {shorten(port)}')
    return port


ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # what the hub itself names recordings and replays


def _find(rows: list[dict[str, Any]], rid: str, what: str) -> dict[str, Any]:
    for row in rows:
        if row["id"] == rid:
            return row
    raise RecordingError(404, f"no {what} {shorten(rid)}")


def _id(request: web.Request) -> str:
    """The id in the path, or a 404 naming it short: a stranger's text is not a key."""
    rid = request.match_info["id"]
    if not ID.fullmatch(rid):
        raise RecordingError(404, f"no recording {shorten(rid)}")
    return rid


class RecordingsApi:
    def __init__(self, manager: RecordingManager) -> None:
        self.manager = manager

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/api/recordings", self.list),
            web.post("/api/recordings", self.start),
            web.post("/api/recordings/{id}/stop", self.stop),
            web.get("/api/recordings/{id}/file", self.file),
            web.delete("/api/recordings/{id}", self.delete),
            web.post("/api/recordings/{id}/play", self.play),
            web.get("/api/replays", self.replays),
            web.post("/api/replays/{id}/stop", self.stop_replay),
        ]

    def _one(self, rid: str) -> dict[str, Any]:
        return _find(self.manager.describe(), rid, "recording")

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "recordings": self.manager.describe(),
                "replays": self.manager.describe_replays(),
            }
        )

    async def start(self, request: web.Request) -> web.Response:
        try:
            recording = self.manager.start_recording(_port(await _body(request)))
        except RecordingError as error:
            return _error(error.status, str(error))
        return web.json_response(self._one(recording.id), status=201)

    async def stop(self, request: web.Request) -> web.Response:
        try:
            recording = await self.manager.stop_recording(_id(request))
            return web.json_response(self._one(recording.id))
        except RecordingError as error:
            return _error(error.status, str(error))

    async def file(self, request: web.Request) -> web.StreamResponse:
        try:
            rid = _id(request)
        except RecordingError as error:
            return _error(error.status, str(error))
        path = self.manager.path_of(rid)
        if path is None:
            return _error(404, f"no recording {shorten(rid)}")
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "audio/midi",
                "Content-Disposition": f'attachment; filename="{rid}.mid"',
            },
        )

    async def delete(self, request: web.Request) -> web.Response:
        try:
            rid = _id(request)
            await self.manager.delete(rid)
        except RecordingError as error:
            return _error(error.status, str(error))
        return web.json_response({"deleted": rid})

    async def play(self, request: web.Request) -> web.Response:
        try:
            port = _port(await _body(request))
            replay = await self.manager.play(_id(request), port)
            return web.json_response(self._replay(replay.id), status=201)
        except RecordingError as error:
            return _error(error.status, str(error))

    def _replay(self, replay_id: str) -> dict[str, Any]:
        return _find(self.manager.describe_replays(), replay_id, "replay")

    async def replays(self, request: web.Request) -> web.Response:
        return web.json_response(self.manager.describe_replays())

    async def stop_replay(self, request: web.Request) -> web.Response:
        try:
            replay = self.manager.stop_replay(_id(request))
            return web.json_response(self._replay(replay.id))
        except RecordingError as error:
            return _error(error.status, str(error))
