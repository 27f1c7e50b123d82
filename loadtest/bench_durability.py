"""Durability figures for `make bench` (`--only durability`): a node with `--data-dir` against the
same node in memory and against redis-server with an append-only file, in the same run.

- Write rate: SET over HTTP (wrk -t1 -c32 on `/set?k=&v=`, as in the http section) and over RESP
  (redis-benchmark -t set -c 32 -P 1, the same C client against the node's RESP port and against
  redis-server), for the node in memory, with `--fsync everysec` and with `--fsync always`, and
  redis-server with `appendonly yes`, `appendfsync always`. Rounds interleaved, medians.
- Restart: N keys (16-character keys, 100-character values; `--keys`, or KEYS=) loaded with
  pipelined MSETs of 1,000 keys into a node with `--data-dir` and into redis-server (`appendonly
  yes`, `appendfsync everysec`, then BGREWRITEAOF); both stopped by SIGTERM (a clean stop) and
  started again on the same directory: seconds from process start to `/health` 200 (the node)
  and to PING answered with +PONG, not -LOADING (redis-server). Median of the rounds.
- Bytes on disk per key: the node's kvmesh.db, -wal and -shm (while it runs and after the stop)
  against the files of Redis's appendonlydir after the rewrite and the stop.
- Where the node's restart goes: `cluster.storage.disk.load` timed in this process on the same
  directory, SQLite's read apart from `Store.restore`; the rest of the restart is the process
  (interpreter, imports, sockets) before and after the load.
"""

from __future__ import annotations

import gc
import json
import re
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from cluster.core.store import Mutation, Store
from cluster.storage import disk
from loadtest import procs
from loadtest.bench import WrkResult, fill_redis, median, redis_benchmark, wrk

FILL_BATCH = 1000  # keys per MSET while loading
NODE_FSYNC = ("everysec", "always")
SET_URL = "/set?k=benchkey&v=hello-bench-value"
RESTORED = re.compile(r"restored \d+ entries from \S+ in ([\d.]+)s")  # cluster.storage.disk


def _node(
    directory: Path,
    name: str,
    data: Path | None = None,
    fsync: str = "everysec",
    log_level: str = "WARNING",
) -> procs.NodeProc:
    """A node of its own (a mesh of one), its log in `directory`; on disk when `data` is given."""
    args = ["--log-level", log_level, "--tcp-port", "0"]
    if data is not None:
        args += ["--data-dir", str(data), "--fsync", fsync]
    node = procs.start_node(*args, name=name, log_dir=directory, wait=False)
    procs.wait_http(node.url + "/health", timeout=300, proc=node.proc)
    return node


def _redis_aof(directory: Path, fsync: str) -> tuple[str, ...]:
    """redis-server's options for an AOF in `directory`, rewritten only when asked (BGREWRITEAOF),
    never by itself in the middle of a measurement."""
    return (
        "--appendonly", "yes", "--appendfsync", fsync, "--dir", str(directory),
        "--auto-aof-rewrite-percentage", "0",
    )  # fmt: skip


def bench_write_rate(duration: float, rounds: int, requests: int, tmp: Path) -> list[str]:
    nodes = {"in memory": _node(tmp, "memory")}
    for fsync in NODE_FSYNC:
        nodes[f"--fsync {fsync}"] = _node(tmp, fsync, tmp / f"rate-{fsync}", fsync)
    redis_port = procs.free_port()
    (tmp / "rate-redis").mkdir()
    redis_proc = procs.start_redis(redis_port, *_redis_aof(tmp / "rate-redis", "always"))
    http: dict[str, list[WrkResult]] = {name: [] for name in nodes}
    resp: dict[str, list[float]] = {}
    ports = {name: node.resp_port for name, node in nodes.items()} | {"redis": redis_port}
    try:
        for _ in range(rounds):  # interleaved, so that every target sees the same noise
            for name, node in nodes.items():
                http[name].append(wrk(node.url + SET_URL, duration))
            for name, port in ports.items():
                ops = redis_benchmark(port, "set", 1, requests)
                if ops is not None:
                    resp.setdefault(name, []).append(ops)
    finally:
        procs.stop([node.proc for node in nodes.values()] + [redis_proc])
    h = {name: median(rs).rps for name, rs in http.items()}
    r = {name: statistics.median(rs) for name, rs in resp.items()}

    def rate(figures: dict[str, float], name: str) -> str:
        return f"{figures[name]:,.0f}" if name in figures else "n/a"

    def share(figures: dict[str, float], name: str, anchor: str) -> str:
        return f"{figures[name] / figures[anchor]:.0%}" if name in figures else "n/a"

    targets = {"--fsync everysec": "HTTP >= 80%", "--fsync always": ">= 50%"}
    lines = [
        "| SET, one node | HTTP requests/s (wrk) | vs in memory | RESP ops/s (redis-benchmark) "
        "| vs in memory | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in nodes:
        lines.append(
            f"| {name} | {rate(h, name)} | {share(h, name, 'in memory')} | {rate(r, name)} "
            f"| {share(r, name, 'in memory')} | {targets.get(name, '(anchor)')} |"
        )
    lines += [
        f"| redis-server, appendonly yes, appendfsync always | - | - | {rate(r, 'redis')} | - "
        "| (anchor) |",
        "",
        "| --fsync always against redis-server appendfsync always, RESP SET, same client "
        "| node / redis |",
        "| --- | ---: |",
        f"| redis-benchmark -t set -c 32 -P 1 -n {requests:,} "
        f"| {share(r, '--fsync always', 'redis')} |",
        "",
        "wrk -t1 -c32 on one key; redis-benchmark -c 32 -P 1 -r 1000 -d 32; medians of "
        f"{rounds} interleaved rounds.",
    ]
    return lines


class _TimedStore(Store):
    """A Store whose restore reads the whole copy first: SQLite's time apart from the store's."""

    read_s = 0.0
    restore_s = 0.0

    def restore(self, entries: Iterable[Mutation], *args: Any, **kwargs: Any) -> int:
        started = time.perf_counter()
        collecting = gc.isenabled()
        gc.disable()  # as during Store.restore, which consumes the rows as they are read
        try:
            rows = list(entries)
        finally:
            if collecting:
                gc.enable()
        read = time.perf_counter()
        count = super().restore(rows, *args, **kwargs)
        self.read_s, self.restore_s = read - started, time.perf_counter() - read
        return count


def _load_split(data: Path) -> tuple[float, float, float]:
    """(seconds in disk.load, of which reading the rows from SQLite, of which Store.restore)."""
    store = _TimedStore()
    started = time.perf_counter()
    conn = disk.load(data, "everysec", store)
    total = time.perf_counter() - started
    conn.close()
    return total, store.read_s, store.restore_s


def _health_keys(node: procs.NodeProc) -> int:
    with urllib.request.urlopen(node.url + "/health", timeout=10) as r:
        return int(json.loads(r.read())["keys"])


def _restart_node(tmp: Path, data: Path, keys: int) -> tuple[float, float]:
    """(seconds from process start to /health 200, seconds the node logs for its restore)."""
    started = time.monotonic()
    node = _node(tmp, "durable", data, log_level="INFO")  # INFO: the "restored ..." line
    took = time.monotonic() - started
    try:
        if (got := _health_keys(node)) != keys:
            raise RuntimeError(f"the restarted node holds {got:,} keys, not {keys:,}")
    finally:
        procs.stop(node.proc)
    logged = RESTORED.findall(node.log.read_text())
    if not logged:
        raise RuntimeError(f"no restore line in {node.log}")
    return took, float(logged[-1])


def _restart_redis(port: int, args: tuple[str, ...], keys: int) -> float:
    started = time.monotonic()
    proc = procs.start_redis(port, *args, timeout=300)  # ready: PING answers +PONG
    took = time.monotonic() - started
    try:
        if (got := redis.Redis(port=port).dbsize()) != keys:
            raise RuntimeError(f"the restarted redis-server holds {got:,} keys, not {keys:,}")
    finally:
        procs.stop(proc)
    return took


def _rewrite_aof(port: int) -> None:
    client = redis.Redis(port=port, decode_responses=True)
    client.bgrewriteaof()
    deadline = time.monotonic() + 300
    while True:
        info = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("BGREWRITEAOF did not finish in 300 s")
        time.sleep(0.05)
    if info["aof_last_bgrewrite_status"] != "ok":
        raise RuntimeError(f"BGREWRITEAOF failed: {info['aof_last_bgrewrite_status']}")


def _tree_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def _redis_copy(
    directory: Path, keys: int, rounds: int, *extra: str
) -> tuple[float, int, list[float]]:
    """redis-server with an AOF in `directory` (`extra`: more options), loaded, rewritten and
    stopped, then restarted `rounds` times: (load seconds, AOF bytes, restart seconds)."""
    directory.mkdir()
    args = (*_redis_aof(directory, "everysec"), *extra)
    port = procs.free_port()
    proc = procs.start_redis(port, *args)
    try:
        started = time.monotonic()
        fill_redis(port, keys, FILL_BATCH, noise=True)
        fill = time.monotonic() - started
        _rewrite_aof(port)
    finally:
        procs.stop(proc)  # SIGTERM: fsyncs the AOF and exits, as SHUTDOWN does
    aof = _tree_bytes(directory / "appendonlydir")
    return fill, aof, [_restart_redis(port, args, keys) for _ in range(rounds)]


def bench_restart(keys: int, rounds: int, tmp: Path) -> list[str]:
    data = tmp / "node"
    node = _node(tmp, "durable", data)
    try:
        started = time.monotonic()
        fill_redis(node.resp_port, keys, FILL_BATCH, noise=True)
        node_fill = time.monotonic() - started
        node_live = disk.file_bytes(data)
    finally:
        procs.stop(node.proc)  # SIGTERM: a clean stop
    node_bytes = disk.file_bytes(data)
    restarts = [_restart_node(tmp, data, keys) for _ in range(rounds)]
    node_t = statistics.median(took for took, _ in restarts)
    restored = statistics.median(logged for _, logged in restarts)
    total, read, restore = _load_split(data)
    redis_fill, aof, redis_s = _redis_copy(tmp / "redis", keys, rounds)
    plain_fill, plain, plain_s = _redis_copy(
        tmp / "redis-plain", keys, rounds, "--aof-use-rdb-preamble", "no"
    )
    redis_t, plain_t = statistics.median(redis_s), statistics.median(plain_s)
    mb = 1024 * 1024
    return [
        f"| {keys:,} keys (16-char keys, 100-char random values) | node, --data-dir "
        "| redis-server AOF (default: RDB preamble) | node / redis | target "
        "| redis-server AOF, plain commands | node / plain |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| restart: process start to serving, s (median of {rounds}) | {node_t:.2f} "
        f"| {redis_t:.2f} | {node_t / redis_t:.1f}x | <= 2x and < 5 s | {plain_t:.2f} "
        f"| {node_t / plain_t:.1f}x |",
        f"| bytes on disk per key, after a clean stop | {node_bytes / keys:,.0f} "
        f"| {aof / keys:,.0f} | {node_bytes / aof:.1f}x | <= 2x | {plain / keys:,.0f} "
        f"| {node_bytes / plain:.1f}x |",
        f"| bytes on disk, after a clean stop | {node_bytes / mb:,.1f} MiB | {aof / mb:,.1f} MiB "
        f"| | | {plain / mb:,.1f} MiB | |",
        f"| bytes on disk per key, running (before the stop) | {node_live / keys:,.0f} | | | | | |",
        f"| load, s (pipelined MSETs of {FILL_BATCH:,} keys) | {node_fill:.1f} "
        f"| {redis_fill:.1f} | | | {plain_fill:.1f} | |",
        "",
        "| node restart, where the time goes | s |",
        "| --- | ---: |",
        f"| process start to /health 200 (median) | {node_t:.2f} |",
        f"| restore as the node logs it (rows read from SQLite into the store; median) "
        f"| {restored:.2f} |",
        f"| the rest: interpreter, imports, opening the database, sockets, readiness poll "
        f"(50 ms) | {node_t - restored:.2f} |",
        f"| disk.load again in one process (the benchmark's) on the same directory | {total:.2f} |",
        f"| of which reading the rows from SQLite (into Mutations, all first) | {read:.2f} |",
        f"| of which Store.restore (from that list) | {restore:.2f} |",
        "",
        "Node: `--fsync everysec`, stopped by SIGTERM; its files: kvmesh.db, -wal, -shm. "
        "redis-server: `appendonly yes`, `appendfsync everysec`, BGREWRITEAOF after the load, "
        "stopped by SIGTERM; ready when PING answers +PONG rather than -LOADING. Redis 7's "
        "default AOF is a base file in RDB form (strings LZF-compressed) plus an incr file; "
        "`aof-use-rdb-preamble no` writes the base as plain commands.",
    ]


def _status(node: procs.NodeProc) -> dict[str, Any]:
    with urllib.request.urlopen(node.url + "/cluster/status", timeout=10) as r:
        reply: dict[str, Any] = json.loads(r.read())
    return reply


def _both_hold(a: procs.NodeProc, b: procs.NodeProc, keys: int) -> bool:
    return _health_keys(a) == keys and _health_keys(b) == keys


def bench_catch_up(keys: int, missed: int, tmp: Path) -> list[str]:
    """Two nodes on disk holding `keys` keys; one killed (-9), `missed` writes made on the other,
    the killed one restarted: how many entries it received to catch up, and how long it took."""
    tmp.mkdir(parents=True, exist_ok=True)
    fast = ("--antientropy-interval", "1", "--tombstone-interval", "1")
    a = procs.start_node(
        "--log-level", "WARNING", "--tcp-port", "0", "--data-dir", str(tmp / "a"), *fast,
        name="a", log_dir=tmp,
    )  # fmt: skip
    b_args = (
        "--log-level", "INFO", "--tcp-port", "0", "--data-dir", str(tmp / "b"), *fast,
        "--join", f"127.0.0.1:{a.port}",
    )  # fmt: skip
    b = procs.start_node(*b_args, name="b", log_dir=tmp)
    try:
        fill_redis(a.resp_port, keys, FILL_BATCH, noise=True)
        deadline = time.monotonic() + 300
        while not _both_hold(a, b, keys):
            if time.monotonic() > deadline:
                raise TimeoutError("b never held every key")
            time.sleep(0.2)
        time.sleep(3)  # a few anti-entropy rounds: b learns how far it holds a's writes
        b.proc.kill()  # kill -9: no leave, no clean close
        b.proc.wait(10)
        fill_redis(a.resp_port, missed, FILL_BATCH, noise=True, first=keys)
        started = time.monotonic()
        b = procs.start_node(*b_args, port=b.port, tcp_port=b.tcp_port, resp_port=b.resp_port,
                             name="b", log_dir=tmp, wait=False)  # fmt: skip
        procs.wait_http(b.url + "/health", timeout=300, proc=b.proc)
        took = time.monotonic() - started
        held = _health_keys(b)
        sync = _status(b)["nodes"][0]["last_sync"]
    finally:
        procs.stop(a.proc)
        procs.stop(b.proc)
    return [
        f"| a node on disk holding {keys:,} keys, killed (-9); {missed:,} writes made on its peer "
        "meanwhile; restarted | |",
        "| --- | ---: |",
        f"| entries it received to catch up (`last_sync` in /cluster/status) "
        f"| {sync['received']:,} |",
        f"| streamed the whole data set instead | {'yes' if sync['full'] else 'no'} |",
        f"| keys it holds once serving | {held:,} |",
        f"| seconds from process start to /health 200 (restore, join, catch-up) | {took:.2f} |",
    ]


def bench_durability(duration: float, rounds: int, requests: int, keys: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="kvdurable-") as name:
        tmp = Path(name)
        return [
            *bench_write_rate(duration, rounds, requests, tmp),
            "",
            *bench_restart(keys, rounds, tmp),
            "",
            *bench_catch_up(keys, 1000, tmp / "catch-up"),
        ]
