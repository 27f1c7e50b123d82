"""`make verify`: the consistency checker, the testing service the task asks for.

    python -m loadtest.check [--nodes 3] [--duration 20s] [--writers 8] [--kill-restart | --pause]
    python -m loadtest.check --power-cut [--node-arg=--fsync=always]   # every node at once, on disk
    python -m loadtest.check --url http://127.0.0.1:8080     # a mesh that is already running

It drives concurrent writers through the balancer (sets by PUT /keys/{k} and /set?k=&v=, deletes
by DELETE /keys/{k} and /rm?k=, batch PUT /keys), every value unique so that an observed value
names the write that produced it, and records each answer: the status, X-Timestamp (the write's
HLC timestamp) and X-Upstream (the node nginx used, so writes order by (timestamp, node name)).
With --kill-restart it kills one node with SIGKILL a third of the way in and restarts it (same
name and ports) a moment later; with --pause it freezes one instead (SIGSTOP, then SIGCONT); with
--power-cut it kills every node at once (SIGKILL, by PID) and restarts them all: the nodes then
keep their replicas on disk (--data-dir DATA_ROOT/<node>), which is all that can bring the data
back, since no node survives to give it.
Writers also read their own private keys back through the balancer. When the writes stop it
waits for convergence, reads every node directly (paged GET /keys) and checks:

1. convergence: every node holds identical data;
2. no acknowledged write was lost: each key's value is the one of the acknowledged write with the
   greatest (timestamp, node), or absent when that write was a delete. A write whose answer never
   came (a timeout, a 5xx after nginx's retries, a retried delete that answered 404) may have been
   applied with a timestamp we never saw: its value may legitimately win, and is counted apart;
3. no deleted key came back: a key whose latest acknowledged write is a delete holds no older value;
4. read-your-writes: a read right after an acknowledged write returns it. Only a write that every
   node acknowledged (X-Replicas n/n) makes a stale read a violation: the contract lets a sync
   write be answered after the replication timeout with fewer acks, and that is reported apart.

It prints a verdict with the counts and exits 0 (pass), 1 (a violation) or 2 (it could not run).
The decision logic (`judge`) is pure and unit-tested with histories that violate each rule; what
last-writer-wins allows for one key (rules 2 and 3) is `loadtest.oracle`'s to decide, the same
oracle the fault verdict and the data-plane simulation ask.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadtest import mesh as meshlib
from loadtest import oracle, procs

ACKED, REJECTED, UNKNOWN = "acked", "rejected", "unknown"
REQUEST_TIMEOUT = 15.0  # seconds: nginx's retries plus a sync write's replication timeout
PAGE = 1000
BACKOFF = 0.05  # seconds a writer waits after a request nothing answered (or a 5xx)


# --- the history (what the clients saw) -----------------------------------------------------------


@dataclass
class Op:
    """One client operation and what came back. `changes` maps key -> value (None: delete)."""

    id: int
    kind: str  # "set", "delete" or "batch"
    changes: dict[str, str | None]
    started: float = 0.0
    ended: float = 0.0
    status: int | None = None  # None: no HTTP answer (connection error, timeout)
    error: str = ""
    ts: int | None = None  # X-Timestamp
    node: str | None = None  # the node that answered (X-Upstream mapped to its name)
    upstreams: int = 0  # how many nodes nginx tried (more than 1: it retried)
    replicas: tuple[int, int] | None = None  # X-Replicas acked/expected

    @property
    def outcome(self) -> str:
        """acked (applied, timestamp known), rejected (certainly not applied) or unknown."""
        if self.status == 200 and self.ts is not None:
            return ACKED
        if self.status in (400, 413):
            return REJECTED
        if self.status == 404 and self.kind == "delete" and self.upstreams <= 1:
            return REJECTED  # nothing to delete; no earlier attempt may have deleted it
        return UNKNOWN

    @property
    def fully_replicated(self) -> bool:
        return self.replicas is not None and self.replicas[0] >= self.replicas[1]

    def order(self) -> tuple[int, str]:
        return (self.ts or 0, self.node or "")


@dataclass
class Read:
    """A read-your-writes probe: after `op` (acknowledged) the balancer answered `got`."""

    op: int
    key: str
    expected: str | None
    got: str | None
    status: int | None


# --- the decision (pure) --------------------------------------------------------------------------


@dataclass
class Violation:
    rule: str  # "diverged", "lost-write", "resurrected", "phantom", "read-your-writes"
    key: str
    detail: str


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    keys_present: int = 0
    keys_absent: int = 0
    won_by_unknown: int = 0  # keys whose value came from a write with no answer (legitimate)
    ties: int = 0  # keys whose winner was a tie we could not break (node unknown): any accepted
    stale_after_partial: int = 0  # stale reads after a write fewer than all nodes acknowledged
    reads: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations


def _describe(op: Op, key: str) -> str:
    value = op.changes[key]
    what = "delete" if value is None else f"set {value!r}"
    return f"op {op.id} {what} (ts {op.ts}, node {op.node or '?'}, {op.outcome})"


def _as_write(op: Op, key: str) -> oracle.Write:
    """What the history tells the oracle of one op's write to `key`: an acknowledged op must
    survive at (its X-Timestamp, the node that answered, or None if unknown); an op without an
    answer may or may not have been applied, at a timestamp we never saw. (Rejected ops wrote
    nothing and are left out.)"""
    label = f"{op.outcome} op {op.id}"
    if op.outcome == ACKED:
        assert op.ts is not None
        return oracle.Write((op.ts, op.node), op.changes[key], True, label)
    return oracle.Write(None, op.changes[key], False, label)


def judge_key(key: str, ops: Sequence[Op], final: str | None, report: Report) -> None:
    """Check one key's converged value against the writes made to it (rules 2 and 3).

    `loadtest.oracle` decides; this only counts. The value alone is known (read through HTTP),
    so a value only an unanswered write explains counts as `won_by_unknown`, and a timestamp tie
    with an unknown node (either may have won) as one of `ties`.
    """
    if final is None:
        report.keys_absent += 1
    else:
        report.keys_present += 1
    writes = [_as_write(o, key) for o in ops if o.outcome != REJECTED]
    decision = oracle.decide(key, writes, final)
    report.ties += int(decision.tie)
    report.won_by_unknown += int(decision.uncertain)
    if decision.violation is not None:
        v = decision.violation
        report.violations.append(Violation(v.rule, key, v.detail))


def diverged(data: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str | None]]:
    """Keys on which the nodes disagree: key -> {node: value or None}."""
    keys = set().union(*data.values()) if data else set()
    out: dict[str, dict[str, str | None]] = {}
    for key in sorted(keys):
        seen = {node: d.get(key) for node, d in data.items()}
        if len(set(seen.values())) > 1:
            out[key] = seen
    return out


def judge(
    ops: Iterable[Op],
    data: Mapping[str, Mapping[str, str]],
    reads: Iterable[Read] = (),
    unavailable: Iterable[str] = (),
) -> Report:
    """The verdict on a run: `data` is each node's final data (node -> {key: value}); nodes in
    `unavailable` could not be read at all (not ready, or not answering) after the run."""
    ops = list(ops)
    by_id = {o.id: o for o in ops}
    report = Report()
    for node in unavailable:
        report.violations.append(Violation("unavailable", node, "could not be read after the run"))
    split = diverged(data)
    for key, seen in split.items():
        shown = ", ".join(f"{n}={v!r}" for n, v in sorted(seen.items()))
        report.violations.append(Violation("diverged", key, f"nodes disagree: {shown}"))
    per_key: dict[str, list[Op]] = {}
    for op in ops:
        for key in op.changes:
            per_key.setdefault(key, []).append(op)
    # Identical nodes are judged once; nodes that diverged are each judged (violations deduped).
    seen_violations: set[tuple[str, str]] = set()
    for i, (node, view) in enumerate(sorted(data.items())):
        if i and not split:
            break
        sub = Report()
        for key in sorted(set(per_key) | set(view)):
            judge_key(key, per_key.get(key, []), view.get(key), sub)
        if i == 0:
            report.keys_present, report.keys_absent = sub.keys_present, sub.keys_absent
            report.won_by_unknown, report.ties = sub.won_by_unknown, sub.ties
        for v in sub.violations:
            if (v.rule, v.key) not in seen_violations:
                seen_violations.add((v.rule, v.key))
                detail = f"on {node}: {v.detail}" if split else v.detail
                report.violations.append(Violation(v.rule, v.key, detail))
    for r in reads:
        report.reads += 1
        if r.got == r.expected:
            continue
        op = by_id[r.op]
        if not op.fully_replicated:
            report.stale_after_partial += 1
            continue
        report.violations.append(
            Violation(
                "read-your-writes",
                r.key,
                f"read {r.got!r} (HTTP {r.status}) right after {_describe(op, r.key)}, "
                f"which every node acknowledged ({op.replicas[0] if op.replicas else '?'})",
            )
        )
    return report


# --- the writers (IO) -----------------------------------------------------------------------------


@dataclass
class Settings:
    duration: float = 20.0
    writers: int = 8
    keys: int = 50  # shared keys: small, so that writers contend
    private_keys: int = 4  # each writer's own keys, read back after each write
    seed: int = 1


@dataclass
class Run:
    """Everything observed; `names` maps a node's HTTP address to its name."""

    run_id: str
    ops: list[Op] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    t0: float = field(default_factory=time.monotonic)

    def event(self, text: str) -> None:
        line = f"{time.monotonic() - self.t0:6.1f}s {text}"
        self.events.append(line)
        print(f"  {line}", flush=True)


def _header_ts(headers: Mapping[str, str]) -> int | None:
    raw = headers.get("X-Timestamp")
    return int(raw) if raw is not None and raw.isdigit() else None


def _header_replicas(headers: Mapping[str, str]) -> tuple[int, int] | None:
    m = re.fullmatch(r"(\d+)/(\d+)", headers.get("X-Replicas", ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


class Writer:
    def __init__(
        self, index: int, run: Run, session: aiohttp.ClientSession, url: str, s: Settings
    ) -> None:
        self.index = index
        self.run = run
        self.session = session
        self.url = url
        self.s = s
        self.rng = random.Random(s.seed * 1000 + index)
        self.seq = 0
        self.latest: dict[str, int] = {}  # private key -> id of our last acked write

    def _key(self) -> str:
        return f"{self.run.run_id}-k{self.rng.randrange(self.s.keys)}"

    def _private(self) -> str:
        return f"{self.run.run_id}-w{self.index}-p{self.rng.randrange(self.s.private_keys)}"

    def _value(self) -> str:
        self.seq += 1
        return f"w{self.index}.{self.seq}"

    async def request(self, op: Op, method: str, path: str, body: Any = None) -> None:
        op.started = time.monotonic()
        try:
            async with self.session.request(method, self.url + path, json=body) as resp:
                await resp.read()
                op.status = resp.status
                op.ts = _header_ts(resp.headers)
                op.replicas = _header_replicas(resp.headers)
                upstreams = [u.strip() for u in resp.headers.get("X-Upstream", "").split(",")]
                upstreams = [u for u in upstreams if u]
                op.upstreams = len(upstreams)
                if upstreams:
                    op.node = self.run.names.get(upstreams[-1])
        except (aiohttp.ClientError, TimeoutError) as exc:
            op.error = repr(exc)
        op.ended = time.monotonic()
        self.run.ops.append(op)
        if op.status is None or op.status >= 500:
            await asyncio.sleep(BACKOFF)  # no node answers (a power cut): do not spin

    def _op(self, kind: str, changes: dict[str, str | None]) -> Op:
        return Op(next(self.run.ids), kind, changes)

    async def step(self) -> None:
        r = self.rng.random()
        if r < 0.25:  # a private key, read back at once
            key, value = self._private(), self._value()
            op = self._op("set", {key: value})
            await self.request(op, "PUT", f"/keys/{key}", {"value": value})
            if op.outcome == ACKED:
                await self.read_back(op, key, value)
        elif r < 0.55:
            key, value = self._key(), self._value()
            op = self._op("set", {key: value})
            if self.rng.random() < 0.7:
                await self.request(op, "PUT", f"/keys/{key}", {"value": value})
            else:
                await self.request(op, "GET", f"/set?k={key}&v={value}")
        elif r < 0.78:
            key = self._key()
            op = self._op("delete", {key: None})
            if self.rng.random() < 0.7:
                await self.request(op, "DELETE", f"/keys/{key}")
            else:
                await self.request(op, "GET", f"/rm?k={key}")
        elif r < 0.83:  # delete a private key and read the absence back
            key = self._private()
            op = self._op("delete", {key: None})
            await self.request(op, "DELETE", f"/keys/{key}")
            if op.outcome == ACKED:
                await self.read_back(op, key, None)
        else:
            value = self._value()
            keys = {self._key() for _ in range(self.rng.randint(2, 5))}
            op = self._op("batch", dict.fromkeys(sorted(keys), value))
            await self.request(op, "PUT", "/keys", dict.fromkeys(sorted(keys), value))

    async def read_back(self, op: Op, key: str, expected: str | None) -> None:
        try:
            async with self.session.get(f"{self.url}/keys/{key}") as resp:
                body = await resp.json(content_type=None)
                got = body.get("value") if resp.status == 200 else None
                status: int | None = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return  # no answer is not a stale answer
        if status in (200, 404):
            self.run.reads.append(Read(op.id, key, expected, got, status))

    async def loop(self, until: float) -> None:
        while time.monotonic() < until:
            await self.step()


# --- reading the nodes ----------------------------------------------------------------------------


async def members(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/cluster/members") as resp:
        resp.raise_for_status()
        body = await resp.json()
    return list(body["members"])


async def node_data(session: aiohttp.ClientSession, node_url: str, prefix: str) -> dict[str, str]:
    """Every key of this run on one node, read directly, page by page (GET /keys?limit&cursor)."""
    data: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params = {"filter": f"{prefix}*", "limit": str(PAGE)}
        if cursor is not None:
            params["cursor"] = cursor
        async with session.get(f"{node_url}/keys", params=params) as resp:
            resp.raise_for_status()
            page = await resp.json()
        data.update(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return data


async def converge(
    session: aiohttp.ClientSession, node_urls: Mapping[str, str], prefix: str, within: float
) -> tuple[dict[str, dict[str, str]], list[str], float]:
    """Poll every node directly until all are ready and hold identical data, or `within` s pass.

    Returns each node's data (from the last round that read it), the nodes that could not be
    read in that round (not ready or not answering), and the seconds it took.
    """
    started = time.monotonic()
    while True:
        data: dict[str, dict[str, str]] = {}
        missing: list[str] = []
        for name, url in sorted(node_urls.items()):
            try:
                async with session.get(f"{url}/health") as resp:
                    ready = resp.status == 200
                if ready:
                    data[name] = await node_data(session, url, prefix)
                else:
                    missing.append(name)
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                missing.append(name)
        took = time.monotonic() - started
        if (not missing and not diverged(data)) or took > within:
            return data, missing, took
        await asyncio.sleep(0.5)


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Target:
    """Where to write (the balancer) and the nodes to read, by name; `mesh` if we started it."""

    url: str
    nodes: dict[str, str]  # name -> http://address
    mesh: meshlib.Mesh | None = None


async def discover(url: str) -> dict[str, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        found = await members(session, url)
    return {m["name"]: f"http://{m['address']}" for m in found if m["state"] == "alive"}


async def inject(target: Target, run: Run, fault: str, at: float, down: float, victim: str) -> None:
    """At `at` (monotonic), either SIGKILL `victim` and start it again `down` seconds later
    ("kill"), or freeze it with SIGSTOP for `down` seconds and SIGCONT it ("pause"), or SIGKILL
    every node at once and start them all again `down` seconds later ("power-cut"); then wait
    until it (each of them) answers /health with 200 again (joined and synced)."""
    mesh = target.mesh
    assert mesh is not None
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    if fault == "power-cut":
        await power_cut(target, run, mesh, down)
        return
    child = mesh.children[victim]
    assert child.proc is not None
    if fault == "kill":
        os.kill(child.proc.pid, signal.SIGKILL)
        child.proc.wait()
        child.reported = True
        run.event(f"{victim} killed with SIGKILL (PID {child.proc.pid})")
        await asyncio.sleep(down)
        mesh.respawn(victim)
        run.event(f"{victim} restarted (PID {child.proc.pid}), joining")
    else:
        os.kill(child.proc.pid, signal.SIGSTOP)
        run.event(f"{victim} frozen with SIGSTOP (PID {child.proc.pid})")
        try:
            await asyncio.sleep(down)
        finally:
            os.kill(child.proc.pid, signal.SIGCONT)
        run.event(f"{victim} resumed with SIGCONT")
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(target.nodes[victim] + "/health") as resp:
                    if resp.status == 200:
                        run.event(f"{victim} is ready again")
                        return
            await asyncio.sleep(0.1)
    run.event(f"{victim} did not become ready within 30 s")


async def power_cut(target: Target, run: Run, mesh: meshlib.Mesh, down: float) -> None:
    """SIGKILL every node at once (by PID, one signal after the other, before waiting for any),
    restart them all `down` seconds later, and wait until every one serves again."""
    names = sorted(target.nodes)
    procs_ = {n: mesh.children[n].proc for n in names}
    for proc in procs_.values():
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
    for name, proc in procs_.items():
        assert proc is not None
        proc.wait()
        mesh.children[name].reported = True
    pids = ", ".join(f"{n} {p.pid}" for n, p in procs_.items() if p is not None)
    run.event(f"power cut: every node killed with SIGKILL at once (PIDs {pids})")
    await asyncio.sleep(down)
    for name in names:
        mesh.respawn(name)
    run.event(f"all {len(names)} nodes restarted from their data directories, joining")
    started = time.monotonic()
    pending = set(names)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while pending and time.monotonic() - started < 60:
            for name in sorted(pending):
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(target.nodes[name] + "/health") as resp:
                        if resp.status == 200:
                            pending.discard(name)
            await asyncio.sleep(0.1)
    if pending:
        run.event(f"{', '.join(sorted(pending))} did not become ready within 60 s")
    else:
        took = time.monotonic() - started
        run.event(f"every node is ready again ({took:.1f} s after the restart)")


async def drive(
    target: Target,
    s: Settings,
    fault: str | None,
    down: float,
    within: float,
    history: Path | None = None,
) -> int:
    """Write, maybe kill and restart, converge, judge, print; 0 if the verdict is PASS."""
    run = Run(run_id=f"chk{uuid.uuid4().hex[:8]}")
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        connector=aiohttp.TCPConnector(limit=s.writers * 2),
    ) as session:
        for m in await members(session, target.url):
            run.names[m["address"]] = m["name"]
        writers = [Writer(i, run, session, target.url, s) for i in range(1, s.writers + 1)]
        run.t0 = time.monotonic()
        until = run.t0 + s.duration
        print(
            f"kvmesh check: {len(target.nodes)} nodes, {s.writers} writers for {s.duration:g} s "
            f"through {target.url}, keys {run.run_id}-*",
            flush=True,
        )
        async with asyncio.TaskGroup() as tg:
            for w in writers:
                tg.create_task(w.loop(until))
            if fault is not None:
                victim = random.Random(s.seed).choice(sorted(target.nodes))
                at = run.t0 + s.duration / 3
                tg.create_task(inject(target, run, fault, at, down, victim))
        run.event("writes stopped; waiting for convergence")
        data, missing, took = await converge(session, target.nodes, run.run_id, within)
    report = judge(run.ops, data, run.reads, missing)
    print_verdict(run, report, data, took, within)
    if history is not None:
        await asyncio.to_thread(history.write_text, dump(run.ops))
        print(f"  history      {history} (one operation a line, JSON)")
    return 0 if report.ok else 1


def print_verdict(
    run: Run, report: Report, data: Mapping[str, Mapping[str, str]], took: float, timeout: float
) -> None:
    outcomes = Counter(o.outcome for o in run.ops)
    kinds = Counter(o.kind for o in run.ops if o.outcome == ACKED)
    partial = sum(1 for o in run.ops if o.outcome == ACKED and not o.fully_replicated)
    retried = sum(1 for o in run.ops if o.upstreams > 1)
    errors = Counter(
        o.error.split("(")[0] or f"HTTP {o.status}" for o in run.ops if o.outcome == UNKNOWN
    )
    converged = not diverged(data) and not any(v.rule == "unavailable" for v in report.violations)
    rules = Counter(v.rule for v in report.violations)
    print(
        f"  operations   {len(run.ops)}: {outcomes[ACKED]} acknowledged "
        f"({kinds['set']} sets, {kinds['delete']} deletes, {kinds['batch']} batches), "
        f"{outcomes[REJECTED]} not applied (delete of a missing key), "
        f"{outcomes[UNKNOWN]} without an answer" + (f" {dict(errors)}" if errors else "")
    )
    print(
        f"  replication  {outcomes[ACKED] - partial} acknowledged by every node, {partial} by "
        f"fewer (X-Replicas); {retried} retried by nginx on another node"
    )
    print(
        f"  convergence  {len(data)} nodes read "
        + (f"identical after {took:.1f} s" if converged else f"still differ after {timeout:g} s")
        + f"; {report.keys_present} keys present, {report.keys_absent} absent"
    )
    print(
        f"  reads        {report.reads} read-your-writes probes, "
        f"{rules['read-your-writes']} stale after a write every node acknowledged, "
        f"{report.stale_after_partial} stale after a partially acknowledged one"
    )
    print(
        f"  winners      {report.won_by_unknown} keys won by a write whose answer was lost, "
        f"{report.ties} unbreakable timestamp ties"
    )
    for v in report.violations[:20]:
        print(f"  VIOLATION {v.rule}: {v.key} {v.detail}")
    if len(report.violations) > 20:
        print(f"  ... and {len(report.violations) - 20} more")
    summary = ", ".join(f"{n} {r}" for r, n in sorted(rules.items())) or "none"
    verdict = "PASS" if report.ok else "FAIL"
    print(f"VERDICT: {verdict} ({len(report.violations)} violations: {summary})", flush=True)


# --- the command line -----------------------------------------------------------------------------


def parse_seconds(text: str) -> float:
    """'20', '20s', '1m' or '1m30s' -> seconds."""
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip())
    if not text.strip() or m is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 20s or 1m)")
    return float(m.group(1) or 0) * 60 + float(m.group(2) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", help="the balancer of a running mesh (else start one of our own)")
    p.add_argument("--nodes", type=int, default=3, help="nodes of our own mesh [3]")
    p.add_argument("--duration", type=parse_seconds, default=20.0, help="writing time [20s]")
    p.add_argument("--writers", type=int, default=8, help="concurrent writers [8]")
    p.add_argument("--keys", type=int, default=50, help="shared keys the writers contend on [50]")
    fault = p.add_mutually_exclusive_group()
    fault.add_argument(
        "--kill-restart",
        dest="fault",
        action="store_const",
        const="kill",
        help="SIGKILL a node a third of the way in, restart it --down seconds later",
    )
    fault.add_argument(
        "--pause",
        dest="fault",
        action="store_const",
        const="pause",
        help="freeze a node (SIGSTOP) a third of the way in, for --down seconds",
    )
    fault.add_argument(
        "--power-cut",
        dest="fault",
        action="store_const",
        const="power-cut",
        help="SIGKILL every node at once a third of the way in, restart all --down seconds later"
        " (the nodes keep their data on disk: see --data-root)",
    )
    p.add_argument("--down", type=parse_seconds, default=2.0, help="how long it is down [2s]")
    p.add_argument("--converge-timeout", type=parse_seconds, default=60.0, help="[60s]")
    p.add_argument("--seed", type=int, default=1, help="seeds the writers and the victim [1]")
    p.add_argument("--node-arg", action="append", default=[], help="extra node.py argument")
    p.add_argument(
        "--data-root",
        type=Path,
        help="node N keeps its replica in DATA_ROOT/nodeN (--data-dir); with --power-cut the "
        "default is a directory beside our mesh's logs",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep our mesh's logs on success")
    p.add_argument("--history", type=Path, help="write every operation to this file (JSON lines)")
    args = p.parse_args(argv)
    settings = Settings(args.duration, args.writers, args.keys, seed=args.seed)
    if args.url:
        if args.fault is not None:
            p.error(
                "--kill-restart and --pause need a mesh of our own (its PIDs), and so does "
                "--power-cut: drop --url"
            )
        try:
            nodes = asyncio.run(discover(args.url.rstrip("/")))
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            print(f"check: cannot list the members through {args.url}: {exc!r}", file=sys.stderr)
            return 2
        target = Target(args.url.rstrip("/"), nodes)
        return asyncio.run(drive(target, settings, None, 0, args.converge_timeout, args.history))
    if procs.nginx_binary() is None:
        print("check: nginx is not installed (sudo make install-system)", file=sys.stderr)
        return 2
    run_dir = Path(tempfile.mkdtemp(prefix="kvcheck-"))
    data_root = args.data_root.resolve() if args.data_root is not None else None
    if data_root is None and args.fault == "power-cut":
        data_root = run_dir / "data"
    plan = meshlib.free_plan(args.nodes, args.node_arg, data_root)
    mesh = meshlib.Mesh(plan, run_dir, quiet=True)
    status = 2
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        mesh.start_nodes()
        mesh.wait_nodes()
        mesh.start_nginx()
        mesh.wait_nginx()
        nodes = {n.name: f"http://127.0.0.1:{n.port}" for n in mesh.plan.nodes}
        target = Target(mesh.plan.url, nodes, mesh)
        status = asyncio.run(
            drive(
                target,
                settings,
                args.fault,
                args.down,
                args.converge_timeout,
                args.history,
            )
        )
    except RuntimeError as exc:
        print(f"check: the mesh did not start: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("check: interrupted", file=sys.stderr)
    finally:
        mesh.stop()
        signal.signal(signal.SIGTERM, previous)
        if status == 0 and not args.keep_logs:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"  node and nginx logs: {run_dir}")
    return 130 if stop else status


def dump(ops: Iterable[Op]) -> str:
    """The history as JSON lines (for debugging a failed run)."""
    return "\n".join(json.dumps(asdict(o)) for o in ops)


if __name__ == "__main__":
    raise SystemExit(main())
