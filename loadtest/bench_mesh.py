"""The mesh section of `make bench`: what replication and membership cost, against one node.

- Write throughput through one node of a 3-node `sync` mesh against a single node (wrk, SET).
- Replication lag: in an `async` mesh, the time from a write's acknowledgement on one node to its
  visibility on another, idle and under a write load.
- Failure detection: `kill -9` one node of three (default membership parameters) and time until
  every other node sees it as not alive.
- Join: the time a new node takes to stream N keys (1,000,000 by default) and serve.
- Soak: false "dead" verdicts about live nodes during a sustained write load.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import redis

from cluster.core.clock import FakeClock
from cluster.core.hlc import HybridClock
from cluster.core.store import Store
from cluster.replication.antientropy import SNAPSHOT_PATH, checked_entries, merge_entries
from loadtest import procs
from loadtest.bench import fill_redis, median, wrk


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _states(node: procs.NodeProc) -> dict[str, str]:
    _, raw = _get(node.url + "/cluster/members")
    return {m["name"]: m["state"] for m in json.loads(raw)["members"]}


@contextmanager
def mesh(n: int, *args: str) -> Iterator[list[procs.NodeProc]]:
    nodes: list[procs.NodeProc] = []
    try:
        first = procs.start_node("--log-level", "WARNING", "--tcp-port", "0", *args)
        nodes.append(first)
        for _ in range(n - 1):
            nodes.append(
                procs.start_node(
                    "--log-level",
                    "WARNING",
                    "--tcp-port",
                    "0",
                    "--join",
                    f"127.0.0.1:{first.port}",
                    *args,
                )
            )
        names = {x.name for x in nodes}
        deadline = time.monotonic() + 30
        while any({k for k, v in _states(x).items() if v == "alive"} != names for x in nodes):
            if time.monotonic() > deadline:
                raise TimeoutError("the mesh did not form")
            time.sleep(0.05)
        yield nodes
    finally:
        for x in nodes:
            procs.stop(x.proc)


def bench_writes(duration: float, rounds: int) -> list[str]:
    single = procs.start_node("--log-level", "WARNING", "--tcp-port", "0")
    try:
        with mesh(3) as nodes:
            a = nodes[0]
            urls = {
                "single node SET": f"{single.url}/set?k=benchkey&v=hello-bench-value",
                "3-node sync mesh SET, through one node": (
                    f"{a.url}/set?k=benchkey&v=hello-bench-value"
                ),
            }
            results: dict[str, list] = {k: [] for k in urls}
            for _ in range(rounds):
                for name, url in urls.items():
                    results[name].append(wrk(url, duration))
            med = {k: median(v) for k, v in results.items()}
            _, raw = _get(a.url + "/metrics")
    finally:
        procs.stop(single.proc)
    sent = [ln for ln in raw.decode().splitlines() if ln.startswith("replication_sent_requests")]
    base = med["single node SET"].rps
    lines = [
        "| writes | requests/s | p50 ms | p99 ms | vs single node |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in med.items():
        lines.append(
            f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.rps / base:.1%} |"
        )
    if sent:
        lines.append(f"\n(replication requests sent by the coordinator: {sent[0].split()[-1]})")
    return lines


def _lag_samples(a: procs.NodeProc, b: procs.NodeProc, n: int, tag: str) -> list[float]:
    out = []
    for i in range(n):
        key = f"lag-{tag}-{i}"
        _get(f"{a.url}/set?k={key}&v={i}")
        acked = time.perf_counter()
        while _get(f"{b.url}/is?k={key}")[0] != 200:
            if time.perf_counter() - acked > 10:
                raise TimeoutError("replication lag over 10 s")
        out.append((time.perf_counter() - acked) * 1000)
    return out


def bench_lag(samples: int = 300) -> list[str]:
    with mesh(3, "--write-mode", "async") as nodes:
        a, b = nodes[0], nodes[1]
        idle = _lag_samples(a, b, samples, "idle")
        load = subprocess.Popen(
            ["wrk", "-t1", "-c16", "-d30s", f"{a.url}/set?k=load&v=x"],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            busy = _lag_samples(a, b, samples, "busy")
        finally:
            load.terminate()
            load.wait()

    def pct(xs: list[float], p: float) -> float:
        return statistics.quantiles(xs, n=100)[int(p) - 1]

    return [
        "| replication lag (async mesh of 3, ack on A to visible on B) | p50 ms | p99 ms |",
        "| --- | ---: | ---: |",
        f"| idle | {pct(idle, 50):.2f} | {pct(idle, 99):.2f} |",
        f"| under a SET load (wrk -c16 on A) | {pct(busy, 50):.2f} | {pct(busy, 99):.2f} |",
    ]


def bench_detection(trials: int = 3) -> list[str]:
    times = []
    for _ in range(trials):
        with mesh(3) as nodes:
            a, b, c = nodes
            os.kill(c.proc.pid, signal.SIGKILL)
            c.proc.wait()
            killed = time.monotonic()
            while _states(a)[c.name] == "alive" or _states(b)[c.name] == "alive":
                time.sleep(0.02)
            times.append(time.monotonic() - killed)
    return [
        "| failure detection (kill -9 one of 3, default parameters) | median s | max s |",
        "| --- | ---: | ---: |",
        f"| seen as not alive by every other node | {statistics.median(times):.2f} "
        f"| {max(times):.2f} |",
    ]


def _redis_full_sync(keys: int) -> float:
    """Seconds from REPLICAOF to `master_link_status:up` for a replica of a redis-server holding
    `keys` keys (the same data, loaded the same way): Redis's own full sync, the anchor."""
    master_port, replica_port = procs.free_port(), procs.free_port()
    # No waiting for more replicas before a diskless sync starts (Redis waits 5 s by default):
    # the anchor is the transfer and load themselves.
    master = procs.start_redis(master_port, "--repl-diskless-sync-delay", "0")
    replica = procs.start_redis(replica_port)
    try:
        fill_redis(master_port, keys, 1000)
        client = redis.Redis(port=replica_port)
        started = time.monotonic()
        client.execute_command("REPLICAOF", "127.0.0.1", str(master_port))
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() - started > 300:
                raise TimeoutError("the redis replica never synced")
            time.sleep(0.01)
        took = time.monotonic() - started
        if client.dbsize() != keys:
            raise RuntimeError(f"the redis replica holds {client.dbsize()} keys, not {keys}")
        client.close()
        return took
    finally:
        procs.stop(replica)
        procs.stop(master)


SYNCED = re.compile(r"synced (\d+) entries in ([\d.]+)s")  # cluster.lifecycle's line


def _merge_cost(url: str, keys: int) -> tuple[float, float, float]:
    """Where a joiner's time goes, measured in this process on the same peer's snapshot pages:
    (seconds fetching the pages, decoding them, merging them into an empty store)."""
    clock = FakeClock(time.time())
    store, hlc = Store(), HybridClock(clock.wall)
    fetch = decode = merge = 0.0
    cursor: str | None = None
    while True:
        path = f"{SNAPSHOT_PATH}?limit=10000" + (f"&after={cursor}" if cursor else "")
        t0 = time.perf_counter()
        _, raw = _get(url + path)
        t1 = time.perf_counter()
        page = orjson.loads(raw)
        entries = checked_entries(page["entries"])
        t2 = time.perf_counter()
        merge_entries(store, hlc, entries)
        t3 = time.perf_counter()
        fetch, decode, merge = fetch + t1 - t0, decode + t2 - t1, merge + t3 - t2
        cursor = page.get("next")
        if cursor is None:
            break
    t4 = time.perf_counter()
    store.scan(None, 1, clock.wall())  # the sorted index, built on the first read
    index = time.perf_counter() - t4
    if len(store) != keys:
        raise RuntimeError(f"merged {len(store)} keys, not {keys}")
    return fetch, decode, merge + index


def bench_join(keys: int) -> list[str]:
    a = procs.start_node("--log-level", "WARNING", "--tcp-port", "0")
    try:
        fill_redis(a.resp_port, keys, 1000)
        start = time.monotonic()
        b = procs.start_node(
            "--log-level",
            "INFO",
            "--tcp-port",
            "0",
            "--join",
            f"127.0.0.1:{a.port}",
            wait=False,
        )
        try:
            procs.wait_http(b.url + "/health", timeout=300, proc=b.proc)
            took = time.monotonic() - start
            _, raw = _get(b.url + "/health")
            got = json.loads(raw)["keys"]
        finally:
            procs.stop(b.proc)
        synced = SYNCED.findall(b.log.read_text())
        sync_s = float(synced[-1][1]) if synced else float("nan")
        fetch, decode, merge = _merge_cost(a.url, keys)
    finally:
        procs.stop(a.proc)
    redis_s = _redis_full_sync(keys)
    return [
        "| join | keys streamed | seconds to serve | anchor: redis-server replica full sync, s "
        "| node / redis | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| a new node joins a node holding {keys:,} keys (process start to /health 200) "
        f"| {got:,} | {took:.1f} | {redis_s:.2f} (REPLICAOF to master_link_status:up, "
        "repl-diskless-sync-delay 0) "
        f"| {took / redis_s:.1f}x | < 10 s |",
        "",
        "| where a join's time goes | s |",
        "| --- | ---: |",
        f"| the joiner's snapshot stream, as it logs it (pages fetched while the last merges) "
        f"| {sync_s:.2f} |",
        f"| the rest: interpreter, imports, gossip join, readiness poll | {took - sync_s:.2f} |",
        "| the same pages in one process, one after another: |  |",
        f"| - fetching them (the peer reads and encodes, loopback HTTP) | {fetch:.2f} |",
        f"| - decoding them (JSON, entry checks) | {decode:.2f} |",
        f"| - merging them into an empty store, and the sorted index | {merge:.2f} |",
    ]


def bench_soak(seconds: float) -> list[str]:
    false_dead = 0
    with mesh(3) as nodes:
        loads = [
            subprocess.Popen(
                ["wrk", "-t1", "-c32", f"-d{int(seconds)}s", f"{n.url}/set?k=soak&v=x"],
                stdout=subprocess.DEVNULL,
            )
            for n in nodes
        ]
        end = time.monotonic() + seconds
        suspected = 0
        while time.monotonic() < end:
            for n in nodes:
                st = _states(n)
                false_dead += sum(1 for v in st.values() if v == "dead")
                suspected += sum(1 for v in st.values() if v == "suspect")
            time.sleep(0.5)
        for p in loads:
            p.wait()
    return [
        "| soak (3-node mesh, wrk -c32 SET on every node) | seconds "
        "| samples of a live node seen dead | seen suspect |",
        "| --- | ---: | ---: | ---: |",
        f"| default parameters | {seconds:.0f} | {false_dead} | {suspected} |",
    ]
