"""Drive the npm ``rtpmidi`` package (tests/interop/node/peer.js) as a real third-party
RTP MIDI participant, one Node process per peer, over JSON lines on stdin/stdout."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from tests.support import free_port_pair, wait_for

NODE_DIR = Path(__file__).parent / "node"
PEER_JS = NODE_DIR / "peer.js"


def node_ready() -> str | None:
    """Why the npm peer cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed (make test installs it)"
    if not (NODE_DIR / "node_modules" / "rtpmidi").is_dir():
        return f"npm packages missing: run `make node` (npm ci in {NODE_DIR})"
    return None


class NpmPeer:
    """One npm ``rtpmidi`` Session on an even UDP port pair of 127.0.0.1."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, port: int) -> None:
        self.name = name
        self.port = port
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, name: str, port: int | None = None) -> NpmPeer:
        problem = node_ready()
        if problem:
            raise RuntimeError(problem)
        port = port or free_port_pair()
        process = await asyncio.create_subprocess_exec(
            "node",
            str(PEER_JS),
            "--name",
            name,
            "--port",
            str(port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=NODE_DIR,
        )
        peer = cls(name, process, port)
        await peer.wait_event("ready", timeout=10)
        return peer

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def _command(self, **request: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e["event"] == event)

    async def wait_event(self, event: str, count: int = 1, timeout: float = 10.0) -> None:
        await wait_for(
            lambda: self.count(event) >= count or self.process.returncode is not None,
            timeout,
            f"npm peer {self.name!r}: {event} x{count}",
        )
        assert self.count(event) >= count, f"npm peer {self.name!r} exited: {self.events}"

    async def connect(self, port: int, host: str = "127.0.0.1") -> None:
        """Invite the hub's control port, then wait until rtpmidi's clock sync lets it send."""
        synced = self.count("synced")
        self._command(cmd="connect", host=host, port=port)
        await self.wait_event("synced", synced + 1, timeout=15)

    def send(self, *messages: bytes, tag: int | None = None) -> None:
        """One rtpmidi packet carrying ``messages`` in order; with ``tag``, the peer
        reports when it sent them (``sent_at``)."""
        extra = {} if tag is None else {"id": tag}
        self._command(cmd="send", messages=[list(m) for m in messages], **extra)

    def sent_at(self, tag: int) -> float | None:
        """The peer's monotonic time in ms when the send tagged ``tag`` was made."""
        for e in self.events:
            if e["event"] == "sent" and e["id"] == tag:
                return float(e["t"])
        return None

    @property
    def midi_times(self) -> list[tuple[float, bytes]]:
        """What arrived, with the peer's arrival time in ms."""
        return [(float(e["t"]), bytes(e["data"])) for e in self.events if e["event"] == "midi"]

    @property
    def midi(self) -> list[bytes]:
        return [bytes(e["data"]) for e in self.events if e["event"] == "midi"]

    async def wait_midi(self, count: int, timeout: float = 10.0) -> list[bytes]:
        await wait_for(lambda: len(self.midi) >= count, timeout, f"{self.name} {count} messages")
        return self.midi

    async def end(self) -> None:
        """rtpmidi's own shutdown: BY to every stream, then exit."""
        if self.process.returncode is None:
            self._command(cmd="end")
            await asyncio.wait_for(self.process.wait(), 10)

    async def kill(self) -> None:
        """Vanish without a BY, like a crashed laptop."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def close(self) -> None:
        await self.kill()
        self._reader.cancel()
