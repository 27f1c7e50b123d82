"""A node's request rate and p99 latency over the last minute, for the dashboard. Pure.

The request path stays as cheap as it is: it only bumps the cumulative counters and histogram
buckets that /metrics exports. Once a second, a sampler hands their totals to `LoadHistory`,
which keeps a minute of samples; rates and the p99 come from the difference between two samples,
the way Prometheus' `rate()` and `histogram_quantile()` read the same series. So the p99 has the
histogram's resolution: it is interpolated inside the bucket it falls in.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic seconds
    requests: int  # cumulative
    buckets: tuple[int, ...]  # cumulative latency counts per bucket (last: above every bound)


@dataclass(frozen=True, slots=True)
class Load:
    requests_per_s: float | None  # None until two samples exist
    p99_ms: float | None  # None without requests in the window
    series: list[tuple[float, float]]  # (seconds ago, requests/s) per sample interval, oldest first

    def as_dict(self) -> dict[str, object]:
        return {
            "requests_per_s": self.requests_per_s,
            "p99_ms": self.p99_ms,
            "series": [[round(ago, 1), round(rate, 2)] for ago, rate in self.series],
        }


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The q-quantile of a histogram (`counts[i]` in (bounds[i-1], bounds[i]], the last count
    above every bound), interpolated linearly inside its bucket; None when it is empty."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return bounds[-1]  # above the last bound: all that is known is "more than"
            low = bounds[i - 1] if i > 0 else 0.0
            return low + (bounds[i] - low) * (rank - seen) / count
        seen += count
    return bounds[-1]


class LoadHistory:
    """Samples of cumulative counters over the last `window` seconds (one expected a second)."""

    def __init__(self, bounds: Sequence[float], window: float = 60.0) -> None:
        self.bounds = tuple(bounds)
        self.window = window
        self._samples: deque[Sample] = deque()

    def sample(self, now: float, requests: int, buckets: Sequence[int]) -> None:
        if len(buckets) != len(self.bounds) + 1:
            raise ValueError("one count per bound, plus one above them")
        self._samples.append(Sample(now, requests, tuple(buckets)))
        # Keep one sample at or before the window's start, so the window is measured whole.
        while len(self._samples) > 2 and self._samples[1].at <= now - self.window:
            self._samples.popleft()

    def load(self, now: float) -> Load:
        samples = list(self._samples)
        if len(samples) < 2:
            return Load(None, None, [])
        first, last = samples[0], samples[-1]
        elapsed = last.at - first.at
        rate = (last.requests - first.requests) / elapsed if elapsed > 0 else None
        delta = [b - a for a, b in zip(first.buckets, last.buckets, strict=True)]
        p99 = quantile(0.99, self.bounds, delta)
        series = [
            (now - b.at, (b.requests - a.requests) / (b.at - a.at))
            for a, b in itertools.pairwise(samples)
            if b.at > a.at
        ]
        return Load(rate, None if p99 is None else p99 * 1000, series)
