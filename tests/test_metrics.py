"""GET /metrics: exact counts after a scripted exchange on real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from midihub.net import PortPair
from midihub.rtp import LatencyMeasured, LeaveReason, PortKind
from tests.fixtures import MakePeer, Serve, ServeRoom
from tests.support import LOCALHOST, TOKEN, free_ports, joined, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str, token: str | None = None) -> tuple[int, str, Samples]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics", headers=headers) as r:
        text = await r.text()
        if r.status != 200:
            return r.status, text, {}
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return r.status, r.headers["Content-Type"], samples


def at(samples: Samples, metric: str, /, **labels: str | int) -> float:
    return samples[(metric, frozenset((k, str(v)) for k, v in labels.items()))]


async def test_counters_move_exactly_with_a_scripted_exchange(
    serve_hub: Serve, make_peer: MakePeer
) -> None:
    p_in, p_out = free_ports(2)
    running, url = await serve_hub(f"[groups]\nG = [{p_in}, {p_out}]")
    (alice,) = await joined(make_peer, p_in, "alice")
    bob, carol = await joined(make_peer, p_out, "bob", "carol")
    status, content_type, before = await scrape(url)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    i, o = {"port": p_in, "name": "G in"}, {"port": p_out, "name": "G out"}
    assert at(before, "midihub_participants", **i) == 1
    assert at(before, "midihub_participants", **o) == 2
    assert at(before, "midihub_forward_latency_seconds_count") == 0

    for n in range(1, 11):  # ten packets of two messages, one read batch each:
        alice.send(bytes((0x90, 59 + n, 100)), bytes((0x80, 59 + n, 0)))
        # the next is sent once this one is forwarded, so never read with it
        await wait_for(lambda n=n: len(bob.received) == len(carol.received) == 2 * n)
    for _ in range(3):  # malformed: counted and dropped
        alice.send_raw(PortKind.DATA, b"\x80\x61junk", (LOCALHOST, p_in + 1))
    await wait_for(lambda: running.malformed() == 3)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + "/api/panic",
            json={"port": p_out, "range": "Low", "channels": [1]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        assert response.status == 200
    await wait_for(lambda: len(bob.received) == 20 + 43)

    def rtts() -> int:
        return sum(
            1
            for port, event in running.events
            if port == p_out and isinstance(event, LatencyMeasured)
        )

    counters = running.hub.endpoints[p_in].table.counters
    # Clock syncs go on meanwhile: bound those figures by before and after.
    received_before, rtts_before = counters.received, rtts()
    _, _, after = await scrape(url)
    received_after, rtts_after = counters.received, rtts()
    assert at(after, "midihub_midi_messages_received_total", **i) == 20
    assert at(after, "midihub_midi_messages_sent_total", **o) == 2 * 20 + 2 * 43
    assert at(after, "midihub_midi_messages_sent_total", **i) == 0
    assert at(after, "midihub_malformed_packets_total", **i) == 3
    assert at(after, "midihub_malformed_packets_total", **o) == 0
    assert at(after, "midihub_panics_total", **o) == 1
    assert at(after, "midihub_journal_repairs_total", **i) == 0
    assert at(after, "midihub_messages_forwarded_total") == 2 * 20  # the panic is the hub's
    assert at(after, "midihub_forward_latency_seconds_count") == 10
    # In seconds (microseconds each; a unit off by 1000 would show), whatever the load.
    assert 0 < at(after, "midihub_forward_latency_seconds_sum") < 10 * 1.0
    packets = at(after, "midihub_packets_received_total", **i)
    assert 10 + 3 <= received_before <= packets <= received_after
    assert rtts_before > 0  # the peers' CK exchanges at join
    assert rtts_before <= at(after, "midihub_rtt_seconds_count", **o) <= rtts_after

    alice.send(bytes((0x90, 50, 90)))  # then leaves holding it
    await wait_for(lambda: carol.received[-1] == bytes((0x90, 50, 90)))
    alice.bye()
    await wait_for(lambda: carol.received[-1] == bytes((0x80, 50, 0)), what="release")
    _, _, gone = await scrape(url)
    assert at(gone, "midihub_participants", **i) == 0
    assert at(gone, "midihub_notes_released_total") == 1
    assert at(gone, "midihub_midi_messages_received_total", **i) == 21


async def test_metrics_need_the_token_when_the_hub_is_private(serve_room: ServeRoom) -> None:
    _, url, port, _ = await serve_room(public=False)
    status, _, _ = await scrape(url)
    assert status == 401
    status, _, samples = await scrape(url, TOKEN)
    assert status == 200 and at(samples, "midihub_participants", port=port, name="R") == 0


def _close_sockets(pair: PortPair) -> None:
    """Its sockets closed under it: sending fails with EBADF, an errno no network sends."""
    loop = asyncio.get_running_loop()
    for port in pair._sockets:
        sock = port._socket
        assert sock is not None
        loop.remove_reader(sock.fileno())
        sock.close()


@pytest.mark.parametrize("breaks", [_close_sockets, PortPair.close], ids=["EBADF", "closed"])
async def test_a_failing_port_costs_only_its_own_datagrams_and_each_is_counted(
    breaks: Callable[[PortPair], None], serve_hub: Serve, make_peer: MakePeer
) -> None:
    """One flush drains every port: when one port cannot send (an unexpected socket
    error, or a bug: a closed pair still in use), each of its datagrams is counted and
    every other port's datagrams of that flush still go out. The shutdown's BYs, to
    everyone on both ports of each participant, are such a flush."""
    broken, fine = free_ports(2)
    running, url = await serve_hub(f"[rooms]\nBroken = {broken}\nFine = {fine}")
    lost = await joined(make_peer, broken, "lost1", "lost2")
    heard = await joined(make_peer, fine, "heard1", "heard2")
    breaks(running.server.pairs[broken])
    running.server.close()
    for peer in heard:
        await wait_for(lambda p=peer: p.left() == [LeaveReason.BYE], 5, f"{peer.name}'s BY")
    assert all(peer.left() == [] for peer in lost)
    _, _, samples = await scrape(url)
    assert at(samples, "midihub_send_errors_total", port=broken, name="Broken") == 2 * len(lost)
    assert at(samples, "midihub_send_errors_total", port=fine, name="Fine") == 0
