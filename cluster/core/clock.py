"""The Clock protocol, and a fake one for tests. The real clock is `cluster.net.clock.SystemClock`,
the only place that reads time.

Everything else gets time passed in (`now` arguments) or holds a `Clock`. Tests use `FakeClock`,
which only moves when told to and refuses to move backwards (as trio's MockClock does); the wall
clock of a FakeClock can be stepped back on purpose with `set_wall` to test the HLC.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def wall(self) -> float:
        """Seconds since the epoch (may step back when NTP corrects it)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes back."""
        ...


class FakeClock:
    """A clock for tests: starts at `start` and moves only by `advance`."""

    __slots__ = ("_mono", "_wall")

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("FakeClock cannot go backwards; use set_wall to step the wall clock")
        self._wall += seconds
        self._mono += seconds

    def set_wall(self, wall: float) -> None:
        """Step the wall clock (forwards or back) without touching the monotonic one."""
        self._wall = wall
