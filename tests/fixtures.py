"""Fixtures for the test harnesses, each closing at teardown whatever it made, and
their types for the tests' signatures:

- ``start_hub(config_text, **overrides)``: a ``RunningHub`` on real sockets;
- ``await serve_hub(config_text, public=True, **overrides)``: a running hub and the
  base URL of its web server;
- ``await serve_room(*names, label="R", public=True, **overrides)``: the same for a hub
  with one room on a free port, with a ``PyPeer`` joined to it for each of ``names``;
- ``make_peer(name, cls=PyPeer, **fields)``: a ``PyPeer`` (or subclass) on its own sockets;
- ``await npm_peers(*names)``: npm ``rtpmidi`` peers, one Node process each;
- ``await start_proxy(target_port, to_target, to_peer)``: a delay/loss proxy;
- ``make_raw_pair(host="127.0.0.2", port=0)``: raw control/data sockets (an attacker's,
  or a remote that never answers) that record every datagram they receive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any, Protocol, TypeVar

import pytest

from tests.attacks.udp import RawPair
from tests.interop.npm_peer import NpmPeer
from tests.proxy import PathRules, UdpProxy
from tests.support import LOCALHOST, PyPeer, RunningHub, free_ports, joined, make_config, serving

StartHub = Callable[..., RunningHub]
Serve = Callable[..., Awaitable[tuple[RunningHub, str]]]
ServeRoom = Callable[..., Awaitable[tuple[RunningHub, str, int, list[PyPeer]]]]
MakePeer = Callable[..., PyPeer]
NpmPeers = Callable[..., Awaitable[list[NpmPeer]]]
StartProxy = Callable[..., Awaitable[UdpProxy]]
MakeRawPair = Callable[..., RawPair]


@pytest.fixture
async def start_hub() -> AsyncIterator[StartHub]:
    """``start_hub(config_text, **overrides)``: a started RunningHub, closed at teardown."""
    hubs: list[RunningHub] = []

    def start(text: str, bind: str = LOCALHOST, **overrides: Any) -> RunningHub:
        running = RunningHub(make_config(text, bind, **overrides)).__enter__()
        hubs.append(running)
        return running

    yield start
    for running in reversed(hubs):
        running.__exit__(None, None, None)


@pytest.fixture
async def serve_hub() -> AsyncIterator[Serve]:
    """``await serve_hub(config_text, public=True, **overrides)``: a running hub and its
    web server's base URL, both closed at teardown."""
    async with AsyncExitStack() as stack:

        async def serve(text: str, public: bool = True, **overrides: Any) -> tuple[RunningHub, str]:
            return await stack.enter_async_context(serving(text, public, **overrides))

        yield serve


@pytest.fixture
def serve_room(serve_hub: Serve, make_peer: MakePeer) -> ServeRoom:
    """``await serve_room(*names, label="R", public=True, **overrides)``: a hub served as
    by ``serve_hub`` with one room, ``label``, on a free port, and a PyPeer (made by
    ``make_peer``) for each of ``names`` joined to it in turn: the hub, its web server's
    base URL, the room's port and the peers."""

    async def serve(
        *names: str, label: str = "R", public: bool = True, **overrides: Any
    ) -> tuple[RunningHub, str, int, list[PyPeer]]:
        (port,) = free_ports(1)
        running, url = await serve_hub(f"[rooms]\n{label} = {port}", public, **overrides)
        return running, url, port, await joined(make_peer, port, *names)

    return serve


class Closable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=Closable)


@contextmanager
def closing_all(make: Callable[..., T]) -> Iterator[Callable[..., T]]:
    """``make``, remembering what it made; all of it closed on the way out."""
    made: list[T] = []

    def remembered(*args: Any, **kwargs: Any) -> T:
        made.append(thing := make(*args, **kwargs))
        return thing

    try:
        yield remembered
    finally:
        for thing in made:
            thing.close()


def _peer(name: str, cls: type[PyPeer] = PyPeer, **fields: Any) -> PyPeer:
    return cls(name, **fields)


@pytest.fixture
async def make_peer() -> AsyncIterator[MakePeer]:
    """``make_peer(name, cls=PyPeer, **fields)``: a PyPeer on its own sockets."""
    with closing_all(_peer) as make:
        yield make


@pytest.fixture
async def npm_peers() -> AsyncIterator[NpmPeers]:
    """``await npm_peers(*names)``: npm ``rtpmidi`` peers, each in its own Node process,
    all closed at teardown."""
    started: list[NpmPeer] = []

    async def start(*names: str) -> list[NpmPeer]:
        new = await asyncio.gather(*(NpmPeer.start(name) for name in names))
        started.extend(new)
        return list(new)

    yield start
    await asyncio.gather(*(peer.close() for peer in started))


@pytest.fixture
async def start_proxy() -> AsyncIterator[StartProxy]:
    """``await start_proxy(target_port, to_target, to_peer)``: a delay/loss proxy in front
    of ``target_port``, closed at teardown."""
    proxies: list[UdpProxy] = []

    async def start(
        target_port: int, to_target: PathRules | None = None, to_peer: PathRules | None = None
    ) -> UdpProxy:
        proxy = UdpProxy(target_port, to_target or PathRules(), to_peer or PathRules())
        proxies.append(await proxy.start())
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


@pytest.fixture
async def make_raw_pair() -> AsyncIterator[MakeRawPair]:
    """``make_raw_pair(host="127.0.0.2", port=0)``: raw sockets that record every
    datagram they receive."""
    with closing_all(RawPair) as make:
        yield make
