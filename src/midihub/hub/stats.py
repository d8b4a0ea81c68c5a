"""Per-participant figures the admin asks for: latency (with when each extreme
happened), jitter and message counts. Plain counters, updated on the packet path,
read by the web API; times are the hub's monotonic clock (the API converts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ParticipantStats:
    messages_in: int = 0
    messages_out: int = 0
    samples: int = 0
    rtt_sum: float = 0.0
    last: float | None = None  # seconds
    last_at: float = 0.0
    min: float | None = None
    min_at: float = 0.0
    max: float | None = None
    max_at: float = 0.0
    jitter: float = 0.0  # seconds; smoothed |ΔRTT| as RFC 3550 §6.4.1 smooths transit

    def add_rtt(self, rtt: float, now: float) -> None:
        if self.last is not None:
            self.jitter += (abs(rtt - self.last) - self.jitter) / 16
        self.samples += 1
        self.rtt_sum += rtt
        self.last, self.last_at = rtt, now
        if self.min is None or rtt < self.min:
            self.min, self.min_at = rtt, now
        if self.max is None or rtt > self.max:
            self.max, self.max_at = rtt, now

    @property
    def average(self) -> float | None:
        return self.rtt_sum / self.samples if self.samples else None
