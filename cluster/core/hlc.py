"""Hybrid logical clock (Kulkarni et al., 2014), packed into one integer.

A timestamp is `(wall_ms << 16) | logical`: the physical part in milliseconds since the epoch and a
16-bit logical counter. Packing keeps an entry's timestamp one int (compact in memory, compared in
one operation) and makes the HLC rules simple:

    now()          = max(last + 1, wall_ms << 16)
    observe(r)     = max(last + 1, wall_ms << 16, r + 1)

Both are strictly greater than every timestamp this clock issued or observed, so the clock is
monotonic even when the wall clock steps back. If the logical counter overflows it carries into the
millisecond part, which keeps monotonicity (the clock runs ahead by a millisecond) - far beyond
65,536 events per millisecond, which one Python process cannot produce.

A remote timestamp more than `max_offset` ahead of our wall clock is refused (`ClockSkewError`):
adopting it would drag every later write of this node into the future.

Order between writes is `(timestamp, node name)`, a total order: see `Version` in store.py.
"""

from __future__ import annotations

from collections.abc import Callable

from cluster.errors import ClockSkewError

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def pack(wall_ms: int, logical: int = 0) -> int:
    return (wall_ms << LOGICAL_BITS) | logical


def wall_ms_of(ts: int) -> int:
    return ts >> LOGICAL_BITS


def wall_seconds_of(ts: int) -> float:
    """The physical time a timestamp was taken, in epoch seconds."""
    return (ts >> LOGICAL_BITS) / 1000.0


def logical_of(ts: int) -> int:
    return ts & LOGICAL_MASK


class HybridClock:
    """Issues timestamps for local events and folds in remote ones.

    `wall` is a function returning epoch seconds (the `Clock.wall` of clock.py), so tests drive it.
    Invariant: every value returned by `now` or `observe` is greater than every earlier one.
    """

    __slots__ = ("_last", "_max_offset_ms", "_wall")

    def __init__(self, wall: Callable[[], float], max_offset: float = 0.5) -> None:
        self._wall = wall
        self._max_offset_ms = int(max_offset * 1000)
        self._last = 0

    @property
    def last(self) -> int:
        """The greatest timestamp issued or observed so far."""
        return self._last

    def _physical(self) -> int:
        return int(self._wall() * 1000) << LOGICAL_BITS

    def now(self) -> int:
        """A timestamp for a local event (a write)."""
        ts = max(self._last + 1, self._physical())
        self._last = ts
        return ts

    def limit(self) -> int:
        """The greatest remote timestamp `observe` would accept right now."""
        return ((int(self._wall() * 1000) + self._max_offset_ms) << LOGICAL_BITS) | LOGICAL_MASK

    def check(self, remote: int) -> None:
        """Raise ClockSkewError if `remote` is further ahead than the maximum offset."""
        ahead_ms = (remote >> LOGICAL_BITS) - int(self._wall() * 1000)
        if ahead_ms > self._max_offset_ms:
            raise ClockSkewError(
                f"remote timestamp is {ahead_ms} ms ahead (max offset {self._max_offset_ms} ms)"
            )

    def restored(self, ts: int) -> None:
        """This node issued or held `ts` before it restarted (its disk copy): never go below it.
        Its own history, so no skew check."""
        self._last = max(self._last, ts)

    def observe(self, remote: int) -> int:
        """Fold a remote timestamp in (on receiving a replicated write); returns the new clock."""
        self.check(remote)
        ts = max(self._last + 1, self._physical(), remote + 1)
        self._last = ts
        return ts
