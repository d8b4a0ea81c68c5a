"""Shared test helpers: free ports, a hub running in-process, a Python RTP MIDI peer
over real UDP sockets on 127.0.0.1 (our own sans-IO SessionTable in the initiator role;
the npm peer in tests/interop is the independent one) and peers joined to a hub, and
``midihub serve`` as a process of its own."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midihub import config as config_module
from midihub.config import HubConfig
from midihub.hub import Hub
from midihub.midi.held import NoteState
from midihub.net import HubServer, PortPair
from midihub.rtp import (
    Address,
    Event,
    LatencyMeasured,
    MidiReceived,
    PeerJoined,
    PeerLeft,
    PortKind,
    Session,
    SessionSettings,
    SessionTable,
    encode_sections,
)
from midihub.rtp.recovery import MAX_LIST_LENGTH
from midihub.web import Api, WebServer
from tests.ports import LOCALHOST as LOCALHOST
from tests.ports import free_port_pair as free_port_pair
from tests.ports import free_ports as free_ports
from tests.ports import free_tcp_port as free_tcp_port
from tests.seeds import seeded

TOKEN = "test-token-123"
MARKER = bytes((0xBF, 119, 0))
"""An end marker: CC 119 on channel 16, undefined in MIDI, so nothing holds or reacts to it."""


def make_config(text: str, bind: str = LOCALHOST, **overrides: object) -> HubConfig:
    config = config_module.parse(text, "<test>", bind)
    return config.model_copy(update=overrides) if overrides else config


GENEROUS = 30.0  # seconds: the shortest a test waits for a condition before failing


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, what: str = ""
) -> None:
    """Poll ``predicate`` (plain or async) until true; fail with ``what`` after
    ``timeout`` seconds, never fewer than ``GENEROUS``: a busy machine may take far
    longer than the caller expected, and a wait that succeeds returns at once."""
    timeout = max(timeout, GENEROUS)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


class RunningHub:
    """A hub on real sockets inside the test's event loop."""

    def __init__(self, config: HubConfig) -> None:
        self.hub = Hub(config.spec(), rng=seeded(1, "RunningHub"))
        self.events: list[tuple[int, Event]] = []
        self.hub.listeners.append(
            lambda endpoint, event: self.events.append((endpoint.port, event))
        )
        self.server = HubServer(self.hub, rng=seeded(2, "RunningHub midi2"))

    def __enter__(self) -> RunningHub:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    def participants(self, port: int) -> list[Session]:
        return self.hub.endpoints[port].table.established

    def malformed(self) -> int:
        return sum(e.table.counters.malformed for e in self.hub.endpoints.values())


@asynccontextmanager
async def serving(
    text: str, public: bool = True, store: Any = None, **overrides: Any
) -> AsyncIterator[tuple[RunningHub, str]]:
    """A hub and its web API on loopback; ``store`` is a started latency history
    (``midihub.history.LatencyStore``) or None."""
    config = make_config(text, **overrides)
    with RunningHub(config) as running:
        loop = asyncio.get_running_loop()
        api = Api(
            running.hub,
            token=TOKEN,
            public=public,
            store=store,
            hub_time=loop.time,
            flush=running.server.flush,
            web_settings=config.web,
        )
        running.server.on_forward = api.metrics.observe_forward
        web = WebServer(api.application(), "127.0.0.1", 0, registry=api.metrics.registry)
        await web.start()
        try:
            yield running, web.url.rstrip("/")
        finally:
            await api.aclose()
            await web.close()


@dataclass
class PyPeer:
    """An RTP MIDI participant for tests: invites the hub, records what it receives."""

    name: str
    port: int = 0
    settings: SessionSettings = field(default_factory=SessionSettings)
    received: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    table: SessionTable = field(init=False)
    pair: PortPair = field(init=False)
    session: Session | None = None
    state: NoteState = field(default_factory=NoteState)
    rtp_sent: int = 0  # RTP datagrams sent (MIDI and guard packets)

    def __post_init__(self) -> None:
        self.port = self.port or free_port_pair()
        self.table = SessionTable(
            self.name, rng=seeded(self.name, "PyPeer"), settings=self.settings
        )
        self._loop = asyncio.get_running_loop()
        self.pair = PortPair(self._loop, LOCALHOST, self.port, self._receive)
        self.pair.open()
        self._ticker = self._loop.call_later(0.05, self._tick)

    def _receive(self, kind: PortKind, batch: list[tuple[bytes, Address]]) -> None:
        now = self._loop.time()
        for data, addr in batch:
            for event in self.table.receive(data, kind, addr, now):
                self.events.append(event)
                if isinstance(event, MidiReceived):  # repaired by the session after a loss
                    self.state.update(event.commands)
                    self.received.extend(message for _, message in event.commands)
        self.flush()

    def _tick(self) -> None:
        self.events.extend(self.table.tick(self._loop.time()))
        self.flush()
        self._ticker = self._loop.call_later(0.05, self._tick)

    def flush(self) -> None:
        for kind, data, addr in self.table.datagrams_to_send():
            if kind is PortKind.DATA and not data.startswith(b"\xff\xff"):
                self.rtp_sent += 1
            self.pair.sendto(kind, data, addr)

    async def connect(self, port: int, timeout: float = 5.0, host: str = LOCALHOST) -> Session:
        """Join the hub on ``host:port``. Returns once the hub counts us as a participant:
        our first clock sync proved our address, and a second one, answered after the hub
        read the first one's end (same socket, in order), says the hub has seen it."""
        session = self.session = self.table.connect((host, port), self._loop.time())
        self.flush()
        await wait_for(self.joined, timeout, f"{self.name} to join :{port}")
        synced = len(self.rtts())
        self.table.sync_clock(session, self._loop.time())
        self.flush()
        await wait_for(lambda: len(self.rtts()) > synced, timeout, f"{self.name}'s second sync")
        return session

    def send(self, *messages: bytes) -> None:
        assert self.session is not None
        commands = [(0, m) for m in messages]
        sections = encode_sections(commands, MAX_LIST_LENGTH)
        self.table.send([self.session], sections, self._loop.time())
        self.flush()

    def send_raw(self, kind: PortKind, data: bytes, addr: Address) -> None:
        self.pair.sendto(kind, data, addr)

    def joined(self) -> bool:
        return any(isinstance(e, PeerJoined) for e in self.events)

    def left(self) -> list[str]:
        return [e.reason for e in self.events if isinstance(e, PeerLeft)]

    def rtts(self) -> list[float]:
        return [e.rtt for e in self.events if isinstance(e, LatencyMeasured)]

    def bye(self) -> None:
        self.table.close()
        self.flush()

    def close(self) -> None:
        self._ticker.cancel()
        self.pair.close()


async def joined(make: Callable[[str], PyPeer], port: int, *names: str) -> list[PyPeer]:
    """A peer for each of ``names``, all made by ``make`` (the ``make_peer`` fixture, which
    closes them), then joined to the hub on ``port`` one after another, in that order."""
    peers = [make(name) for name in names]
    for peer in peers:
        await peer.connect(port)
    return peers


async def midihub_serve(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    """``python -m midihub serve ARGS`` started in ``cwd``: its log on a pipe (stderr)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "midihub",
        "serve",
        *args,
        cwd=cwd,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )


async def serve_to_the_end(*args: str, cwd: Path, timeout: float) -> tuple[int, str]:
    """``python -m midihub serve ARGS`` that is to stop by itself within ``timeout``
    seconds: its exit status and its log."""
    process = await midihub_serve(*args, cwd=cwd)
    _, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def marked(sender: PyPeer, *receivers: PyPeer, timeout: float = 5.0) -> None:
    """The positive end of a "nothing else arrives" check: ``sender`` plays ``MARKER``,
    and this returns once every receiver has it as the last thing it received (then
    taken out of ``received``). The hub reads one socket in order and sends each
    receiver's datagrams from one socket in order, so whatever it was to send them
    before the marker has arrived: ``received`` can be checked as complete."""
    sender.send(MARKER)
    for peer in receivers:
        await wait_for(lambda p=peer: MARKER in p.received, timeout, f"{peer.name}: the marker")
    for peer in receivers:
        assert peer.received[-1] == MARKER, f"{peer.name} heard more after the marker"
        assert peer.received.count(MARKER) == 1, f"{peer.name} heard the marker twice"
        peer.received.pop()
