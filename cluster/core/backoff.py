"""Retry delays: exponential, capped, with jitter. Pure (the random generator is passed in).

Every retry loop of the node (replication to a peer that does not answer, a join whose seeds are
not up yet, a snapshot no peer could give) waits `backoff(attempt, base, cap, rng)`. The jitter
keeps nodes that failed together from retrying in lockstep ("equal jitter": half the delay fixed,
half random, so a retry never comes sooner than half the exponential step).
"""

from __future__ import annotations

import random

MAX_DOUBLINGS = 30  # 2**30 * base is past any cap: stop growing the exponent


def ceiling(attempt: int, base: float, cap: float) -> float:
    """The exponential step for the `attempt`-th retry (1 is the first): base * 2**(attempt-1),
    at most `cap`."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    return min(cap, base * (1 << min(attempt - 1, MAX_DOUBLINGS)))


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None) -> float:
    """Seconds to wait before retry number `attempt`: in [ceiling/2, ceiling]; without a random
    generator, the ceiling itself."""
    step = ceiling(attempt, base, cap)
    if rng is None:
        return step
    return step / 2 + rng.uniform(0.0, step / 2)
