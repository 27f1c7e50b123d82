"""An in-memory network: the fault model behind the simulations' twins of the transports.

The real transports are `cluster.net.udp` and `cluster.net.http_peers`; `cluster.net.simnet`
drives this network from an event loop for the data-plane simulation, and the membership
simulation (tests/unit/sim.py) drives it by hand. This module is pure: the
in-memory network reads time only through the clock it is given (a FakeClock in tests), draws
every random decision from the `random.Random` it is given, and delivers nothing by itself - the
test harness asks for the deliveries that are due (`deliver_due`) and advances the clock to
`next_time()`, so a simulation jumps from event to event instead of sleeping.

What the network models, per directed link (memberlist's MockNetwork, plus faults):
- loss: each datagram is dropped with probability `drop` (reliable sends, standing in for the
  HTTP push/pull over TCP, are never dropped by loss - only by partitions and dead endpoints);
- delay: `delay + uniform(0, jitter)` seconds, so datagrams may be reordered;
- partitions: `partition(groups)` splits the endpoints into groups that cannot reach each other
  (checked when a datagram is sent and again when it would arrive); `heal()` joins them again;
- down endpoints: `set_up(address, False)` stands for a crashed process: datagrams to it vanish.

Invariants: deliveries come out in (time, send order) order; the same seed, the same sends and the
same clock give the same deliveries.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cluster.core.clock import Clock

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Link:
    """Fault settings of one direction between two endpoints."""

    drop: float = 0.0  # probability a datagram is lost
    delay: float = 0.0  # seconds every datagram takes
    jitter: float = 0.0  # extra seconds, uniform in [0, jitter)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[P]):
    src: str
    dst: str
    payload: P


@dataclass(frozen=True, slots=True)
class NetworkStats:
    sent: int
    delivered: int
    dropped: int  # lost to `drop`
    blocked: int  # stopped by a partition or a down endpoint


class MemoryNetwork(Generic[P]):
    """Endpoints by address exchanging payloads of type P through a clock-driven queue."""

    def __init__(self, clock: Clock, rng: random.Random, default: Link | None = None) -> None:
        self._clock = clock
        self._rng = rng
        self._default = default or Link()
        self._links: dict[tuple[str, str], Link] = {}
        self._groups: dict[str, int] | None = None
        self._down: set[str] = set()
        self._queue: list[tuple[float, int, Delivery[P]]] = []
        self._seq = 0
        self._sent = self._delivered = self._dropped = self._blocked = 0

    # --- faults ---------------------------------------------------------------------------------

    def set_default(self, link: Link) -> None:
        """The settings of every link that has none of its own."""
        self._default = link

    def set_link(self, src: str, dst: str, link: Link, both: bool = True) -> None:
        """Settings of src -> dst (and dst -> src when `both`)."""
        self._links[(src, dst)] = link
        if both:
            self._links[(dst, src)] = link

    def delay(self, src: str, dst: str) -> float:
        """Seconds the next datagram (or request leg) from src to dst takes: delay + jitter."""
        link = self.link(src, dst)
        return link.delay + (self._rng.uniform(0.0, link.jitter) if link.jitter > 0 else 0.0)

    def link(self, src: str, dst: str) -> Link:
        return self._links.get((src, dst), self._default)

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: endpoints in different groups cannot reach each other.

        Addresses named in no group together form one more group.
        """
        assigned: dict[str, int] = {}
        for i, group in enumerate(groups):
            for address in group:
                assigned[address] = i
        self._groups = assigned

    def heal(self) -> None:
        """Undo `partition`: everyone can reach everyone again (loss and delay stay)."""
        self._groups = None

    def set_up(self, address: str, up: bool) -> None:
        """A down endpoint (a crashed process) neither receives nor, by convention, sends."""
        if up:
            self._down.discard(address)
        else:
            self._down.add(address)

    def reachable(self, src: str, dst: str) -> bool:
        if src in self._down or dst in self._down:
            return False
        if self._groups is None:
            return True
        return self._groups.get(src, -1) == self._groups.get(dst, -1)

    # --- traffic --------------------------------------------------------------------------------

    def endpoint(self, address: str) -> MemoryTransport[P]:
        """A Transport whose datagrams come from `address`."""
        return MemoryTransport(self, address)

    def send(self, src: str, dst: str, payload: P, reliable: bool = False) -> None:
        """Queue `payload` from src to dst, unless lost or blocked."""
        self._sent += 1
        if not self.reachable(src, dst):
            self._blocked += 1
            return
        link = self.link(src, dst)
        if not reliable and link.drop > 0 and self._rng.random() < link.drop:
            self._dropped += 1
            return
        delay = self.delay(src, dst)
        self._seq += 1
        at = self._clock.monotonic() + delay
        heapq.heappush(self._queue, (at, self._seq, Delivery(src, dst, payload)))

    def next_time(self) -> float | None:
        """When the next queued datagram arrives, or None if none is in flight."""
        return self._queue[0][0] if self._queue else None

    def deliver_due(self) -> list[Delivery[P]]:
        """Every datagram due by the clock's now, in order; blocked ones are dropped here."""
        now = self._clock.monotonic()
        out: list[Delivery[P]] = []
        while self._queue and self._queue[0][0] <= now:
            delivery = heapq.heappop(self._queue)[2]
            if self.reachable(delivery.src, delivery.dst):
                self._delivered += 1
                out.append(delivery)
            else:
                self._blocked += 1
        return out

    def in_flight(self) -> int:
        return len(self._queue)

    def stats(self) -> NetworkStats:
        return NetworkStats(self._sent, self._delivered, self._dropped, self._blocked)


class MemoryTransport(Generic[P]):
    """One endpoint's sending side; `MemoryTransport[bytes]` is a `cluster.core.ports.Transport`."""

    __slots__ = ("address", "network")

    def __init__(self, network: MemoryNetwork[P], address: str) -> None:
        self.network = network
        self.address = address

    def send(self, address: str, data: P) -> None:
        self.network.send(self.address, address, data)
