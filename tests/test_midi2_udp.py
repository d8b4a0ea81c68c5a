"""The Network MIDI 2.0 host and the test client on real UDP sockets on 127.0.0.1: a
small asyncio driver here stands in for the hub's port server (net/, another helper's),
so ``UdpMidi2Client`` is known to work before end-to-end tests rely on it."""

from __future__ import annotations

import asyncio
from typing import Any

from midihub.midi2 import Departed, Invited, Midi2Event, Midi2Host, Midi2Settings, UmpReceived
from tests.midi2_client import Midi2Client, UdpMidi2Client
from tests.seeds import seeded
from tests.support import wait_for


class HostDriver(asyncio.DatagramProtocol):
    """Socket and timer for one ``Midi2Host``; accepts every invitation."""

    def __init__(self, host: Midi2Host) -> None:
        self.host = host
        self.events: list[Midi2Event] = []
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = asyncio.get_running_loop().time()
        for event in self.host.receive(data, addr, now):
            self.events.append(event)
            if isinstance(event, Invited):
                self.host.accept(addr, now)
        self.flush()

    def flush(self) -> None:
        assert self.transport is not None
        for data, addr in self.host.datagrams_to_send():
            self.transport.sendto(data, addr)
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.host.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.events += self.host.tick(asyncio.get_running_loop().time())
        self.flush()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


async def test_a_keyed_session_over_loopback_sockets() -> None:
    loop = asyncio.get_running_loop()
    host = Midi2Host(
        Midi2Settings(name="hub Jam", product_id="mh-1", secret="k3y"),
        seeded("midi2-udp", "host"),
        loop.time(),
    )
    _, driver = await loop.create_datagram_endpoint(
        lambda: HostDriver(host), local_addr=("127.0.0.1", 0)
    )
    assert driver.transport is not None
    port = driver.transport.get_extra_info("sockname")[1]
    client = await UdpMidi2Client.open(
        ("127.0.0.1", port), Midi2Client(secret="k3y", rng=seeded("midi2-udp", "client"))
    )
    try:
        client.invite()
        await wait_for(lambda: client.core.state == "established", what="joined")
        assert client.core.host_name == "hub Jam"
        client.send([(0x20903C64,)])
        client.send([(0x20803C00,)])
        await wait_for(
            lambda: (
                [m for e in driver.events if isinstance(e, UmpReceived) for m in e.messages]
                == [(0x20903C64,), (0x20803C00,)]
            ),
            what="the client's notes at the host",
        )
        [addr] = [s.addr for s in host.joined]
        host.send(addr, [(0x20904064,), (0x20804000,)], loop.time())
        driver.flush()
        await wait_for(
            lambda: client.core.received == [(0x20904064,), (0x20804000,)], what="the hub's"
        )
        client.core.bye(0x01)
        client.flush()
        await wait_for(lambda: any(isinstance(e, Departed) for e in driver.events), what="bye")
        assert [e for e in driver.events if isinstance(e, Departed)] == [
            Departed(addr, 0x01, by_client=True)
        ]
    finally:
        client.close()
        driver.close()
