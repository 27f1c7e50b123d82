"""A deterministic simulation of a mesh: many `Membership` cores on an in-memory network.

    sim = Simulation(nodes=10, seed=1)      # ten nodes, joined and converged
    sim.kill("n3")
    sim.run(seconds=10)
    assert sim.everyone_sees("n3", {"dead"})

Time is a FakeClock that jumps from event to event (the next datagram arrival or the next node
deadline), so a minute of a 50-node mesh takes a fraction of a second and the same seed always
gives the same run. Push/pull travels as a "reliable" datagram (it is HTTP over TCP in production:
lost only to partitions and dead peers). With `wire=True` every datagram goes through
`encode_packet`/`decode_packet` (and the HMAC when `key` is set), as on a real socket.

`history` records every membership event each node saw, with the time and whether the member was
really up then, so tests can count false suspicions and false deaths.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cluster.core.clock import FakeClock
from cluster.membership.messages import DecodeError, Message, decode_packet, encode_packet
from cluster.membership.suspicion import GossipParams, retransmit_limit, suspicion_timeout
from cluster.membership.swim import ALIVE, MemberEvent, Membership, Outgoing
from cluster.net.memory import Delivery, Link, MemoryNetwork

Payload = tuple[Message, ...] | bytes


def address_of(name: str) -> str:
    return f"{name}.sim:7946"


@dataclass(frozen=True, slots=True)
class Observation:
    time: float
    observer: str
    event: MemberEvent
    target_up: bool  # the truth: was the member's process running when this was seen?


class SimNode:
    def __init__(self, name: str, membership: Membership, key: str | None) -> None:
        self.name = name
        self.key = key  # its cluster key (wire mode only)
        self.address = address_of(name)
        self.membership = membership
        self.up = True
        self.token = 0  # only the heap entry carrying the current token is live


class Simulation:
    def __init__(
        self,
        nodes: int = 3,
        seed: int = 1,
        params: GossipParams | None = None,
        loss: float = 0.0,
        delay: float = 0.002,
        jitter: float = 0.003,
        wire: bool = False,
        key: str | None = None,
        converge: bool = True,
    ) -> None:
        self.params = params or GossipParams()
        self.clock = FakeClock()
        self.rng = random.Random(seed)
        self.link = Link(loss, delay, jitter)
        self.net: MemoryNetwork[Payload] = MemoryNetwork(
            self.clock, random.Random(self.rng.random()), self.link
        )
        self.wire = wire
        self.key = key
        self.nodes: dict[str, SimNode] = {}
        self.by_address: dict[str, SimNode] = {}
        self.history: list[Observation] = []
        self.decode_errors = 0
        self._heap: list[tuple[float, int, str, int]] = []
        self._counter = 0
        for i in range(nodes):
            self.add(f"n{i}", seeds=[address_of("n0")] if i else [])
        if nodes > 1 and converge:
            took = self.run_until(self.converged, timeout=60.0 + nodes)
            if took is None:
                raise RuntimeError(f"{nodes} simulated nodes did not converge")

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    # --- the mesh -------------------------------------------------------------------------------

    def add(self, name: str, seeds: Iterable[str] = (), key: str | bool | None = True) -> SimNode:
        """Start a node (or restart one: a new process with a higher incarnation) and join.

        `key`: the node's cluster key in wire mode; True means the simulation's.
        """
        membership = Membership(
            name,
            address_of(name),
            self.params,
            random.Random(self.rng.random()),
            incarnation=int(self.clock.wall() * 1000),  # what the IO layer passes
        )
        node = SimNode(name, membership, self.key if key is True else key or None)
        old = self.nodes.get(name)
        if old is not None:
            node.token = old.token + 1
        self.nodes[name] = node
        self.by_address[node.address] = node
        self.net.set_up(node.address, True)
        self._send(node, membership.start_join(list(seeds), self.now))
        self._schedule(node)
        return node

    def kill(self, name: str) -> None:
        """Crash: the process stops answering, sends nothing, forgets nothing (it is gone)."""
        node = self.nodes[name]
        node.up = False
        node.token += 1
        self.net.set_up(node.address, False)

    def restart(self, name: str, seeds: Iterable[str] | None = None) -> SimNode:
        """Kill if running, then start a new process under the same name and join."""
        if self.nodes[name].up:
            self.kill(name)
        self.clock.advance(0.001)  # a new process: a later wall clock, a higher incarnation
        if seeds is None:
            seeds = [n.address for n in self.live() if n.name != name][:3]
        return self.add(name, seeds)

    def leave(self, name: str) -> None:
        node = self.nodes[name]
        self._send(node, node.membership.leave(self.now))
        self._after(node)

    def remove(self, by: str, name: str) -> None:
        node = self.nodes[by]
        self._send(node, node.membership.remove(name, self.now))
        self._after(node)

    def join(self, name: str, seeds: Iterable[str]) -> None:
        node = self.nodes[name]
        self._send(node, node.membership.start_join(list(seeds), self.now))
        self._after(node)

    def partition(self, *groups: Iterable[str]) -> None:
        self.net.partition(*([address_of(n) for n in g] for g in groups))

    def heal(self) -> None:
        self.net.heal()

    def set_loss(self, loss: float) -> None:
        self.link = Link(loss, self.link.delay, self.link.jitter)
        self.net.set_default(self.link)

    # --- views ----------------------------------------------------------------------------------

    def live(self) -> list[SimNode]:
        """Nodes whose process runs and that are in the mesh (not left)."""
        return [n for n in self.nodes.values() if n.up and not n.membership.left]

    def state(self, observer: str, target: str) -> str | None:
        member = self.nodes[observer].membership.member(target)
        return member.state if member is not None else None

    def incarnation(self, observer: str, target: str) -> int | None:
        member = self.nodes[observer].membership.member(target)
        return member.incarnation if member is not None else None

    def views_of(self, target: str) -> dict[str, str | None]:
        """What every live node other than `target` thinks of it."""
        return {n.name: self.state(n.name, target) for n in self.live() if n.name != target}

    def everyone_sees(self, target: str, states: set[str | None]) -> bool:
        return all(s in states for s in self.views_of(target).values())

    def converged(self) -> bool:
        """Every live node sees every other live node alive."""
        live = self.live()
        return all(self.state(a.name, b.name) == ALIVE for a in live for b in live if a is not b)

    def false_events(self, state: str) -> list[Observation]:
        """Times a running member was seen entering `state` (a false suspicion or death)."""
        return [o for o in self.history if o.event.new_state == state and o.target_up]

    # --- time -----------------------------------------------------------------------------------

    def run(self, seconds: float) -> None:
        self._run_to(self.now + seconds)

    def run_until(
        self, predicate: Callable[[], bool], timeout: float, step: float = 0.05
    ) -> float | None:
        """Run until `predicate()` holds (checked every `step`); seconds taken, or None."""
        start = self.now
        while not predicate():
            if self.now - start >= timeout:
                return None
            self._run_to(self.now + step)
        return self.now - start

    def _run_to(self, end: float) -> None:
        while True:
            self._drop_stale()
            t_net = self.net.next_time()
            t_node = self._heap[0][0] if self._heap else None
            candidates = [t for t in (t_net, t_node) if t is not None]
            if not candidates or min(candidates) > end:
                break
            t = min(candidates)
            if t > self.now:
                self.clock.advance(t - self.now)
            for delivery in self.net.deliver_due():
                self._deliver(delivery)
            while self._heap and self._heap[0][0] <= self.now:
                _, _, name, token = heapq.heappop(self._heap)
                node = self.nodes[name]
                if node.up and token == node.token:
                    self._send(node, node.membership.tick(self.now))
                    self._after(node)
        if end > self.now:
            self.clock.advance(end - self.now)

    def _drop_stale(self) -> None:
        while self._heap:
            _, _, name, token = self._heap[0]
            node = self.nodes[name]
            if node.up and token == node.token:
                return
            heapq.heappop(self._heap)

    def _schedule(self, node: SimNode) -> None:
        node.token += 1
        deadline = node.membership.next_deadline()
        if deadline != float("inf"):
            self._counter += 1
            heapq.heappush(
                self._heap, (max(deadline, self.now), self._counter, node.name, node.token)
            )

    def _after(self, node: SimNode) -> None:
        for event in node.membership.take_events():
            target = self.nodes.get(event.name)
            up = target is not None and target.up
            self.history.append(Observation(self.now, node.name, event, up))
        self._schedule(node)

    def _send(self, node: SimNode, outgoing: list[Outgoing]) -> None:
        for out in outgoing:
            payload: Payload = out.messages
            if self.wire:
                payload = encode_packet(out.messages, node.key, int(self.clock.wall() * 1000))
            self.net.send(node.address, out.address, payload, reliable=out.push_pull)

    def _deliver(self, delivery: Delivery[Payload]) -> None:
        node = self.by_address.get(delivery.dst)
        if node is None or not node.up:
            return
        payload = delivery.payload
        if isinstance(payload, bytes):
            try:
                messages = decode_packet(payload, node.key, max_size=1 << 24).messages
            except DecodeError:
                self.decode_errors += 1
                return
        else:
            messages = payload
        out: list[Outgoing] = []
        for msg in messages:
            out += node.membership.handle(delivery.src, msg, self.now)
        self._send(node, out)
        self._after(node)


# Probe intervals until some member probes a given one. Each of the n-1 others probes it with
# probability about 1/(n-1) per interval, so nobody has after k intervals with probability about
# e^-k: 7 intervals fail about once in a thousand runs (round-robin caps it at n-1 intervals).
FIRST_PROBE_INTERVALS = 7


def suspicion_bound(params: GossipParams, n: int) -> float:
    """Seconds by which every member should see a crashed member as not alive (suspect or dead):
    until someone probes it, the failed probe, and the retransmissions of the suspicion."""
    spread = retransmit_limit(params.retransmit_mult, n) * params.gossip_interval
    return (FIRST_PROBE_INTERVALS + 1) * params.probe_interval + spread


def detection_bound(params: GossipParams, n: int) -> float:
    """Seconds by which every member should see a crashed member dead: the suspicion bound plus
    the longest (unconfirmed) suspicion timeout."""
    longest = suspicion_timeout(params.suspicion_mult, n, params.probe_interval)
    return suspicion_bound(params, n) + longest * params.suspicion_max_timeout_mult


def dissemination_bound(params: GossipParams, n: int) -> float:
    """Seconds by which an update (join, leave, remove) reaches every member at 0% loss:
    its retransmissions, plus a probe interval of slack for piggybacking."""
    spread = retransmit_limit(params.retransmit_mult, n) * params.gossip_interval
    return spread + params.probe_interval
