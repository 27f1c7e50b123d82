"""Table tests of the failure detector's timing math (the numbers memberlist's tests use)."""

from __future__ import annotations

import pytest

from cluster.config import Config
from cluster.membership.suspicion import (
    Awareness,
    GossipParams,
    SuspicionTimer,
    confirmations_wanted,
    push_pull_interval,
    remaining_suspicion_time,
    retransmit_limit,
    scale_timeout,
    suspicion_timeout,
)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 1.0),  # log10 floored at 1: tiny clusters still wait mult intervals
        (1, 1.0),
        (5, 1.0),
        (10, 1.0),
        (50, 1.698),
        (100, 2.0),
        (500, 2.698),
        (1000, 3.0),
    ],
)
def test_suspicion_timeout_scales_with_log10_of_cluster_size(n: int, expected: float) -> None:
    assert suspicion_timeout(3, n, 1.0) / 3 == pytest.approx(expected, abs=0.001)


@pytest.mark.parametrize(
    ("mult", "n", "interval", "expected"),
    [
        (4, 3, 1.0, 4.0),  # LAN defaults, 3 nodes
        (4, 10, 1.0, 4.0),
        (4, 50, 1.0, 6.795),  # floored to the millisecond
        (4, 3, 0.1, 0.4),  # the for_tests preset
    ],
)
def test_suspicion_timeout_defaults(mult: int, n: int, interval: float, expected: float) -> None:
    assert suspicion_timeout(mult, n, interval) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("confirmations", "k", "elapsed", "expected"),
    [
        (0, 3, 0.0, 30.0),  # no confirmation: the maximum
        (1, 3, 2.0, 14.0),
        (2, 3, 3.0, 4.81),
        (3, 3, 4.0, -2.0),  # k confirmations: the minimum, already passed
        (4, 3, 5.0, -3.0),  # never below the minimum
        (5, 3, 10.0, -8.0),
        (0, 0, 1.0, 1.0),  # k = 0: no confirmations expected, the minimum from the start
    ],
)
def test_remaining_suspicion_time(
    confirmations: int, k: int, elapsed: float, expected: float
) -> None:
    got = remaining_suspicion_time(confirmations, k, elapsed, 2.0, 30.0)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [(3, 0, 0), (3, 1, 3), (3, 99, 6), (4, 3, 4), (4, 9, 4), (4, 10, 8), (4, 50, 8), (4, 100, 12)],
)
def test_retransmit_limit(mult: int, n: int, expected: int) -> None:
    assert retransmit_limit(mult, n) == expected


@pytest.mark.parametrize(
    ("n", "expected"), [(0, 1.0), (32, 1.0), (33, 2.0), (64, 2.0), (65, 3.0), (128, 3.0)]
)
def test_push_pull_interval_scales_past_32_members(n: int, expected: float) -> None:
    assert push_pull_interval(1.0, n) == expected


@pytest.mark.parametrize(
    ("mult", "n", "expected"), [(4, 1, 0), (4, 3, 0), (4, 4, 2), (4, 10, 2), (5, 4, 0), (5, 5, 3)]
)
def test_confirmations_wanted(mult: int, n: int, expected: int) -> None:
    assert confirmations_wanted(mult, n) == expected


def test_suspicion_timer_shrinks_with_independent_confirmations() -> None:
    # memberlist TestSuspicion_Timer: k=3, min 0.5 s, max 2 s.
    timer = SuspicionTimer("me", 3, 0.5, 2.0, start=100.0)
    assert timer.deadline == 102.0
    assert not timer.confirm("me", 100.0)  # the accuser does not confirm itself
    assert timer.confirm("foo", 100.0)
    assert timer.deadline == pytest.approx(101.25)
    assert not timer.confirm("foo", 100.0)  # nobody counts twice
    assert timer.confirm("bar", 100.0)
    assert timer.deadline == pytest.approx(100.811)
    assert timer.confirm("baz", 100.0)
    assert timer.deadline == pytest.approx(100.5)
    assert not timer.confirm("qux", 100.0)  # past k: the minimum is reached
    assert timer.n == 3


def test_suspicion_timer_without_expected_confirmations_uses_the_minimum() -> None:
    timer = SuspicionTimer("me", 0, 0.5, 2.0, start=10.0)
    assert timer.deadline == 10.5
    assert not timer.confirm("foo", 10.1)


def test_suspicion_timer_confirmation_late_in_the_window_fires_at_once() -> None:
    timer = SuspicionTimer("me", 3, 0.5, 2.0, start=0.0)
    assert timer.confirm("a", 1.9)
    assert timer.deadline == pytest.approx(1.25)  # already past: the next tick declares it dead


@pytest.mark.parametrize(
    ("deltas", "score", "scaled"),
    [
        ([], 0, 1.0),
        ([1], 1, 2.0),
        ([3, 3, 3], 7, 8.0),  # capped at max - 1
        ([2, -1, -5], 0, 1.0),  # floored at 0
    ],
)
def test_awareness(deltas: list[int], score: int, scaled: float) -> None:
    a = Awareness(8)
    for d in deltas:
        a.apply(d)
    assert a.score == score
    assert a.scale(1.0) == scaled
    assert scale_timeout(0.5, score) == 0.5 * (score + 1)


def test_params_defaults_are_memberlist_lan() -> None:
    p = GossipParams().validate()
    assert (p.probe_interval, p.probe_timeout, p.indirect_checks) == (1.0, 0.5, 3)
    assert (p.suspicion_mult, p.suspicion_max_timeout_mult, p.retransmit_mult) == (4, 6, 4)
    assert (p.gossip_interval, p.gossip_nodes, p.push_pull_interval) == (0.2, 3, 30.0)
    fast = Config.for_tests().gossip_params()
    assert fast.probe_interval < 1.0
    assert fast.push_pull_interval < 30.0


@pytest.mark.parametrize(
    "overrides",
    [
        {"probe_interval": 0.0},
        {"probe_timeout": -1.0},
        {"probe_timeout": 2.0},  # not shorter than the interval
        {"indirect_checks": 2.5},
        {"gossip_nodes": True},
        {"packet_budget": 100},
        {"push_pull_interval": float("inf")},
    ],
)
def test_params_validation_names_the_field(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(overrides))):
        GossipParams().with_(**overrides)
