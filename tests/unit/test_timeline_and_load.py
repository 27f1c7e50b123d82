"""The dashboard's pure parts: the membership timeline and the load of the last minute."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.core.load import LoadHistory, quantile
from cluster.membership.members import ALIVE, DEAD, LEFT, SUSPECT, MemberEvent
from cluster.membership.timeline import Timeline, kind_of


def event(old: str | None, new: str | None, by: str | None = None) -> MemberEvent:
    return MemberEvent("n2", "127.0.0.1:2", old, new, 7, by)


@pytest.mark.parametrize(
    ("old", "new", "by", "kind"),
    [
        (None, ALIVE, None, "joined"),
        (DEAD, ALIVE, None, "joined"),
        (LEFT, ALIVE, None, "joined"),
        (SUSPECT, ALIVE, None, "refuted"),
        (ALIVE, SUSPECT, None, "suspect"),
        (SUSPECT, DEAD, None, "dead"),
        (ALIVE, LEFT, None, "left"),
        (ALIVE, LEFT, "n1", "removed"),
        (DEAD, None, None, "forgotten"),
    ],
)
def test_each_change_is_named_as_an_operator_says_it(
    old: str | None, new: str | None, by: str | None, kind: str
) -> None:
    assert kind_of(event(old, new, by)) == kind


def test_the_timeline_keeps_fifteen_minutes_and_a_bounded_count() -> None:
    timeline = Timeline(keep=900.0, max_entries=3)
    timeline.record(event(None, ALIVE), at=0.0)
    timeline.record(event(ALIVE, SUSPECT), at=100.0)
    timeline.record(event(SUSPECT, ALIVE), at=200.0)
    assert [e.kind for e in timeline.entries(now=300.0)] == ["joined", "suspect", "refuted"]
    timeline.record(event(ALIVE, LEFT, "n1"), at=300.0)  # the oldest goes: at most 3
    assert [e.kind for e in timeline.entries(now=300.0)] == ["suspect", "refuted", "removed"]
    assert timeline.entries(now=300.0)[-1].detail == "by n1"
    assert [e.kind for e in timeline.entries(now=1050.0)] == ["refuted", "removed"]


def test_the_quantile_interpolates_inside_its_bucket() -> None:
    bounds = (1.0, 2.0, 4.0)
    assert quantile(0.99, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [10, 0, 0, 0]) == pytest.approx(0.5)
    assert quantile(0.99, bounds, [0, 100, 0, 0]) == pytest.approx(1.99)
    assert quantile(0.99, bounds, [98, 0, 2, 0]) == pytest.approx(3.0)
    assert quantile(0.99, bounds, [0, 0, 0, 5]) == 4.0  # above every bound: "at least"


@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=4, max_size=4))
def test_the_quantile_lies_within_the_histogram_s_range(counts: list[int]) -> None:
    bounds = (1.0, 2.0, 4.0)
    q = quantile(0.99, bounds, counts)
    if sum(counts) == 0:
        assert q is None
    else:
        assert q is not None
        assert 0.0 <= q <= 4.0


def test_the_load_is_the_difference_between_samples_over_the_last_minute() -> None:
    bounds = (0.001, 0.01)
    history = LoadHistory(bounds, window=60.0)
    assert history.load(0.0).requests_per_s is None
    requests = 0
    buckets = [0, 0, 0]
    for second in range(120):
        requests += 10 if second < 60 else 50  # 10/s for a minute, then 50/s
        buckets[0 if second < 60 else 1] += 10 if second < 60 else 50
        history.sample(float(second), requests, buckets)
    load = history.load(119.0)
    # Only the last minute counts: all at 50/s, all in the second bucket.
    assert load.requests_per_s == pytest.approx(50.0)
    assert load.p99_ms is not None
    assert 1.0 < load.p99_ms <= 10.0
    assert len(load.series) == 60
    assert load.series[-1] == (0.0, 50.0)
    assert all(ago <= 60.0 for ago, _ in load.series)


def test_a_sample_must_carry_one_count_per_bucket() -> None:
    with pytest.raises(ValueError, match="one count per bound"):
        LoadHistory((1.0,)).sample(0.0, 1, [1])
