"""Per-participant figures the admin asks for: latency (with when each extreme
happened), jitter and message counts. Plain counters, updated on the packet path,
read by the web API; times are the hub's monotonic clock (the API converts)."""

from __future__ import annotations

from dataclasses import dataclass, field


class Tally:
    """Messages a port's forwards sent to each of its participants: one number for the
    whole port, so a forward costs O(1) whatever the number of receivers."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


@dataclass(slots=True)
class ParticipantStats:
    port_tally: Tally = field(default_factory=Tally)  # its port's (Endpoint.tally)
    messages_in: int = 0
    samples: int = 0
    rtt_sum: float = 0.0
    last: float | None = None  # seconds
    last_at: float = 0.0
    min: float | None = None
    min_at: float = 0.0
    max: float | None = None
    max_at: float = 0.0
    jitter: float = 0.0  # seconds; smoothed |ΔRTT| as RFC 3550 §6.4.1 smooths transit
    # messages_out is the port's tally since these stats began, less the forwards that
    # left this participant out (its own, in a room; a hub link's, for another link),
    # plus what the hub sent it alone (a panic to one).
    tally_at_start: int = field(init=False, default=0)
    out_adjust: int = 0

    def __post_init__(self) -> None:
        self.tally_at_start = self.port_tally.count

    @property
    def messages_out(self) -> int:
        """MIDI messages sent to this participant (each copy counted)."""
        return self.port_tally.count - self.tally_at_start + self.out_adjust

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
