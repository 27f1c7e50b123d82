"""Bounded concurrent load that records every write it attempted and every write acknowledged.

Workers share one op budget (`max_ops`), a deadline (`duration`) and a rate cap (`rate` ops/s),
and stop by themselves (or at `stop()`). Each op goes through the balancer or, with probability
`direct`, straight to a random node. The mix (weights in `LoadConfig.mix`):

- `set`    GET /set?k=K&v=V (the task API)           X-Timestamp recorded
- `put`    PUT /keys/K {"value": V}
- `ttl`    PUT /keys/K {"value": V, "ttl": 1..3 s}    expires during the run, must stay expired
- `delete` DELETE /keys/K (a 404 is a no-op, not a write)
- `batch`  PUT /keys {K1: V1, K2: V2, K3: V3}         one timestamp, all or nothing
- `txn`    line protocol START / PUT K1 / PUT K2 / PUT M / COMMIT, pipelined on a fresh connection;
           M is a marker key written by this transaction only, so the transaction's version can
           be read back from it afterwards (COMMIT's reply carries no timestamp)
- `read`   GET /keys/K (load only; reads are not judged)
- one `clear` (DELETE /keys through the balancer) at `clear_at` seconds, if set.

Every value is unique (`<prefix><worker>.<seq>`), so the verdict maps a stored value back to the
one write that produced it. An op that got no clear answer (timeout, connection error, 5xx) is
recorded as attempted, not acknowledged: it may or may not have been applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

ACKED = "ok"


@dataclass(slots=True)
class Write:
    """One attempted write and what came of it."""

    id: int
    kind: str  # set | put | ttl | delete | batch | txn | clear
    keys: tuple[str, ...]
    values: tuple[str | None, ...]  # None: a delete (a clear has no keys)
    via: str  # "lb" or a node name
    start: float  # time.monotonic() when sent
    end: float = 0.0  # when the answer (or the failure) came
    outcome: str = "pending"  # ok | noop (404 delete) | refused (4xx) | failed | timeout
    ts: int | None = None  # X-Timestamp of an acknowledged HTTP write
    replicas: str | None = None  # X-Replicas
    ttl: float | None = None
    error: str = ""
    node: str | None = None  # the node that answered (the balancer's X-Upstream, mapped)

    @property
    def acked(self) -> bool:
        return self.outcome == ACKED

    @property
    def maybe_applied(self) -> bool:
        """Acknowledged, or no clear answer: it may be in the store."""
        return self.outcome in (ACKED, "failed", "timeout", "pending")


@dataclass
class LoadConfig:
    prefix: str = "f"
    keys: int = 50
    concurrency: int = 8
    rate: float = 120.0  # ops per second over all workers
    max_ops: int = 20_000
    duration: float = 60.0  # seconds; stop() usually comes first
    direct: float = 0.4  # share of ops sent straight to a node instead of the balancer
    timeout: float = 4.0  # seconds per request
    clear_at: float | None = None  # seconds after start for the one clear, if any
    mix: dict[str, float] = field(
        default_factory=lambda: {
            "set": 3,
            "put": 2,
            "ttl": 1,
            "delete": 1.5,
            "batch": 1,
            "txn": 1,
            "read": 2,
        }
    )


@dataclass
class Target:
    """Where an op can go: an HTTP base URL and a line-protocol (host, port)."""

    name: str
    url: str
    tcp: tuple[str, int]


@dataclass
class LoadStats:
    reads_ok: int = 0
    reads_failed: int = 0
    ops: int = 0


class Load:
    """Runs the workers; `writes` holds every write attempted, in the order they were sent."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        cfg: LoadConfig,
        balancer: Target | None,
        nodes: list[Target],
        seed: int = 1,
    ) -> None:
        self.session = session
        self.cfg = cfg
        self.balancer = balancer
        self.nodes = nodes
        self.rng = random.Random(seed)
        self.writes: list[Write] = []
        self.stats = LoadStats()
        self._stop = asyncio.Event()
        self._ids = 0
        self.started = 0.0
        self.stopped = 0.0
        self._by_address = {t.url.removeprefix("http://"): t.name for t in nodes}
        self._kinds = list(cfg.mix)
        self._weights = [cfg.mix[k] for k in self._kinds]

    def stop(self) -> None:
        self._stop.set()

    @property
    def acked(self) -> list[Write]:
        return [w for w in self.writes if w.acked]

    async def run(self) -> None:
        """Run until stopped, out of ops or out of time; in-flight ops finish (bounded)."""
        self.started = time.monotonic()
        deadline = self.started + self.cfg.duration
        tasks = [
            asyncio.create_task(self._worker(i, deadline)) for i in range(self.cfg.concurrency)
        ]
        if self.cfg.clear_at is not None:
            tasks.append(asyncio.create_task(self._clear_later(self.cfg.clear_at)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            self.stopped = time.monotonic()

    def record(
        self, kind: str, keys: tuple[str, ...], values: tuple[str | None, ...], via: str
    ) -> Write:
        """A new attempted write (sent by the caller with `send`), recorded before it goes."""
        self._ids += 1
        w = Write(self._ids, kind, keys, values, via, time.monotonic())
        self.writes.append(w)
        return w

    def _target(self) -> Target:
        if self.balancer is None or (self.nodes and self.rng.random() < self.cfg.direct):
            return self.rng.choice(self.nodes)
        return self.balancer

    def _key(self) -> str:
        return f"{self.cfg.prefix}k{self.rng.randrange(self.cfg.keys):03d}"

    async def _worker(self, worker: int, deadline: float) -> None:
        cfg = self.cfg
        pace = cfg.concurrency / cfg.rate
        seq = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.stats.ops >= cfg.max_ops:
                return
            self.stats.ops += 1
            seq += 1
            began = time.monotonic()
            kind = self.rng.choices(self._kinds, self._weights)[0]
            value = f"{cfg.prefix}{worker}.{seq}"
            try:
                await self._op(kind, value, self._target())
            except asyncio.CancelledError:
                raise
            left = pace - (time.monotonic() - began)
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._stop.wait()

    async def _op(self, kind: str, value: str, target: Target) -> None:
        key = self._key()
        if kind == "read":
            await self._read(target, key)
        elif kind == "set":
            w = self.record("set", (key,), (value,), target.name)
            url = f"{target.url}/set?k={quote(key)}&v={quote(value)}"
            await self.send(w, "GET", url)
        elif kind in ("put", "ttl"):
            w = self.record(kind, (key,), (value,), target.name)
            body: dict[str, Any] = {"value": value}
            if kind == "ttl":
                w.ttl = round(self.rng.uniform(1.0, 3.0), 2)
                body["ttl"] = w.ttl
            await self.send(w, "PUT", f"{target.url}/keys/{quote(key)}", body)
        elif kind == "delete":
            w = self.record("delete", (key,), (None,), target.name)
            await self.send(w, "DELETE", f"{target.url}/keys/{quote(key)}")
        elif kind == "batch":
            keys = self._distinct(3)
            values = tuple(f"{value}b{i}" for i in range(len(keys)))
            w = self.record("batch", keys, values, target.name)
            await self.send(w, "PUT", f"{target.url}/keys", dict(zip(keys, values, strict=True)))
        elif kind == "txn":
            keys = (*self._distinct(2), f"{self.cfg.prefix}m{value}")
            values = tuple(f"{value}t{i}" for i in range(len(keys)))
            w = self.record("txn", keys, values, target.name)
            await self._txn(w, target)

    def _distinct(self, n: int) -> tuple[str, ...]:
        picked = self.rng.sample(range(self.cfg.keys), min(n, self.cfg.keys))
        return tuple(f"{self.cfg.prefix}k{i:03d}" for i in sorted(picked))

    async def _read(self, target: Target, key: str) -> None:
        try:
            async with asyncio.timeout(self.cfg.timeout):
                async with self.session.get(f"{target.url}/keys/{quote(key)}") as resp:
                    await resp.read()
                    ok = resp.status in (200, 404)
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        if ok:
            self.stats.reads_ok += 1
        else:
            self.stats.reads_failed += 1

    async def send(self, w: Write, method: str, url: str, body: Any = None) -> None:
        """Send one HTTP write and record its outcome, timestamp and replica count in `w`."""
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with asyncio.timeout(self.cfg.timeout):
                async with self.session.request(method, url, data=data, headers=headers) as resp:
                    raw = await resp.read()
                    status = resp.status
                    ts = resp.headers.get("X-Timestamp")
                    w.replicas = resp.headers.get("X-Replicas")
                    w.node = self._answered_by(w.via, resp.headers.get("X-Upstream"))
        except TimeoutError:
            w.outcome, w.end, w.error = "timeout", time.monotonic(), "timeout"
            return
        except (aiohttp.ClientError, OSError) as exc:
            w.outcome, w.end, w.error = "failed", time.monotonic(), repr(exc)[:200]
            return
        w.end = time.monotonic()
        if status == 200:
            w.outcome = ACKED
            w.ts = int(ts) if ts is not None and ts.isdigit() else None
        elif status == 404 and method == "DELETE":
            w.outcome = "noop"  # nothing to delete: nothing written
        elif 400 <= status < 500:
            w.outcome, w.error = "refused", f"{status} {raw[:120]!r}"
        else:
            w.outcome, w.error = "failed", f"{status} {raw[:120]!r}"

    def _answered_by(self, via: str, upstream: str | None) -> str | None:
        """The node behind an answer: the target itself, or the last upstream nginx tried."""
        if via != "lb":
            return via
        if not upstream:
            return None
        address = upstream.split(",")[-1].strip()
        return self._by_address.get(address)

    async def _txn(self, w: Write, target: Target) -> None:
        lines = ["START"]
        lines += [f"PUT {k} {v}" for k, v in zip(w.keys, w.values, strict=True)]
        lines.append("COMMIT")
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.cfg.timeout):
                reader, writer = await asyncio.open_connection(*target.tcp)
                writer.write(("\n".join(lines) + "\n").encode())
                await writer.drain()
                replies = [await reader.readline() for _ in lines]
        except TimeoutError:
            w.outcome, w.end, w.error = "timeout", time.monotonic(), "timeout"
            return
        except OSError as exc:
            w.outcome, w.end, w.error = "failed", time.monotonic(), repr(exc)[:200]
            return
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        w.end = time.monotonic()
        try:
            parsed = [orjson.loads(r) for r in replies]
        except orjson.JSONDecodeError:
            w.outcome, w.error = "failed", f"unparsable reply {replies!r}"[:200]
            return
        if all(isinstance(p, dict) and p.get("status") == "Ok" for p in parsed):
            w.outcome = ACKED
            w.ts = _commit_ts(parsed[-1])
        elif any(not r for r in replies):
            w.outcome, w.error = "failed", "connection closed before COMMIT was answered"
        else:
            w.outcome, w.error = "refused", str(parsed)[:200]

    async def _clear_later(self, after: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(after):
                await self._stop.wait()
                return
        target = self.balancer or self.nodes[0]
        w = self.record("clear", (), (), target.name)
        await self.send(w, "DELETE", f"{target.url}/keys")


def _commit_ts(reply: dict[str, Any]) -> int | None:
    """The transaction's HLC timestamp, should COMMIT's reply ever carry one."""
    for name in ("ts", "timestamp"):
        value = reply.get(name)
        if isinstance(value, int):
            return value
    return None
