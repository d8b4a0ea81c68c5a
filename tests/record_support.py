"""A hub on real sockets with its API and recordings, for the recording tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from midihub.record import files, journal, smf
from midihub.record.journal import Header
from midihub.record.manager import RecordingManager
from midihub.web import Api, WebServer
from midihub.web.recordings import RecordingsApi
from tests.ports import free_tcp_port
from tests.support import TOKEN, RunningHub, make_config
from tests.test_serve import Served


class Recorded:
    def __init__(self, running: RunningHub, manager: RecordingManager, url: str) -> None:
        self.running = running
        self.manager = manager
        self.url = url

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as client,
            client.request(method, self.url + path, json=body, headers=headers) as response,
        ):
            return response.status, await response.json()

    async def download(self, path: str) -> bytes:
        async with aiohttp.ClientSession() as client, client.get(self.url + path) as response:
            assert response.status == 200, await response.text()
            return await response.read()


@asynccontextmanager
async def recording_hub(text: str, directory: Path, **record: Any) -> AsyncIterator[Recorded]:
    """``text``: the ports; ``record``: ``[record]`` settings (dir is ``directory``)."""
    config = make_config(text)
    settings = config.record.model_copy(update={"dir": str(directory), **record})
    config = config.model_copy(update={"record": settings})
    with RunningHub(config) as running:
        loop = asyncio.get_running_loop()
        manager = RecordingManager(running.hub, directory, settings)
        await manager.start()
        await manager.ready()
        api = Api(running.hub, token=TOKEN, hub_time=loop.time)
        application = api.application()
        application.add_routes(RecordingsApi(manager).routes())
        web = WebServer(application, "127.0.0.1", 0)
        await web.start()
        try:
            yield Recorded(running, manager, web.url.rstrip("/"))
        finally:
            await manager.close()
            await api.aclose()
            await web.close()


class ServedHub(Recorded):
    """``midihub serve`` as its own process (uvloop, gc frozen: as deployed)."""

    def __init__(self, served: Served, url: str, directory: Path) -> None:
        self.served = served
        self.url = url
        self.directory = directory

    async def rows(self) -> list[dict[str, Any]]:
        status, body = await self.call("GET", "/api/recordings")
        assert status == 200, body
        rows: list[dict[str, Any]] = body["recordings"]
        return rows

    async def row(self, rid: str) -> dict[str, Any]:
        return next(row for row in await self.rows() if row["id"] == rid)


def write_config(tmp: Path, ports: str, **record: Any) -> tuple[Path, str]:
    web = f"127.0.0.1:{free_tcp_port()}"
    settings = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in record.items())
    (tmp / "midihub.toml").write_text(
        f'bind = "127.0.0.1"\n{ports}\n[web]\nlisten = "{web}"\ntoken = "{TOKEN}"\n'
        f'[stats]\ndatabase = "{tmp / "midihub.db"}"\n[mdns]\nenabled = false\n'
        f"[record]\n{settings}"
    )
    return tmp / "midihub.toml", f"http://{web}"


async def serve(tmp: Path, config: Path, url: str) -> ServedHub:
    served = await Served.start("--config", str(config), cwd=tmp, own_web_port=False)
    try:
        await served.has("dashboard and API on", 10)
    except BaseException:  # never leave a hub running behind a failed test
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()
        raise
    return ServedHub(served, url, tmp / "recordings")


def recording_file(
    directory: Path,
    header: Header,
    players: dict[int, str],
    midi: list[tuple[int, int, bytes]],
    end: int | None = None,
) -> Path:
    """An SMF made the hub's way (a journal, then finished): ``midi`` is
    ``(ms, track, message)``."""
    path = directory / (header.id + journal.SUFFIX)
    file = journal.JournalFile(path, header)
    for track, name in players.items():
        file.player(0, track, name)
    for ms, track, message in midi:
        file.message(ms, track, message)
    if end is not None:
        file.end(end)
    file.flush()
    file.close()
    files.finish(path)
    return directory / (header.id + smf.SUFFIX)
