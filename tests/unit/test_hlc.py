"""The hybrid logical clock: monotonic whatever the wall clock does, bounded trust in remotes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.core.clock import FakeClock
from cluster.core.hlc import (
    LOGICAL_BITS,
    LOGICAL_MASK,
    HybridClock,
    logical_of,
    pack,
    wall_ms_of,
    wall_seconds_of,
)
from cluster.errors import ClockSkewError

START = 1_700_000_000.0
START_MS = int(START * 1000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def hlc(clock: FakeClock) -> HybridClock:
    return HybridClock(clock.wall, max_offset=0.5)


# --- the fake clock the HLC tests stand on ---------------------------------------------------


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(100.0)
    assert (clock.wall(), clock.monotonic()) == (100.0, 0.0)
    clock.advance(2.5)
    assert (clock.wall(), clock.monotonic()) == (102.5, 2.5)


def test_fake_clock_refuses_to_go_backwards() -> None:
    clock = FakeClock(100.0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    assert clock.wall() == 100.0


def test_fake_clock_steps_the_wall_clock_without_the_monotonic_one() -> None:
    clock = FakeClock(100.0)
    clock.advance(1)
    clock.set_wall(50.0)
    assert (clock.wall(), clock.monotonic()) == (50.0, 1.0)


# --- packing ------------------------------------------------------------------------------------


def test_pack_and_unpack_round_trip() -> None:
    ts = pack(START_MS, 7)
    assert wall_ms_of(ts) == START_MS
    assert logical_of(ts) == 7
    assert wall_seconds_of(ts) == START
    assert pack(START_MS) == START_MS << LOGICAL_BITS


@given(
    wall_ms=st.integers(min_value=0, max_value=2**47),
    logical=st.integers(min_value=0, max_value=LOGICAL_MASK),
)
def test_pack_round_trips_and_orders_like_the_pair(wall_ms: int, logical: int) -> None:
    ts = pack(wall_ms, logical)
    assert (wall_ms_of(ts), logical_of(ts)) == (wall_ms, logical)
    # The packed int orders exactly as (wall_ms, logical) does.
    if logical < LOGICAL_MASK:
        assert ts < pack(wall_ms, logical + 1)
    assert ts < pack(wall_ms + 1, 0)


# --- local events ------------------------------------------------------------------------------


def test_now_follows_the_wall_clock(clock: FakeClock, hlc: HybridClock) -> None:
    first = hlc.now()
    assert (wall_ms_of(first), logical_of(first)) == (START_MS, 0)
    clock.advance(0.25)
    second = hlc.now()
    assert (wall_ms_of(second), logical_of(second)) == (START_MS + 250, 0)
    assert hlc.last == second


def test_logical_counter_counts_events_within_one_millisecond(hlc: HybridClock) -> None:
    stamps = [hlc.now() for _ in range(5)]
    assert [wall_ms_of(t) for t in stamps] == [START_MS] * 5
    assert [logical_of(t) for t in stamps] == [0, 1, 2, 3, 4]


def test_logical_counter_resets_when_the_wall_clock_moves_on(
    clock: FakeClock, hlc: HybridClock
) -> None:
    hlc.now()
    hlc.now()
    clock.advance(0.001)
    ts = hlc.now()
    assert (wall_ms_of(ts), logical_of(ts)) == (START_MS + 1, 0)


def test_monotonic_when_the_wall_clock_steps_back(clock: FakeClock, hlc: HybridClock) -> None:
    before = hlc.now()
    clock.set_wall(START - 60)  # NTP steps the clock back a minute
    after = [hlc.now() for _ in range(3)]
    assert before < after[0] < after[1] < after[2]
    # It holds the physical part it had reached and counts logically until the wall catches up.
    assert [wall_ms_of(t) for t in after] == [START_MS] * 3
    clock.set_wall(START + 1)
    caught_up = hlc.now()
    assert (wall_ms_of(caught_up), logical_of(caught_up)) == (START_MS + 1000, 0)


def test_logical_overflow_carries_into_the_physical_part(hlc: HybridClock) -> None:
    stamps = [hlc.now() for _ in range(LOGICAL_MASK + 2)]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    assert wall_ms_of(stamps[-1]) == START_MS + 1


@settings(max_examples=50, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["now", "observe"]),
            st.floats(min_value=-5, max_value=5, allow_nan=False),
            st.integers(min_value=-2000, max_value=400),  # remote offset in ms (within max)
        ),
        max_size=60,
    )
)
def test_every_timestamp_is_greater_than_all_before(
    steps: list[tuple[str, float, int]],
) -> None:
    clock = FakeClock(START)
    hlc = HybridClock(clock.wall, max_offset=0.5)
    seen = [hlc.now()]
    for op, wall_step, remote_offset_ms in steps:
        clock.set_wall(clock.wall() + wall_step)  # the wall clock jumps either way
        if op == "now":
            ts = hlc.now()
        else:
            remote = pack(int(clock.wall() * 1000) + remote_offset_ms, 3)
            ts = hlc.observe(remote)
            assert ts > remote
        assert ts > max(seen)
        assert hlc.last == ts
        seen.append(ts)


# --- remote timestamps ---------------------------------------------------------------------


def test_observe_a_remote_ahead_within_the_offset_advances_past_it(hlc: HybridClock) -> None:
    local = hlc.now()
    remote = pack(START_MS + 400, 9)  # 400 ms ahead, max offset 500 ms
    ts = hlc.observe(remote)
    assert ts > remote > local
    assert (wall_ms_of(ts), logical_of(ts)) == (START_MS + 400, 10)
    # Later local events stay past the remote one, though the wall clock has not moved.
    assert hlc.now() > ts


def test_observe_exactly_at_the_max_offset_is_accepted(hlc: HybridClock) -> None:
    remote = pack(START_MS + 500, 0)
    assert hlc.observe(remote) > remote


def test_observe_a_remote_behind_still_moves_forward(clock: FakeClock, hlc: HybridClock) -> None:
    local = hlc.now()
    ts = hlc.observe(pack(START_MS - 10_000, 0))
    assert ts > local
    assert wall_ms_of(ts) == START_MS


def test_remote_beyond_the_max_offset_is_refused_and_changes_nothing(
    clock: FakeClock, hlc: HybridClock
) -> None:
    local = hlc.now()
    remote = pack(START_MS + 501, 0)
    with pytest.raises(ClockSkewError, match="501 ms ahead"):
        hlc.observe(remote)
    assert hlc.last == local
    nxt = hlc.now()
    assert (wall_ms_of(nxt), logical_of(nxt)) == (START_MS, 1)  # not dragged into the future
    with pytest.raises(ClockSkewError):
        hlc.check(remote)


def test_max_offset_is_measured_against_the_current_wall_clock(
    clock: FakeClock, hlc: HybridClock
) -> None:
    remote = pack(START_MS + 2000, 0)
    with pytest.raises(ClockSkewError):
        hlc.observe(remote)
    clock.advance(1.6)  # now only 400 ms behind the remote
    assert hlc.observe(remote) > remote


def test_max_offset_is_configurable(clock: FakeClock) -> None:
    hlc = HybridClock(clock.wall, max_offset=2.0)
    assert hlc.observe(pack(START_MS + 1900, 0)) > pack(START_MS + 1900, 0)
    with pytest.raises(ClockSkewError):
        hlc.observe(pack(START_MS + 2100, 0))
