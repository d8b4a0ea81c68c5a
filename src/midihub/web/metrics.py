"""``GET /metrics``: the hub in Prometheus text format.

Counters are read from the hub's own tallies at scrape time (a custom collector),
so the packet path pays nothing for them; only the two latency histograms are
observed as things happen. One registry per hub, never the global one, so several
hubs (tests, embedding) never mix their figures. A probe measures how late the event
loop runs a callback every 100 ms: anything that stalls the loop (a slow handler, a
big JSON answer, the collector) delays MIDI by as much, and shows up here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from midihub.hub import Endpoint, Hub
from midihub.rtp import Drop, Event, LatencyMeasured
from midihub.web.guard import WebCounters
from midihub.web.monitor import Monitor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2)
FORWARD_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 0.001, 0.0025, 0.005, 0.01, 0.025)
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_PERIOD = 0.1


class LoopLagProbe:
    """Schedules itself every ``period`` and reports how late each run was."""

    def __init__(
        self,
        observe: Callable[[float], None],
        loop: asyncio.AbstractEventLoop,
        period: float = LAG_PERIOD,
    ) -> None:
        self._observe = observe
        self._loop = loop
        self.period = period
        self.max = 0.0
        self._due = loop.time() + period
        self._handle: asyncio.TimerHandle | None = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        lag = max(0.0, now - self._due)
        self.max = max(self.max, lag)
        self._observe(lag)
        self._due = now + self.period
        self._handle = self._loop.call_at(self._due, self._tick)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class HubCollector(Collector):
    """Per-port counters and gauges, straight from the hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        labels = ["port", "name"]

        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"midihub_{name}", doc, labels=labels)

        participants = GaugeMetricFamily(
            "midihub_participants", "Participants connected to the port.", labels=labels
        )
        packets_in = counter("packets_received", "UDP datagrams received on the port pair.")
        packets_out = counter("packets_sent", "UDP datagrams sent from the port pair.")
        messages_in = counter("midi_messages_received", "MIDI messages from participants.")
        messages_out = counter(
            "midi_messages_sent", "MIDI messages sent to participants (one per receiver)."
        )
        malformed = counter("malformed_packets", "Datagrams dropped as unreadable.")
        send_errors = counter("send_errors", "Datagrams the socket could not send.")
        unreadable = counter(
            "journals_unreadable", "Recovery journals we could not read (commands still used)."
        )
        trimmed = counter(
            "journals_trimmed", "Recovery journals cut to fit their packet (held notes first)."
        )
        resyncs = counter(
            "sequence_resyncs", "Peers whose RTP sequence jumped and was followed (RFC 3550)."
        )
        loss_releases = counter(
            "loss_releases",
            "Notes released after a loss from senders without recovery journals (release_after).",
        )
        repairs = counter(
            "journal_repairs", "MIDI messages recreated from RFC 6295 recovery journals."
        )
        panics = counter("panics", "Manual all-notes-off actions on the port.")
        pending = GaugeMetricFamily(
            "midihub_half_open_sessions",
            "Invitations not yet proven by a clock sync (half-open), on the port.",
            labels=labels,
        )
        dropped = CounterMetricFamily(
            "midihub_dropped",
            "Datagrams (or SysEx) refused or dropped, by reason (a fixed set).",
            labels=[*labels, "reason"],
        )
        for port, endpoint in sorted(self.hub.endpoints.items()):
            values = [str(port), endpoint.label]
            counters = endpoint.table.counters
            participants.add_metric(values, len(endpoint.participants))
            packets_in.add_metric(values, counters.received)
            packets_out.add_metric(values, counters.sent)
            messages_in.add_metric(values, endpoint.messages_in)
            messages_out.add_metric(values, endpoint.messages_out)
            malformed.add_metric(values, counters.malformed)
            send_errors.add_metric(values, counters.send_errors)
            unreadable.add_metric(values, counters.journals_unreadable)
            trimmed.add_metric(values, counters.journals_trimmed)
            resyncs.add_metric(values, counters.sequence_resyncs)
            loss_releases.add_metric(values, counters.loss_releases)
            repairs.add_metric(values, endpoint.journal_repairs)
            panics.add_metric(values, endpoint.panics)
            pending.add_metric(values, endpoint.table.pending)
            for reason in Drop:
                dropped.add_metric([*values, reason.value], counters.drops.get(reason, 0))
        yield from (participants, packets_in, packets_out, messages_in, messages_out)
        yield from (malformed, repairs, panics, pending, dropped)
        yield from (send_errors, unreadable, trimmed, resyncs, loss_releases)
        released = CounterMetricFamily(
            "midihub_notes_released",
            "NoteOffs sent for participants that left holding notes (or, with release_after,"
            " held them long after a loss).",
            value=self.hub.notes_released,
        )
        yield released
        yield CounterMetricFamily(
            "midihub_messages_forwarded",
            "MIDI messages the hub forwarded between participants (one per receiver).",
            value=self.hub.messages_forwarded,
        )
        links = GaugeMetricFamily(
            "midihub_link_up", "1 when the outbound link is joined.", labels=["remote", "port"]
        )
        for link in self.hub.links.values():
            links.add_metric([link.spec.remote, str(link.spec.port)], int(link.up))
        yield links


class WebCollector(Collector):
    """What the web side refused: by Host, token, bad input; monitor viewers."""

    def __init__(self, web: WebCounters, monitor: Monitor | None) -> None:
        self.web = web
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "midihub_web_requests_refused",
            "Web requests refused, by reason (host: DNS rebinding guard; token; "
            "bad_request: unreadable input; internal_error: a bug, logged).",
            labels=["reason"],
        )
        web = self.web
        for reason, value in (
            ("host", web.refused_host),
            ("token", web.refused_token),
            ("bad_request", web.bad_request),
            ("internal_error", web.internal_error),
        ):
            refused.add_metric([reason], value)
        yield refused
        if self.monitor is None:
            return
        counters = self.monitor.counters
        yield GaugeMetricFamily(
            "midihub_monitor_viewers", "Open monitor streams.", value=self.monitor.viewers
        )
        viewers_refused = CounterMetricFamily(
            "midihub_monitor_viewers_refused",
            "Monitor streams refused by the caps (web.monitor_viewers, "
            "web.monitor_viewers_per_ip).",
            labels=["reason"],
        )
        viewers_refused.add_metric(["total"], counters.refused_total)
        viewers_refused.add_metric(["per_ip"], counters.refused_per_ip)
        yield viewers_refused
        yield CounterMetricFamily(
            "midihub_monitor_batches_dropped",
            "Monitor batches a viewer missed because it was not reading.",
            value=counters.batches_dropped,
        )
        yield CounterMetricFamily(
            "midihub_monitor_events_dropped",
            "Events left out of a monitor batch that was already full.",
            value=counters.events_dropped,
        )
        yield CounterMetricFamily(
            "midihub_monitor_viewers_stalled",
            "Monitor viewers disconnected for reading nothing.",
            value=counters.stalled,
        )


class HistoryCounts(Protocol):
    flushes: int
    rollup_rebuilds: int
    overflowed: int
    dropped: int
    write_failures: int

    @property
    def buffered(self) -> int: ...


class HistoryCollector(Collector):
    """The latency history's writes, for an admin watching the database."""

    def __init__(self, history: HistoryCounts) -> None:
        self.history = history

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "midihub_history_flushes",
            "Batched writes of latency history to the database.",
            value=self.history.flushes,
        )
        yield CounterMetricFamily(
            "midihub_history_rollup_rebuilds",
            "Hourly roll-ups rebuilt from the per-minute rows (on start, when they disagreed).",
            value=self.history.rollup_rebuilds,
        )
        yield CounterMetricFamily(
            "midihub_history_samples_overflowed",
            "Latency samples kept in a port's (others) series: the port already keeps "
            "its maximum of distinct participant series over the retention.",
            value=self.history.overflowed,
        )
        yield CounterMetricFamily(
            "midihub_history_write_failures",
            "Latency history writes the database refused or could not take (kept in memory"
            " and retried).",
            value=self.history.write_failures,
        )
        yield GaugeMetricFamily(
            "midihub_history_buffered",
            "Series-minutes of latency history waiting in memory for the database.",
            value=self.history.buffered,
        )
        yield CounterMetricFamily(
            "midihub_history_samples_dropped",
            "Latency samples dropped: the database was away and the memory buffer was full.",
            value=self.history.dropped,
        )


class Metrics:
    """The hub's registry: the collector above plus the RTT and forward histograms."""

    def __init__(
        self, hub: Hub, *, web: WebCounters | None = None, monitor: Monitor | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HubCollector(hub))
        self.registry.register(WebCollector(web or WebCounters(), monitor))
        self.rtt = Histogram(
            "midihub_rtt_seconds",
            "Round-trip time to participants, from clock sync (CK) exchanges.",
            ["port", "name"],
            buckets=RTT_BUCKETS,
            registry=self.registry,
        )
        self.forward = Histogram(
            "midihub_forward_latency_seconds",
            "From reading datagrams that carried MIDI to having sent what they caused.",
            buckets=FORWARD_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "midihub_loop_lag_seconds",
            f"How late the event loop ran a callback scheduled every {LAG_PERIOD} s"
            " (MIDI waits as long).",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag_max = Gauge(
            "midihub_loop_lag_max_seconds",
            "The longest loop lag seen since the hub started.",
            registry=self.registry,
        )
        self.probe: LoopLagProbe | None = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop (tools, tests): no probe
            pass
        else:
            self.probe = LoopLagProbe(self._observe_lag, loop)
        hub.listeners.append(self.on_event)

    def _observe_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        if self.probe is not None:
            self.loop_lag_max.set(max(self.probe.max, seconds))

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()

    def on_event(self, endpoint: Endpoint, event: Event) -> None:
        if isinstance(event, LatencyMeasured):
            self.rtt.labels(str(endpoint.port), endpoint.label).observe(event.rtt)

    def observe_forward(self, seconds: float) -> None:
        self.forward.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class CountCollector(Collector):
    """One counter kept elsewhere (``read`` at scrape time), such as the join log's."""

    def __init__(self, name: str, doc: str, read: Callable[[], int]) -> None:
        self.name = name
        self.doc = doc
        self.read = read

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.doc, value=self.read())
