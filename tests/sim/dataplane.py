"""The whole data plane under a deterministic simulation (FoundationDB's, TigerBeetle's discipline).

N real nodes (`cluster.app.Node`: store, HLC, membership, replication, anti-entropy, snapshot
join, the peer service) run in one process on a virtual-time event loop (`loop.VirtualLoop`),
talking through the in-memory network (`cluster.net.simnet`). Writers issue writes, batches,
deletes, clears and transactions to random live nodes, and a fault schedule drawn from the seed
partitions the network, loses datagrams, crashes nodes (restarted later with empty memory: they
rejoin and stream a snapshot) and skews clocks, some beyond the maximum offset. Then the network
heals, the writers stop, and the checker asserts:

- no acknowledged write lost: a write every live peer acknowledged is on each of them the moment
  its acknowledgement returns, and at the end every key holds what last-writer-wins allows
  (`loadtest.oracle`): nothing acknowledged lost, nothing deleted resurrected, no phantom;
- no torn transaction: on every serving node, at random moments and at the end, a transaction's
  keys show all of it or none of it;
- convergence: after the heal every live node serves identical data;
- no bug: no handler raised anything but the contract's errors.

    result = run(Plan.from_seed(7))      # deterministic: the same seed, the same run
    assert result.ok, result.report()

A failing seed replays exactly: `python -m tests.sim --seed 7 -v`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

from cluster.app import Node
from cluster.config import Config
from cluster.core.kv import Batch
from cluster.core.store import Version
from cluster.net.memory import Link, MemoryNetwork
from cluster.net.simnet import SimNet
from loadtest.oracle import Violation, Write, judge_key
from tests.sim.loop import LoopClock, VirtualLoop

logger = logging.getLogger(__name__)

PORT = 7000
KEYS = [f"k{i:02d}" for i in range(16)]
MAX_OFFSET = 0.5  # --max-clock-offset of every simulated node


def address_of(i: int) -> str:
    return f"127.0.1.{i + 1}:{PORT}"


# --- the plan: everything the seed decides ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    at: float  # seconds into the run
    kind: str  # "partition", "loss", "crash", "skew"
    target: int  # the node (crash, skew) or the size of the minority (partition)
    lasts: float  # seconds until it is undone
    amount: float = 0.0  # loss rate, or seconds of skew


@dataclass(frozen=True, slots=True)
class Plan:
    seed: int
    nodes: int = 5
    active: float = 12.0  # seconds of writes and faults
    quiet: float = 15.0  # seconds after the heal, for repair and convergence
    writers: int = 3
    rate: float = 25.0  # writes per second per writer
    faults: tuple[Fault, ...] = ()

    @classmethod
    def from_seed(cls, seed: int, nodes: int = 5) -> Plan:
        rng = random.Random(seed)
        faults = []
        for _ in range(rng.randint(1, 4)):
            kind = rng.choice(["partition", "loss", "crash", "skew", "crash", "partition"])
            at = rng.uniform(1.0, 9.0)
            lasts = rng.uniform(0.5, 5.0)
            if kind == "partition":
                faults.append(Fault(at, kind, rng.randint(1, nodes // 2), lasts))
            elif kind == "loss":
                faults.append(Fault(at, kind, 0, lasts, rng.choice([0.05, 0.2, 0.5])))
            elif kind == "crash":
                faults.append(Fault(at, kind, rng.randrange(nodes), lasts))
            else:  # skew: within the allowed offset, or beyond it (peers refuse its writes)
                amount = rng.choice([-0.3, 0.3, 0.45, 0.8, 1.5]) * rng.choice([1, -1])
                faults.append(Fault(at, kind, rng.randrange(nodes), lasts, amount))
        return cls(seed, nodes=nodes, faults=tuple(sorted(faults, key=lambda f: f.at)))


# --- the history ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Op:
    """One write as the simulation issued it."""

    id: int
    kind: str  # "set", "delete", "batch", "txn" or "clear"
    origin: str
    changes: dict[str, str | None]  # key -> value (None: delete); empty for a clear
    version: Version
    started: float
    acked: int = 0
    expected: int = 0
    done: bool = False
    origin_crashed_after: bool = False  # its node crashed before every peer had it

    @property
    def certain(self) -> bool:
        """It must survive: every live peer acknowledged it, or its node never crashed since."""
        return self.done and (self.acked >= self.expected or not self.origin_crashed_after)


@dataclass
class Result:
    plan: Plan
    violations: list[str] = field(default_factory=list)
    ops: int = 0
    acked_checks: int = 0
    torn_checks: int = 0
    requests: int = 0
    events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self) -> str:
        lines = [f"seed {self.plan.seed}: {len(self.violations)} violation(s), {self.ops} ops"]
        lines += [f"  fault {f}" for f in self.plan.faults]
        lines += [f"  {v}" for v in self.violations[:20]]
        return "\n".join(lines)


# --- the simulated world -------------------------------------------------------------------------


class World:
    """The nodes, the network, the writers and the faults of one run."""

    def __init__(self, plan: Plan, loop: asyncio.AbstractEventLoop) -> None:
        self.plan = plan
        self.loop = loop
        self.rng = random.Random(plan.seed * 7919 + 1)
        net_clock = LoopClock(loop)
        self.network: MemoryNetwork[bytes] = MemoryNetwork(
            net_clock, random.Random(self.rng.random()), Link(0.0, 0.001, 0.004)
        )
        self.net = SimNet(self.network)
        self.nodes: dict[int, Node] = {}
        self.skew: dict[int, float] = {}
        self.ops: list[Op] = []
        self.result = Result(plan)
        self.writing = True

    # --- nodes -----------------------------------------------------------------------------------

    def config(self, i: int, join: tuple[str, ...]) -> Config:
        host = address_of(i).rsplit(":", 1)[0]
        return Config(
            name=f"n{i}",
            host=host,
            port=PORT,
            advertise=address_of(i),
            tcp_port=0,
            resp_port=0,
            join=join,
            seed=self.rng.randrange(1 << 30),
            max_clock_offset=MAX_OFFSET,
            replication_timeout=1.0,
            antientropy_interval=1.0,
            tombstone_interval=1.0,
            expire_interval=1.0,
            probe_interval=0.5,
            probe_timeout=0.2,
            gossip_interval=0.1,
            push_pull_interval=5.0,
            join_timeout=2.0,
        )

    async def start_node(self, i: int, join: tuple[str, ...]) -> Node:
        clock = LoopClock(self.loop, self.skew.get(i, 0.0))
        address = address_of(i)
        config = self.config(i, join)
        node = Node(
            config,
            clock=clock,
            rng=random.Random(config.seed),
            datagrams=self.net.datagrams(address),
            peers=self.net.peers(address, config.cluster_key, clock.wall),
        )
        self.net.attach(address, node.gossip.on_datagram, node.peer_service.handle)
        self.nodes[i] = node
        await node.lifecycle.start_loops()
        await node.lifecycle.start_mesh(PORT)
        return node

    async def crash(self, i: int) -> None:
        node = self.nodes.pop(i, None)
        if node is None:
            return
        self.event(f"crash n{i}")
        self.net.detach(address_of(i))
        for op in self.ops:
            if op.origin == node.config.name and op.acked < op.expected:
                op.origin_crashed_after = True
        await node.lifecycle.stop_loops()
        await node.lifecycle.stop_mesh(leave=False)
        await node.replicator.close()

    async def restart(self, i: int) -> None:
        if i in self.nodes:
            return
        seeds = tuple(address_of(j) for j in sorted(self.nodes))[:2]
        self.event(f"restart n{i} joining {seeds}")
        await self.start_node(i, seeds)

    def serving(self) -> list[Node]:
        return [n for _, n in sorted(self.nodes.items()) if n.lifecycle.ready]

    def event(self, text: str) -> None:
        self.result.events.append(f"{self.loop.time():8.3f} {text}")

    # --- writers ---------------------------------------------------------------------------------

    async def writer(self, w: int) -> None:
        rng = random.Random(self.rng.random())
        while self.writing:
            await asyncio.sleep(rng.expovariate(self.plan.rate))
            nodes = self.serving()
            if not nodes or not self.writing:
                continue
            node = rng.choice(nodes)
            await self.write(node, rng)

    async def write(self, node: Node, rng: random.Random) -> None:
        kv = node.kv
        roll = rng.random()
        op_id = len(self.ops)
        value = f"v{op_id}"
        batch: Batch | None
        if roll < 0.45:
            kind, changes = "set", {rng.choice(KEYS): value}
            batch = kv.set(*next(iter(changes.items())))  # type: ignore[arg-type]
        elif roll < 0.6:
            key = rng.choice(KEYS)
            kind, changes = "delete", {key: None}
            batch = kv.delete(key)
        elif roll < 0.75:
            keys = rng.sample(KEYS, rng.randint(2, 4))
            kind, changes = "batch", {k: f"{value}.{j}" for j, k in enumerate(keys)}
            batch = kv.set_many({k: v for k, v in changes.items() if v is not None})
        elif roll < 0.985:
            keys = rng.sample(KEYS, rng.randint(2, 5))
            kind = "txn"
            changes = {
                k: (None if rng.random() < 0.25 else f"{value}.{j}") for j, k in enumerate(keys)
            }
            batch = kv.write_many(changes.items())
        else:
            kind, changes = "clear", {}
            batch = kv.clear()
        if batch is None:
            return  # a delete of a missing key writes nothing
        op = Op(op_id, kind, node.config.name, changes, (batch.ts, batch.node), self.loop.time())
        self.ops.append(op)
        peers = list(node.replicator.links)
        acked, expected = await node.replicator.replicate(batch)
        op.acked, op.expected, op.done = acked, expected, True
        if acked >= expected:
            self.check_acknowledged(op, peers)

    def check_acknowledged(self, op: Op, peers: list[str]) -> None:
        """Every peer that acknowledged a fully acknowledged write holds it, now."""
        self.result.acked_checks += 1
        by_name = {n.config.name: n for n in self.nodes.values()}
        for name in peers:
            peer = by_name.get(name)
            if peer is None:
                continue  # crashed since it acknowledged
            keys = list(op.changes) if op.changes else []
            if op.kind == "clear":
                if peer.store.clear_version < op.version:
                    self.violation(f"op {op.id} clear acknowledged by {name}, which lacks it")
                continue
            for key in keys:
                entry = peer.store.entry(key)
                held = entry.version if entry is not None else peer.store.clear_version
                if held < op.version and peer.store.clear_version < op.version:
                    self.violation(
                        f"op {op.id} {op.kind} of {key} at {op.version} acknowledged by {name}, "
                        f"which holds {held}"
                    )

    def violation(self, text: str) -> None:
        self.result.violations.append(f"{self.loop.time():8.3f} {text}")

    # --- transactions must never show torn ----------------------------------------------------

    def check_atomic(self) -> None:
        for node in self.serving():
            self.result.torn_checks += 1
            for op in self.ops:
                if op.kind not in ("txn", "batch") or len(op.changes) < 2:
                    continue
                shown = []
                for key in op.changes:
                    entry = node.store.entry(key)
                    shown.append(entry.version if entry is not None else None)
                if op.version not in shown:
                    continue
                # Some key shows it: every key must show it or something newer (or be gone by a
                # newer delete whose tombstone was purged, or a newer clear).
                for key, version in zip(op.changes, shown, strict=True):
                    if version is not None and version >= op.version:
                        continue
                    if node.store.clear_version >= op.version:
                        continue
                    if version is None and (
                        op.changes[key] is None or self._removed_after(key, op.version)
                    ):
                        continue  # a tombstone (its own, or a newer delete's) purged since
                    self.violation(
                        f"torn {op.kind} op {op.id} on {node.config.name}: {key} shows {version}"
                    )

    def _removed_after(self, key: str, version: Version) -> bool:
        return any(
            o.version > version and (o.kind == "clear" or o.changes.get(key, "") is None)
            for o in self.ops
        )

    async def auditor(self) -> None:
        rng = random.Random(self.rng.random())
        while self.writing:
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            self.check_atomic()

    # --- faults ----------------------------------------------------------------------------------

    async def inject(self, fault: Fault) -> None:
        await asyncio.sleep(fault.at)
        n = self.plan.nodes
        if fault.kind == "partition":
            minority = random.Random(fault.at).sample(range(n), fault.target)
            groups = [
                [address_of(i) for i in minority],
                [address_of(i) for i in range(n) if i not in minority],
            ]
            self.event(f"partition {minority} for {fault.lasts:.1f}s")
            self.network.partition(*groups)
            await asyncio.sleep(fault.lasts)
            self.network.heal()
            self.event("heal partition")
        elif fault.kind == "loss":
            self.event(f"loss {fault.amount:.0%} for {fault.lasts:.1f}s")
            self.network.set_default(Link(fault.amount, 0.001, 0.004))
            await asyncio.sleep(fault.lasts)
            self.network.set_default(Link(0.0, 0.001, 0.004))
        elif fault.kind == "crash":
            await self.crash(fault.target)
            await asyncio.sleep(fault.lasts)
            await self.restart(fault.target)
        else:
            self.set_skew(fault.target, fault.amount)
            await asyncio.sleep(fault.lasts)
            self.set_skew(fault.target, 0.0)

    def set_skew(self, i: int, seconds: float) -> None:
        self.event(f"skew n{i} {seconds:+.2f}s")
        self.skew[i] = seconds
        node = self.nodes.get(i)
        if node is not None:
            clock = node.clock
            assert isinstance(clock, LoopClock)
            clock.offset = seconds

    # --- the end ---------------------------------------------------------------------------------

    def check_final(self) -> None:
        nodes = list(self.nodes.values())
        not_ready = [n.config.name for n in nodes if not n.lifecycle.ready]
        if not_ready:
            self.violation(f"not serving after the heal: {not_ready}")
        views = {n.config.name: self.visible(n) for n in nodes}
        first_name, first = next(iter(views.items()))
        for name, view in views.items():
            if view != first:
                diff = sorted(k for k in set(view) | set(first) if view.get(k) != first.get(k))
                self.violation(f"diverged: {name} and {first_name} differ on {diff[:5]}")
        for node in nodes:
            for v in self.judge(node):
                self.violation(f"{v.rule} on {node.config.name}: {v.key} {v.detail}")
        self.check_atomic()

    def visible(self, node: Node) -> dict[str, tuple[str, Version]]:
        now = node.clock.wall()
        out = {}
        for key in KEYS:
            entry = node.store.get(key, now)
            if entry is not None and entry.value is not None:
                out[key] = (entry.value, entry.version)
        return out

    def judge(self, node: Node) -> list[Violation]:
        writes: dict[str, list[Write]] = {k: [] for k in KEYS}
        for op in self.ops:
            label = f"op {op.id} {op.kind} via {op.origin}"
            if op.kind == "clear":
                for key in KEYS:
                    writes[key].append(Write(op.version, None, op.certain, label))
                continue
            for key, value in op.changes.items():
                writes[key].append(Write(op.version, value, op.certain, label))
        view = self.visible(node)
        out = []
        for key in KEYS:
            final = view.get(key)
            verdict = judge_key(
                key, writes[key], final[0] if final else None, final[1] if final else None
            )
            if verdict is not None:
                out.append(verdict)
        return out


async def simulate(plan: Plan) -> Result:
    loop = asyncio.get_running_loop()
    world = World(plan, loop)
    await world.start_node(0, ())
    for i in range(1, plan.nodes):
        await world.start_node(i, (address_of(0),))
    # The mesh forms and every joiner syncs before the run starts.
    for _ in range(200):
        if len(world.serving()) == plan.nodes and all(
            n.lifecycle.alive_members() == plan.nodes for n in world.nodes.values()
        ):
            break
        await asyncio.sleep(0.1)
    else:
        world.violation("the mesh did not form")
        return world.result
    tasks = [asyncio.create_task(world.writer(w)) for w in range(plan.writers)]
    tasks.append(asyncio.create_task(world.auditor()))
    faults = [asyncio.create_task(world.inject(f)) for f in plan.faults]
    await asyncio.sleep(plan.active)
    world.writing = False
    for task in faults:
        await task  # each undoes itself; a crashed node is restarted
    for task in tasks:
        await task
    for i in range(plan.nodes):
        await world.restart(i)
        world.set_skew(i, 0.0) if world.skew.get(i) else None
    world.network.heal()
    world.network.set_default(Link(0.0, 0.001, 0.004))
    await asyncio.sleep(plan.quiet)
    world.check_final()
    world.result.ops = len(world.ops)
    world.result.requests = world.net.requests
    for bug in world.net.bugs:
        world.violation(f"bug in a handler: {bug!r}")
    for node in list(world.nodes.values()):
        await node.lifecycle.stop_loops()
        await node.lifecycle.stop_mesh(leave=False)
        await node.replicator.close()
    return world.result


def run(plan: Plan) -> Result:
    """One simulated run on a fresh virtual-time loop."""
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(simulate(plan))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
