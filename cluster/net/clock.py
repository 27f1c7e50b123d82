"""The real clock: the only place that reads time (the core takes a `Clock` or a `now`)."""

from __future__ import annotations

import time


class SystemClock:
    """The real clocks. `offset` shifts the wall clock (fault tests simulate skew with it)."""

    __slots__ = ("offset",)

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def wall(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()
