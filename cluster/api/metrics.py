"""Prometheus metrics of one node, in a registry of its own (several nodes can share a process
in tests).

Request counts and latencies sit on the hot path of every request, so they are kept in plain
dicts and lists (no locks, no label lookups: a node is single-threaded) and turned into Prometheus
families only when /metrics is scraped. Every component's figures are read at scrape time from a
callback (`Reading`s), so they cost nothing between scrapes. Components keep plain counters; what
each one means, and whether it is a counter (exported with `_total`) or a gauge, is written once,
in `SERIES` below: a component figure without an entry there fails the scrape (and its test).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Routes that are not client load: peers, scrapes, health checks, the dashboard itself.
NOT_LOAD = ("/internal/", "/metrics", "/health", "/cluster/", "/ui")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Reading(NamedTuple):
    """One figure read at scrape time: a counter (only grows; exported as NAME_total) or a gauge."""

    name: str
    help: str
    value: float
    counter: bool = False


ReadingSource = Callable[[], list[Reading]]

# The components' own figures (Replicator.stats, Gossip.stats): name -> (help, is a counter).
SERIES: dict[str, tuple[str, bool]] = {
    "replication_peers": ("peers this node replicates to", False),
    "replication_queued_writes": ("writes queued for peers, not acknowledged yet (hints)", False),
    "replication_sent_requests": ("replication requests a peer answered", True),
    "replication_failed_requests": ("replication requests that failed (retried)", True),
    "replication_received_batches": ("batches received from peers", True),
    "replication_refused_batches": (
        "batches from peers refused: their timestamp was too far ahead of our clock",
        True,
    ),
    "gossip_datagrams_received": ("gossip datagrams that arrived, before any check", True),
    "gossip_datagrams_sent": ("gossip datagrams handed to the transport", True),
    "gossip_dropped_malformed": ("gossip packets dropped: garbage, truncated or wrong shape", True),
    "gossip_dropped_auth": ("gossip packets dropped: not signed with our cluster key", True),
    "gossip_dropped_stale": ("gossip packets dropped: signed outside the replay window", True),
    "gossip_dropped_oversized": ("gossip packets dropped: larger than allowed", True),
    "gossip_push_pull_ok": ("push/pull exchanges this node started that succeeded", True),
    "gossip_push_pull_failed": ("push/pull exchanges this node started that failed", True),
    "gossip_push_pull_served": ("push/pull requests from peers answered", True),
    "gossip_push_pull_refused": ("push/pull requests from peers refused", True),
    "gossip_health_score": (
        "Lifeguard local health: 0 is healthy; probes slow by score + 1",
        False,
    ),
    "gossip_pending_broadcasts": ("membership updates waiting to be gossiped", False),
}


def readings(stats: Mapping[str, float]) -> list[Reading]:
    """A component's figures with their written meaning (KeyError: a figure no one described)."""
    out = []
    for name, value in stats.items():
        help_text, counter = SERIES[name]
        out.append(Reading(name, help_text, value, counter))
    return out


class _Latency:
    """One route's latency histogram: per-bucket counts (last one is +Inf) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        requests = CounterMetricFamily(
            "request_count",
            "HTTP requests served, by route, method and status",
            labels=["route", "method", "status"],
        )
        for (route, method, status), n in sorted(m.request_counts.items()):
            requests.add_metric([route, method, str(status)], n)
        yield requests
        latency = HistogramMetricFamily(
            "request_latency_seconds", "HTTP request latency in seconds, by route", labels=["route"]
        )
        for route, lat in sorted(m.latencies.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), lat.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([route], buckets, lat.total)
        yield latency
        for r in sorted(m.readings()):
            if r.counter:
                yield CounterMetricFamily(r.name, r.help, value=r.value)
            else:
                yield GaugeMetricFamily(r.name, r.help, value=r.value)


class Metrics:
    def __init__(self, readings: ReadingSource) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call] # the *_created series only double the scrape size
        self.readings = readings
        self.request_counts: dict[tuple[str, str, int], int] = {}
        self.latencies: dict[str, _Latency] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.internal_errors = Counter(
            "internal_error_count",
            "requests that failed with an unexpected exception (bugs)",
            registry=self.registry,
        )
        self.line_commands = Counter(
            "line_command_count",
            "line-protocol commands served, by outcome",
            ["status"],
            registry=self.registry,
        )
        self.resp_commands = Counter(
            "resp_command_count",
            "RESP commands served, by outcome",
            ["status"],
            registry=self.registry,
        )
        self.registry.register(_Collector(self))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counts = self.request_counts
        counts[key] = counts.get(key, 0) + 1
        lat = self.latencies.get(route)
        if lat is None:
            lat = self.latencies[route] = _Latency()
        lat.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        lat.total += seconds

    def client_totals(self) -> tuple[int, list[int]]:
        """Client requests served so far (HTTP, line-protocol and RESP commands; not peers',
        scrapes or health checks), and the HTTP ones' latency counts per bucket summed over
        routes: what the dashboard's load history samples once a second."""
        requests = sum(
            n for (route, _, _), n in self.request_counts.items() if not route.startswith(NOT_LOAD)
        )
        buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        for route, lat in self.latencies.items():
            if not route.startswith(NOT_LOAD):
                buckets = [a + b for a, b in zip(buckets, lat.counts, strict=True)]
        get = self.registry.get_sample_value
        for family in ("line_command_count_total", "resp_command_count_total"):
            for status in ("ok", "error"):
                requests += int(get(family, {"status": status}) or 0)
        return requests, buckets

    def render(self) -> bytes:
        return generate_latest(self.registry)
