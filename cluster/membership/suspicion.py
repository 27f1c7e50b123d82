"""Timing of the SWIM failure detector: the parameters and the pure math derived from them.

Everything here is a pure function of its arguments (no clock, no randomness) so it is table-tested
against the numbers hashicorp/memberlist produces for the same inputs:

- `suspicion_timeout(mult, n, interval)`: how long a suspect stays suspect when nobody confirms
  the suspicion, scaled by log10 of the cluster size (bigger clusters need longer to spread a
  refutation). Never below `mult * interval`: memberlist floors the log factor at 1.
- `remaining_suspicion_time(confirmations, k, elapsed, min, max)`: Lifeguard's "dogpile"
  refinement. A suspicion starts at `max` and shrinks logarithmically towards `min` as `k`
  independent members confirm it, so a real failure is declared quickly while a lone, possibly
  unhealthy accuser cannot kill a node before it had a long chance to refute.
- `retransmit_limit(mult, n)`: how many times a piggybacked update is sent before it is dropped:
  `mult * ceil(log10(n + 1))` transmissions reach every member with high probability.
- `push_pull_interval(interval, n)`: full state exchanges slow down past 32 members so their
  cost per node stays flat.
- `Awareness`: Lifeguard's local health multiplier. A node that misses acks it should have got
  (or has to refute accusations) is probably the slow one; it stretches its own probe interval
  instead of accusing healthy peers.

`GossipParams` holds the knobs with memberlist's LAN defaults; the node builds them from its
Config (`Config.gossip_params`), whose `for_tests()` preset scales them down to milliseconds.
Validation raises ValueError with the field named (no asserts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

PUSH_PULL_SCALE_THRESHOLD = 32  # members; push/pull is not slowed down below this


@dataclass(frozen=True, slots=True)
class GossipParams:
    """Membership tuning. Defaults are hashicorp/memberlist's DefaultLANConfig where it has one."""

    probe_interval: float = 1.0  # seconds between failure probes (scaled up by local health)
    probe_timeout: float = 0.5  # seconds to wait for a direct ack before asking others to probe
    indirect_checks: int = 3  # members asked to probe on our behalf when the direct probe fails
    suspicion_mult: int = 4  # suspicion timeout = mult * max(1, log10(n)) * probe_interval
    suspicion_max_timeout_mult: int = 6  # an unconfirmed suspicion lasts up to this * the minimum
    retransmit_mult: int = 4  # each update is piggybacked retransmit_mult * ceil(log10(n+1)) times
    gossip_interval: float = 0.2  # seconds between gossip rounds (pending updates only)
    gossip_nodes: int = 3  # members sent each gossip round (the fanout)
    gossip_to_dead_time: float = 30.0  # seconds a dead member still gets gossip (so it can refute)
    push_pull_interval: float = 30.0  # seconds between full state exchanges with a random peer
    reconnect_interval: float = 30.0  # seconds between push/pull attempts to a dead member (heals
    #                                   partitions: both sides think the other is dead)
    awareness_max_multiplier: int = 8  # local health stretches the probe interval up to this factor
    reap_after: float = 86400.0  # seconds a dead or left member is remembered (tombstone against
    #                              stale gossip) before it is forgotten
    packet_budget: int = 1400  # bytes of one UDP datagram (safe below common MTUs)
    push_pull_timeout: float = 10.0  # seconds an HTTP push/pull may take (IO layer)
    replay_window: float = 120.0  # seconds an authenticated datagram stays acceptable (IO layer)

    def validate(self) -> GossipParams:
        """Return self, or raise ValueError naming the first bad field."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{f.name} must be positive and finite, got {value!r}")
        for name in (
            "indirect_checks",
            "suspicion_mult",
            "suspicion_max_timeout_mult",
            "retransmit_mult",
            "gossip_nodes",
            "awareness_max_multiplier",
            "packet_budget",
        ):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError(
                f"probe_timeout ({self.probe_timeout}) must be shorter than probe_interval "
                f"({self.probe_interval}): the indirect probe needs the rest of the interval"
            )
        if self.packet_budget < 512:
            raise ValueError(f"packet_budget must be at least 512 bytes, got {self.packet_budget}")
        return self

    def with_(self, **overrides: Any) -> GossipParams:
        """A validated copy with some fields changed."""
        return replace(self, **overrides).validate()


def suspicion_timeout(mult: int, n: int, interval: float) -> float:
    """The minimum suspicion timeout for a cluster of `n` members (memberlist suspicionTimeout).

    Rounded down to the millisecond as memberlist does, so tables compare exactly.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return math.floor(mult * node_scale * interval * 1000.0) / 1000.0


def remaining_suspicion_time(
    confirmations: int, k: int, elapsed: float, min_timeout: float, max_timeout: float
) -> float:
    """Seconds left before a suspect is declared dead (may be negative: fire at once).

    The total timeout goes from `max_timeout` (no confirmations) down to `min_timeout` (k of them)
    along log(n+1)/log(k+1), floored to the millisecond; `elapsed` is time already spent suspect.
    With k < 1 no confirmations are expected and the minimum applies from the start.
    """
    if k < 1:
        return min_timeout - elapsed
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = max_timeout - frac * (max_timeout - min_timeout)
    timeout = max(min_timeout, math.floor(1000.0 * raw) / 1000.0)
    return timeout - elapsed


def confirmations_wanted(suspicion_mult: int, n: int) -> int:
    """k: independent confirmations that drive a suspicion to its minimum timeout.

    memberlist aims to hit the nominal timeout two probe intervals early (mult - 2) and expects
    none when the cluster is too small to have that many other members (n minus us and the suspect).
    """
    k = suspicion_mult - 2
    return 0 if n - 2 < k else k


def retransmit_limit(mult: int, n: int) -> int:
    """How many times one update is transmitted in a cluster of `n` members."""
    return mult * math.ceil(math.log10(n + 1))


def push_pull_interval(interval: float, n: int) -> float:
    """The push/pull period for `n` members: doubles each time the cluster doubles past 32."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1.0
    return multiplier * interval


def scale_timeout(timeout: float, health_score: int) -> float:
    """Lifeguard local health: an unhealthy node (score > 0) waits (score + 1) times longer."""
    return timeout * (health_score + 1)


class Awareness:
    """This node's health score, 0 (healthy) to max - 1; one counter, no clock.

    Raised when a probe fails without the nacks that would prove our peers are fine (we may be
    the one dropping packets) and when we must refute a suspicion; lowered by each successful
    probe. The probe interval is scaled by `scale(interval)`.
    """

    __slots__ = ("max", "score")

    def __init__(self, max_multiplier: int) -> None:
        self.max = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(self.max - 1, max(0, self.score + delta))

    def scale(self, timeout: float) -> float:
        return scale_timeout(timeout, self.score)


class SuspicionTimer:
    """The deadline of one suspicion, shortened as independent confirmations arrive.

    A stored number, not a timer: the state machine compares `deadline` with `now` in its tick.
    The accuser that started the suspicion never counts as a confirmation (our own suspicion may
    be gossiped back to us), nor does anyone twice, nor anyone after k confirmations.
    """

    __slots__ = ("confirmed", "deadline", "k", "max_timeout", "min_timeout", "n", "start")

    def __init__(
        self, accuser: str, k: int, min_timeout: float, max_timeout: float, start: float
    ) -> None:
        self.k = k
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.start = start
        self.n = 0
        self.confirmed = {accuser}
        self.deadline = start + (max_timeout if k >= 1 else min_timeout)

    def confirm(self, accuser: str, now: float) -> bool:
        """Count `accuser`; True if it was new information (worth gossiping on)."""
        if self.n >= self.k or accuser in self.confirmed:
            return False
        self.confirmed.add(accuser)
        self.n += 1
        elapsed = now - self.start
        remaining = remaining_suspicion_time(
            self.n, self.k, elapsed, self.min_timeout, self.max_timeout
        )
        self.deadline = now + remaining
        return True
