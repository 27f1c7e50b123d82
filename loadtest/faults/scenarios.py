"""The scenarios: a fresh rig each, load throughout, one kind of fault, then the verdict.

Timeline of every scenario (`run_scenario`):

    rig up, mesh formed -> load starts -> warmup -> FAULT -> (held until detected, bounded)
    -> HEAL -> load continues `after` s -> load stops -> wait until every node holds identical
    data (the convergence time is counted from the later of heal and the last write) -> wait
    until every node sees every node alive -> let short TTLs run out -> read every node -> judge

Figures per scenario (the markdown table): writes acknowledged (and attempted), lost,
resurrected, torn batches/transactions, unverified absences (neither confirmed nor refuted: only
a delete, expiry or clear of unknown version explains them), time to converge after heal, time
to detect (first suspicion / every healthy observer says dead), false positives (a never-faulted
node declared dead by an observer that was not cut off by a partition; from the nodes' own logs
and the polls), time until membership is whole again.

`QUICK` uses fast membership timing (probe 0.2 s: what the e2e tests use) and short phases;
`FULL` runs the nodes with their default parameters (probe 1 s, anti-entropy 10 s).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from loadtest import procs
from loadtest.faults import faults
from loadtest.faults.load import Load, LoadConfig, Target, Write
from loadtest.faults.rig import Rig, RigError
from loadtest.faults.verdict import (
    Monitor,
    NodeState,
    Verdict,
    describe_difference,
    fetch_all,
    judge,
    logged_transitions,
    wait_converged,
)

GOAL_CONVERGE = 10.0  # seconds after heal: the goal

FAST = procs.FAST_MESH_ARGS


@dataclass(frozen=True)
class Timing:
    name: str
    node_args: tuple[str, ...]
    warmup: float  # seconds of load before the fault
    hold: float  # seconds a fault lasts at least
    hold_max: float  # seconds a fault lasts at most while waiting for it to be detected
    after: float  # seconds of load after the heal
    converge_timeout: float
    recover_timeout: float
    concurrency: int
    rate: float
    timeout: float  # seconds per client request
    skew_hold: float  # seconds of load on a skewed mesh
    grace: float  # seconds after a heal in which a partitioned node may still misjudge others
    preload: int  # keys loaded before restart-two (its snapshots must take a while)


QUICK = Timing(
    name="quick",
    node_args=FAST,
    warmup=2.0,
    hold=2.0,
    hold_max=8.0,
    after=1.5,
    converge_timeout=30.0,
    recover_timeout=20.0,
    concurrency=6,
    rate=80,
    timeout=3.0,
    skew_hold=4.0,
    grace=3.0,
    preload=100_000,
)
FULL = Timing(
    name="full",
    node_args=(),
    warmup=3.0,
    hold=5.0,
    hold_max=40.0,
    after=3.0,
    converge_timeout=90.0,
    recover_timeout=60.0,
    concurrency=12,
    rate=150,
    timeout=5.0,
    skew_hold=10.0,
    grace=10.0,
    preload=200_000,
)


@dataclass
class Result:
    """One scenario's figures and checks; `failures` empty means it passed."""

    name: str
    title: str
    nodes: int
    skipped: str = ""
    acked: int = 0
    attempted: int = 0
    lost: int = 0
    resurrected: int = 0
    partial: int = 0
    phantom: int = 0
    unverified: int = 0
    converge: float | None = None
    detect: float | None = None
    dead: float | None = None
    false_positives: int = 0
    false_suspicions: int = 0
    recover: float | None = None
    duration: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    logs: str = ""

    @property
    def failures(self) -> list[str]:
        if self.skipped:
            return []
        out = [name for name, ok in self.checks.items() if not ok]
        for what in ("lost", "resurrected", "partial", "phantom"):
            if getattr(self, what):
                out.append(f"{getattr(self, what)} {what}")
        if self.false_positives:
            out.append(f"{self.false_positives} false positives")
        return out

    @property
    def goal_met(self) -> bool:
        return self.converge is not None and self.converge <= GOAL_CONVERGE

    @property
    def status(self) -> str:
        if self.skipped:
            return "skipped"
        if self.failures:
            return "FAIL: " + "; ".join(self.failures)
        return "pass" if self.goal_met else "pass, slow convergence"


@dataclass
class Ctx:
    """What a scenario's fault step works with."""

    rig: Rig
    session: aiohttp.ClientSession
    monitor: Monitor
    load: Load
    timing: Timing
    result: Result
    fault_at: float | None = None
    heal_at: float | None = None
    detect_subjects: list[str] = field(default_factory=list)
    detect_observers: list[str] | None = None
    first_health: dict[str, Any] = field(default_factory=dict)

    async def do(self, fn: Callable[..., object], *args: object) -> None:
        await asyncio.to_thread(fn, self.rig, *args)

    async def fault(
        self,
        fn: Callable[..., object],
        *args: object,
        faulted: list[str],
        partition: bool = False,
    ) -> None:
        """Inject a fault; `faulted` nodes are its subjects (never false positives), and with
        `partition` they are also excused as observers until the heal (plus grace)."""
        self.monitor.mark_faulted(*faulted)
        if partition:
            self.monitor.mark_cut_off(*faulted)
        self.fault_at = time.monotonic()
        await self.do(fn, *args)

    async def heal(self, fn: Callable[..., object], *args: object) -> None:
        self.heal_at = time.monotonic()  # SIGCONT takes effect at once: time it from the call
        await self.do(fn, *args)
        self.monitor.healed(time.monotonic() + self.timing.grace)

    async def hold_until(self, done: Callable[[], bool]) -> None:
        """Keep the fault at least `hold` seconds and until `done()`, at most `hold_max`."""
        start = time.monotonic()
        while True:
            held = time.monotonic() - start
            if held >= self.timing.hold_max or (held >= self.timing.hold and done()):
                return
            await asyncio.sleep(0.1)

    def seen_dead_by(self, subjects: list[str], observers: list[str]) -> Callable[[], bool]:
        return lambda: all(
            self.monitor.all_see(s, {"dead", "left"}, [o for o in observers if o != s])
            for s in subjects
        )

    async def wait_answering(self, name: str, limit: float = 30.0) -> None:
        """Until the node's HTTP server answers at all (/health 200 or 503 while syncing)."""
        url = self.rig.node(name).url + "/health"
        start = time.monotonic()
        while time.monotonic() - start < limit:
            try:
                async with asyncio.timeout(1.0), self.session.get(url) as resp:
                    await resp.read()
                    return
            except (aiohttp.ClientError, TimeoutError, OSError):
                await asyncio.sleep(0.02)
        raise RigError(f"{name} did not answer within {limit}s")

    async def wait_balancer(self, limit: float = 30.0) -> float:
        """Seconds until nginx answers /health 200 again (after every node was down, it keeps
        them out for its fail_timeout)."""
        url = self.rig.balancer_url + "/health"
        start = time.monotonic()
        while time.monotonic() - start < limit:
            try:
                async with asyncio.timeout(1.0), self.session.get(url) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return time.monotonic() - start
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            await asyncio.sleep(0.1)
        raise RigError(f"nginx did not answer within {limit}s")

    async def wait_ready(self, name: str, limit: float = 30.0) -> float:
        """Seconds until the node answers /health 200 (joined and synced); that first answer
        is kept in `first_health[name]`."""
        url = self.rig.node(name).url + "/health"
        start = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(1.0), self.session.get(url) as resp:
                    if resp.status == 200:
                        self.first_health[name] = orjson.loads(await resp.read())
                        return time.monotonic() - start
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            if time.monotonic() - start > limit:
                raise RigError(f"{name} did not become ready within {limit}s")
            await asyncio.sleep(0.1)


Step = Callable[[Ctx], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    nodes: int
    step: Step
    quick_nodes: int = 3
    clear_at: float | None = None
    ci: bool = False  # part of the short suite in `make test`
    fsync: str | None = None  # every node keeps its replica on disk (--data-dir) with this policy
    keys: int = 50  # distinct keys the load writes


# --- the fault steps ------------------------------------------------------------------------------


def _others(ctx: Ctx, *names: str) -> list[str]:
    return [n for n in ctx.rig.names() if n not in names]


async def isolate_one(ctx: Ctx) -> None:
    victim = ctx.rig.names()[-1]
    ctx.detect_subjects = [victim]
    await ctx.fault(faults.isolate, victim, faulted=[victim], partition=True)
    await ctx.hold_until(ctx.seen_dead_by([victim], _others(ctx, victim)))
    await ctx.heal(faults.heal)


async def split_brain(ctx: Ctx) -> None:
    names = ctx.rig.names()
    cut = (len(names) + 1) // 2
    majority, minority = names[:cut], names[cut:]
    ctx.result.title = f"split brain {len(majority)} vs {len(minority)}"
    ctx.result.notes.append(f"split {'+'.join(majority)} | {'+'.join(minority)}")
    ctx.detect_subjects = minority
    ctx.detect_observers = majority
    await ctx.fault(faults.split, [majority, minority], faulted=names, partition=True)
    await ctx.hold_until(ctx.seen_dead_by(minority, majority))
    await ctx.heal(faults.heal)


async def one_way_loss(ctx: Ctx) -> None:
    src, dst = ctx.rig.names()[0], ctx.rig.names()[1]
    ctx.result.notes.append(f"{dst} drops every packet from {src}")
    await ctx.fault(faults.one_way, src, dst, faulted=[src, dst], partition=True)
    await asyncio.sleep(max(ctx.timing.hold, ctx.timing.hold_max / 2))
    deaths = [
        s
        for s in ctx.monitor.history
        if s.state == "dead" and {s.observer, s.subject} == {src, dst}
    ]
    if deaths:
        ctx.result.notes.append(
            f"{len(deaths)} dead verdicts between {src} and {dst} (indirect probes should "
            "have saved them)"
        )
    await ctx.heal(faults.heal)


async def kill_restart(ctx: Ctx) -> None:
    victim = ctx.rig.names()[1]
    ctx.detect_subjects = [victim]
    await ctx.fault(faults.kill_9, victim, faulted=[victim])
    await ctx.hold_until(ctx.seen_dead_by([victim], _others(ctx, victim)))
    await ctx.heal(faults.restart, victim)
    took = await ctx.wait_ready(victim)
    ctx.result.notes.append(f"{victim} restarted, synced and serving {took:.1f} s after start")


async def restart_two(ctx: Ctx) -> None:
    """Two of three nodes killed; restarted one right after the other, on a large data set, so
    that the second one joins while the first is still streaming its snapshot. A node must serve
    only once synced: when it first answers /health 200 it must hold every preloaded key."""
    names = ctx.rig.names()
    keeper, first, second = names[0], names[1], names[2]
    preload = ctx.timing.preload
    url = ctx.rig.node(keeper).url
    for start in range(0, preload, 1000):
        keys = tuple(f"pre{i:07d}" for i in range(start, min(preload, start + 1000)))
        values = tuple(f"p{k[3:]}" for k in keys)
        w = ctx.load.record("batch", keys, values, keeper)
        await ctx.load.send(w, "PUT", f"{url}/keys", dict(zip(keys, values, strict=True)))
        if not w.acked:
            raise RigError(f"preloading failed: {w.outcome} {w.error}")
    ctx.detect_subjects = [first, second]
    await ctx.fault(faults.kill_9, first, faulted=[first, second])
    await ctx.do(faults.kill_9, second)
    await ctx.hold_until(ctx.seen_dead_by([first, second], [keeper]))
    await ctx.heal(faults.restart, first)
    await ctx.wait_answering(first)  # up and joining, not necessarily synced
    await ctx.do(faults.restart, second)
    # A node becomes ready right after its snapshot: the entries it streamed (its log says how
    # many, from whom) are what it held when it began serving. The preloaded keys are never
    # deleted, so that must be at least their number. (Its first /health 200 often shows more:
    # anti-entropy may already have run by the time a poll gets through.)
    held: dict[str, int] = {}
    for name in (first, second):
        await ctx.wait_ready(name, limit=120.0)
        synced = re.findall(r"node=\S+ peer=(\S+) synced (\d+) entries", ctx.rig.log_text(name))
        peer, got = synced[-1] if synced else ("?", "0")
        held[name] = int(got)
        health = ctx.first_health[name].get("keys")
        ctx.result.notes.append(
            f"{name} streamed {got} entries from {peer} (first /health 200: {health} keys)"
        )
    ctx.result.notes.insert(0, f"{preload} keys preloaded")
    ctx.result.checks["a restarted node serves only once synced"] = all(
        c >= preload for c in held.values()
    )


POWER_OFF = 1.0  # seconds the whole mesh stays down


async def power_cut(ctx: Ctx) -> None:
    """Every node SIGKILLed at once under load (the machine loses power, as far as processes
    can), all restarted a moment later. No node survives to give the data back: what returns is
    what each node's disk copy kept (the rig runs them with --data-dir). Each restarted node finds
    every peer joining too and serves its own copy after --join-timeout; anti-entropy then
    reconciles them.

    The load writes for `hold` seconds more than the warmup before the cut (the clear comes
    before it), on many keys, so that most keys' last write precedes the cut and must come back
    from disk; and for `hold` seconds once every node serves again, over the restored data."""
    names = ctx.rig.names()
    await asyncio.sleep(ctx.timing.hold)
    await ctx.fault(faults.power_cut, faulted=names)
    cut = ctx.fault_at or 0.0
    before = [w for w in ctx.load.writes if w.acked and w.end <= cut]
    await asyncio.sleep(POWER_OFF)
    await ctx.heal(faults.restart_all)
    took = {n: await ctx.wait_ready(n, limit=60.0) for n in names}
    ready = time.monotonic()
    restored = {}
    for name in names:
        counts = re.findall(r"restored (\d+) entries from ", ctx.rig.log_text(name))
        restored[name] = int(counts[-1]) if len(counts) >= 2 else None
    ctx.result.notes.append(
        f"{len(before)} writes acknowledged before the cut; every node restarted "
        f"{POWER_OFF:g} s later and was serving within {max(took.values()):.1f} s; restored from "
        "disk: " + ", ".join(f"{n} {c} entries" for n, c in restored.items())
    )
    ctx.result.checks["every node restored its copy from disk"] = all(
        c is not None and c > 0 for c in restored.values()
    )
    lb = await ctx.wait_balancer()  # nginx took the nodes out for its fail_timeout (2 s)
    ready = time.monotonic()
    await asyncio.sleep(ctx.timing.hold)
    after = [w for w in ctx.load.writes if w.acked and w.start >= ready]
    ctx.result.notes.append(f"nginx balancing again {lb:.1f} s after the last node was ready")
    ctx.result.notes.append(f"{len(after)} writes acknowledged once nginx balanced again")


async def pause_resume(ctx: Ctx) -> None:
    victim = ctx.rig.names()[1]
    ctx.detect_subjects = [victim]
    await ctx.fault(faults.pause, victim, faulted=[victim])
    await ctx.hold_until(ctx.seen_dead_by([victim], _others(ctx, victim)))
    held = time.monotonic() - (ctx.fault_at or 0.0)
    ctx.result.notes.append(f"SIGSTOP held {held:.1f} s")
    await ctx.heal(faults.resume, victim)


async def skew_within(ctx: Ctx) -> None:
    names = ctx.rig.names()
    skews = {names[-1]: 0.4, names[-2]: -0.4}
    for name, offset in skews.items():
        ctx.monitor.mark_faulted(name)
        await ctx.do(faults.restart, name, offset)
        await ctx.wait_ready(name)
    ctx.result.notes.append(", ".join(f"{n} {o:+.1f} s" for n, o in skews.items()))
    await asyncio.sleep(ctx.timing.skew_hold)
    ctx.heal_at = time.monotonic()
    # Each clock is within the 0.5 s allowed of true time, but they are 0.8 s apart: the slow node
    # refuses what the fast one (and whoever adopted its clock) sends, until anti-entropy.
    refused = {n: await _metric(ctx, n, "replication_refused_batches_total") for n in names}
    ctx.result.notes.append(f"batches refused for skew: {refused}")


async def skew_beyond(ctx: Ctx) -> None:
    """One clock 2 s ahead (max offset 0.5 s): its writes must be refused by the others, logged,
    and not adopted into their clocks; once its timestamps fall within the offset they converge."""
    names = ctx.rig.names()
    skewed = names[-1]
    peers = names[:-1]
    ctx.monitor.mark_faulted(skewed)
    await ctx.do(faults.restart, skewed, 2.0)
    await ctx.wait_ready(skewed)
    started = time.monotonic()
    missing = await _acked_but_missing(ctx, skewed, peers, count=10)
    await asyncio.sleep(max(0.0, ctx.timing.skew_hold - (time.monotonic() - started)))
    ctx.heal_at = time.monotonic()
    refused = {p: await _metric(ctx, p, "replication_refused_batches_total") for p in peers}
    hlc_ahead = {p: await _hlc_ahead(ctx, p) for p in peers}
    logged = {
        p: bool(re.search(rf"refused a batch from node={skewed}", ctx.rig.log_text(p)))
        for p in peers
    }
    r = ctx.result
    r.checks["peers refused the skewed node's batches"] = all(v > 0 for v in refused.values())
    r.checks["refusals logged by every peer"] = all(logged.values())
    r.checks["peers' clocks did not adopt the skew"] = all(a < 1.0 for a in hlc_ahead.values())
    r.checks["sync ack (X-Replicas n/n) means the peers hold the write"] = missing == 0
    r.notes.append(
        f"{skewed} +2.0 s; refused batches {refused}; peers' HLC ahead of real time "
        + ", ".join(f"{p} {a:+.2f} s" for p, a in hlc_ahead.items())
        + f"; {missing}/10 writes acknowledged {len(names)}/{len(names)} by {skewed} were "
        "missing on a peer right after the ack"
    )


async def _acked_but_missing(ctx: Ctx, writer: str, readers: list[str], count: int) -> int:
    """Direct writes on `writer` acknowledged as on every node, then read on each reader."""
    missing = 0
    for i in range(count):
        key, value = f"skewprobe{i}", f"skewprobe-value-{i}"
        w = ctx.load.record("put", (key,), (value,), writer)
        await ctx.load.send(w, "PUT", f"{ctx.rig.node(writer).url}/keys/{key}", {"value": value})
        acked, _, expected = (w.replicas or "").partition("/")
        if not w.acked or acked != expected:
            continue
        for reader in readers:
            async with ctx.session.get(f"{ctx.rig.node(reader).url}/keys/{key}") as resp:
                body = orjson.loads(await resp.read())
            if resp.status != 200 or body.get("value") != value:
                missing += 1
                break
    return missing


async def _metrics(ctx: Ctx, name: str) -> dict[str, float]:
    async with ctx.session.get(ctx.rig.node(name).url + "/metrics") as resp:
        text = (await resp.read()).decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            metric, _, value = line.rpartition(" ")
            try:
                out[metric] = float(value)
            except ValueError:
                continue
    return out


async def _metric(ctx: Ctx, name: str, metric: str) -> float:
    return (await _metrics(ctx, name)).get(metric, 0.0)


async def _hlc_ahead(ctx: Ctx, name: str) -> float:
    """How far the node's last HLC timestamp is ahead of the real clock, in seconds."""
    last_ms = await _metric(ctx, name, "hlc_last_wall_ms")
    return last_ms / 1000.0 - time.time()


async def loss_delay(ctx: Ctx) -> None:
    victim = ctx.rig.names()[1]
    await ctx.fault(faults.netem, victim, 10.0, 50.0, faulted=[victim], partition=True)
    await asyncio.sleep(ctx.timing.hold_max / 2)
    await ctx.heal(faults.heal)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("isolate", "isolate one node", 3, isolate_one, ci=True, clear_at=4.0),
        Scenario("split", "split brain 3 vs 2", 5, split_brain, clear_at=5.0),
        Scenario("one-way", "one-way loss n2 <- n1", 3, one_way_loss),
        Scenario("kill-restart", "kill -9 and restart under load", 3, kill_restart, ci=True),
        Scenario("restart-two", "kill -9 two of three, restart both", 3, restart_two),
        Scenario(
            "power-cut",
            "whole mesh power cut (kill -9 all, --fsync always)",
            3,
            power_cut,
            ci=True,
            clear_at=1.0,
            fsync="always",
            keys=500,
        ),
        Scenario(
            "power-cut-everysec",
            "whole mesh power cut (kill -9 all, --fsync everysec)",
            3,
            power_cut,
            clear_at=1.0,
            fsync="everysec",
            keys=500,
        ),
        Scenario("pause", "SIGSTOP past the suspicion timeout", 3, pause_resume, ci=True),
        Scenario("skew", "clocks skewed +-400 ms", 3, skew_within),
        Scenario("skew-beyond", "one clock 2 s ahead (max 0.5 s)", 3, skew_beyond, ci=True),
        Scenario("netem", "10% loss + 50 ms delay on one node", 3, loss_delay),
    )
}


# --- running one scenario -------------------------------------------------------------------------


def run_scenario(
    scenario: Scenario, timing: Timing, log_dir: Path | None = None, nodes: int | None = None
) -> Result:
    """Build a rig, run the scenario in its hub, judge, tear the rig down."""
    count = nodes or (scenario.quick_nodes if timing is QUICK else scenario.nodes)
    result = Result(scenario.name, scenario.title, count)
    started = time.monotonic()
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        for old in log_dir.glob("n*.log"):
            old.unlink()
    node_args = timing.node_args
    if scenario.fsync is not None:
        node_args = (*node_args, "--fsync", scenario.fsync)
    rig = Rig(
        nodes_count=count,
        node_args=node_args,
        log_dir=log_dir,
        persist=scenario.fsync is not None,
    )
    with rig:
        result.logs = str(rig.log_dir)
        if scenario.step is loss_delay:
            ok, why = faults.netem_available(rig)
            if not ok:
                result.skipped = why
                return result
        rig.run_in_hub(lambda: _drive(rig, scenario, timing, result))
    result.duration = time.monotonic() - started
    return result


async def _drive(rig: Rig, scenario: Scenario, timing: Timing, result: Result) -> None:
    nodes = [(n.name, n.url) for n in rig.nodes.values()]
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        monitor = Monitor(session, nodes)
        formed = await monitor.wait_everyone_alive(rig.names(), 30.0)
        if formed is None:
            raise RigError(f"the mesh did not form: {monitor.views}")
        balancer = None
        if rig.nginx is not None:
            balancer = Target("lb", rig.balancer_url, rig.balancer_tcp)
        cfg = LoadConfig(
            prefix=f"{scenario.name[:3]}",
            concurrency=timing.concurrency,
            rate=timing.rate,
            timeout=timing.timeout,
            clear_at=scenario.clear_at,
            keys=scenario.keys,
        )
        targets = [Target(n.name, n.url, n.tcp) for n in rig.nodes.values()]
        load = Load(session, cfg, balancer, targets)
        ctx = Ctx(rig, session, monitor, load, timing, result)
        monitor_task = asyncio.create_task(monitor.run())
        load_task = asyncio.create_task(load.run())
        try:
            await asyncio.sleep(timing.warmup)
            await scenario.step(ctx)
            await asyncio.sleep(timing.after)
        finally:
            load.stop()
            await load_task
        await _conclude(ctx, nodes, monitor_task)


async def _conclude(
    ctx: Ctx, nodes: list[tuple[str, str]], monitor_task: asyncio.Task[None]
) -> None:
    rig, timing, result, monitor = ctx.rig, ctx.timing, ctx.result, ctx.monitor
    heal_at = ctx.heal_at or ctx.load.stopped
    base = max(heal_at, ctx.load.stopped)
    took, states = await wait_converged(ctx.session, nodes, timing.converge_timeout)
    result.converge = (time.monotonic() - base) if took is not None else None
    result.checks["every node holds identical data"] = took is not None
    if took is None:
        result.details += describe_difference(states)
        for name in rig.names():
            try:
                m = await _metrics(ctx, name)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                result.details.append(f"{name} metrics unreadable: {exc!r}")
                continue
            picked = {k: v for k, v in m.items() if k.startswith(("antientropy", "replication"))}
            result.details.append(f"{name} {picked}")
    back = await monitor.wait_everyone_alive(rig.names(), timing.recover_timeout)
    result.checks["membership whole again (refuted or rejoined by itself)"] = back is not None
    monitor.stop()
    await monitor_task
    # The nodes' own logs have every transition to the millisecond, brief ones included; the
    # polls add nothing they lack, but are kept (a node's log is lost if it is not flushed).
    offset = time.time() - time.monotonic()
    logged = [s for n in rig.names() for s in logged_transitions(rig.log_text(n), offset)]
    logged = [s for s in logged if s.t >= ctx.load.started]  # not the mesh forming
    monitor.history = sorted([*monitor.history, *logged], key=lambda s: s.t)
    if back is not None:
        result.recover = monitor.whole_again(heal_at)
    if ctx.fault_at is not None:
        subjects = ctx.detect_subjects
        detects = [monitor.first(s, {"suspect", "dead"}, ctx.fault_at, ctx.detect_observers)
                   for s in subjects]  # fmt: skip
        deads = [monitor.all_first(s, {"dead"}, ctx.fault_at, ctx.detect_observers)
                 for s in subjects]  # fmt: skip
        if subjects and all(d is not None for d in detects):
            result.detect = max(d for d in detects if d is not None)
        if subjects and all(d is not None for d in deads):
            result.dead = max(d for d in deads if d is not None)
    fps = monitor.false_positives()
    result.false_positives = len({(s.observer, s.subject) for s in fps})
    result.false_suspicions = monitor.false_suspicions()
    for s in sorted(fps, key=lambda s: s.t)[:5]:
        since = s.t - ctx.load.started
        result.details.append(
            f"false positive: {s.observer} declared {s.subject} dead {since:.1f} s into the load"
        )
    # Short TTLs (at most 3 s) must have run out everywhere before the verdict.
    ttl_end = max((w.start + (w.ttl or 0.0) for w in ctx.load.writes), default=0.0) + 2.0
    await asyncio.sleep(max(0.0, ttl_end - time.monotonic()))
    final = await fetch_all(ctx.session, nodes)
    verdicts: list[Verdict] = []
    for name, state in final.items():
        if isinstance(state, NodeState):
            verdicts.append(judge(ctx.load.writes, state))
        else:
            result.details.append(f"{name} unreadable for the verdict: {state}")
            result.checks[f"{name} readable for the verdict"] = False
    take_verdicts(result, verdicts)
    stats = ctx.load.stats
    result.notes.append(f"{stats.ops} ops, reads {stats.reads_ok} ok / {stats.reads_failed} failed")
    events = {
        "load_started": ctx.load.started,
        "fault_at": ctx.fault_at,
        "heal_at": ctx.heal_at,
        "load_stopped": ctx.load.stopped,
        "wall_minus_monotonic": time.time() - time.monotonic(),
    }
    membership = [
        (round(x.t - ctx.load.started, 3), x.observer, x.subject, x.state)
        for x in ctx.monitor.history
    ]
    _save_history(rig, ctx.load.writes, final, events, membership)


def take_verdicts(result: Result, verdicts: list[Verdict]) -> None:
    """The figures of the worst node's verdict (most failures), into the scenario's result."""
    if not verdicts:
        return
    worst = max(verdicts, key=lambda v: v.lost + v.resurrected + v.partial + v.phantom)
    result.acked, result.attempted = worst.acked, worst.attempted
    result.lost, result.resurrected = worst.lost, worst.resurrected
    result.partial, result.phantom = worst.partial, worst.phantom
    result.unverified = worst.unverified
    result.details += worst.details
    if worst.cleared:
        result.notes.append(f"{worst.cleared} acknowledged transactions wiped by the clear")
    if worst.unverified:
        result.notes.append(
            f"{worst.unverified} absences unverified: explained only by a delete, expiry or clear "
            "of unknown version or order (unacknowledged, or its tombstone purged)"
        )


def _save_history(
    rig: Rig,
    writes: list[Write],
    states: dict[str, NodeState | str],
    events: dict[str, float | None],
    membership: list[tuple[float, str, str, str]],
) -> None:
    """Every write and every node's final state, next to the node logs (for bug reports)."""
    if rig.log_dir is None:
        return
    doc = {
        "events": events,
        "membership": membership,  # (seconds into the load, observer, subject, new state)
        "writes": [dataclasses.asdict(w) for w in writes],
        "states": {
            name: (
                state
                if isinstance(state, str)
                else {
                    "live": state.live,
                    "clear": state.clear,
                    "stored": {k: dataclasses.astuple(e) for k, e in state.stored.items()},
                }
            )
            for name, state in states.items()
        },
    }
    (rig.log_dir / "history.json").write_bytes(orjson.dumps(doc))


# --- the report -----------------------------------------------------------------------------------


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(results: list[Result], timing: Timing) -> str:
    lines = [
        f"# Fault injection ({timing.name} timing"
        + (", probe 0.2 s, anti-entropy 0.5 s" if timing is QUICK else ", node defaults")
        + ")",
        "",
        "| scenario | nodes | writes acked / attempted | lost | resurrected | torn batch/txn "
        "| unverified | converge after heal (s) | detect: suspect / dead (s) | false positives "
        "| membership whole (s) | result |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if r.skipped:
            lines.append(
                f"| {_cell(r.title)} | {r.nodes} | - | - | - | - | - | - | - | - | - "
                f"| skipped: {_cell(r.skipped)} |"
            )
            continue
        # unverified: absences the verdict could neither confirm nor refute (not failures).
        lines.append(
            f"| {_cell(r.title)} | {r.nodes} | {r.acked} / {r.attempted} | {r.lost} "
            f"| {r.resurrected} "
            f"| {r.partial} | {r.unverified} | {_s(r.converge)} | {_s(r.detect)} / {_s(r.dead)} "
            f"| {r.false_positives} | {_s(r.recover)} | {_cell(r.status)} |"
        )
    lines.append("")
    for r in results:
        if r.skipped:
            continue
        lines.append(f"**{r.title}** ({r.duration:.0f} s; logs {r.logs}): " + "; ".join(r.notes))
        for d in r.details:
            lines.append(f"- {d}")
        lines.append("")
    return "\n".join(lines)
