"""`make bench`: throughput and memory of one node, each against an anchor measured in the same run.

    python -m loadtest.bench [--duration S] [--rounds N] [--keys N] [--only http,memory,line]

- HTTP: wrk (1 thread, 32 connections) against a static nginx `return 200` (one worker: the
  ceiling), then GET and SET on the node; rounds are interleaved and the median taken, because
  these machines are shared and noisy. Prints requests/s, p50/p99 and the ratios to the ceiling.
- Memory: the resident-set growth of the node and of a redis-server for the same N keys
  (16-character keys, 100-character values), and the node's growth while streaming `/getAll`.
- Line protocol: one client (`line_load`) drives the node's TCP port with `PUT k v` / `GET k` and a
  redis-server with the inline commands `SET k v` / `GET k`, 32 connections, one command at a time
  and 16 pipelined, rounds interleaved, median taken; prints operations/s and the ratio. The
  client runs in several processes; redis-benchmark (C) runs the same loads as a reference, to
  show how far the Python client holds Redis back.
- Boundary: a normal client's round trip (HTTP SET+GET, line protocol PUT+GET, a new connection
  each) on one node, quiet, beside 1,000 idle HTTP and 1,000 idle line-protocol connections and 5
  slowloris clients, and under a flood of garbage datagrams on the gossip port; p50/p99/max.
  (tests/e2e/test_mesh_boundary.py checks only that such clients are answered.)
- Mesh: the sender's CPU for one node-to-node request against aiohttp's client
  (loadtest/bench_peers.py), a 3-node mesh's write rate against a single node, replication
  lag, failure detection and a 1,000,000-key join against a redis-server replica
  (loadtest/bench_mesh.py).
- Repair: two nodes of 1,000,000 keys diverged by 1 % and 0.01 % during a partition; the bytes
  and seconds to converge after the heal, against the bytes of the differing entries
  (loadtest/bench_repair.py).
- Database: one node over a private PostgreSQL (`--store`), SET and GET with wrk, against pgbench
  running the node's own statements with the same concurrency, and the node in memory mode
  (loadtest/bench_database.py; about 2 min; needs PostgreSQL, which make install-system installs).

Speed is never asserted in a test; this prints figures for the README.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from loadtest import procs

WRK_LINE = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_PCT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int = 0  # answers other than 2xx/3xx


def wrk(url: str, duration: float, connections: int = 32, script: Path | None = None) -> WrkResult:
    """wrk -t1 against `url`; `script`: a Lua script (`-s`) that makes the requests."""
    lua = ["-s", str(script)] if script is not None else []
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", *lua, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = WRK_LINE.search(out)
    if m is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    pct = {
        p: float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u] for p, v, u in WRK_PCT.findall(out)
    }
    failed = WRK_NON_2XX.search(out)
    return WrkResult(
        float(m.group(1)),
        pct.get("50", float("nan")),
        pct.get("99", float("nan")),
        int(failed.group(1)) if failed else 0,
    )


def median(results: list[WrkResult]) -> WrkResult:
    return WrkResult(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.failed for r in results),
    )


def bench_http(duration: float, rounds: int) -> list[str]:
    nginx_port = procs.free_port()
    ng = procs.static_nginx(nginx_port)
    node = procs.start_node("--log-level", "WARNING", "--tcp-port", "0")
    bare_port = procs.free_port()
    bare = subprocess.Popen([sys.executable, "-m", "loadtest.bare_aiohttp", str(bare_port)])
    try:
        procs.wait_http(f"http://127.0.0.1:{bare_port}/", proc=bare)
        urllib.request.urlopen(f"{node.url}/set?k=benchkey&v=hello-bench").read()
        targets = {
            "nginx static (ceiling)": f"http://127.0.0.1:{nginx_port}/",
            "bare aiohttp handler (anchor)": f"http://127.0.0.1:{bare_port}/get?k=benchkey",
            "node GET /get?k=": f"{node.url}/get?k=benchkey",
            "node GET /keys/{key}": f"{node.url}/keys/benchkey",
            "node SET /set?k=&v=": f"{node.url}/set?k=benchkey&v=hello-bench-value",
        }
        results: dict[str, list[WrkResult]] = {t: [] for t in targets}
        for _ in range(rounds):
            for name, url in targets.items():
                results[name].append(wrk(url, duration))
        med = {name: median(rs) for name, rs in results.items()}
    finally:
        procs.stop(node.proc)
        procs.stop(bare)
        procs.stop(ng.proc)
    ceiling = med["nginx static (ceiling)"].rps
    anchor = med["bare aiohttp handler (anchor)"].rps
    lines = [
        "| target | requests/s | p50 ms | p99 ms | vs nginx static | vs bare aiohttp |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in med.items():
        lines.append(
            f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.rps / ceiling:.1%} | {r.rps / anchor:.0%} |"
        )
    return lines


def _pairs(n: int, start: int = 0, noise: bool = False) -> list[tuple[str, str]]:
    """16-character keys, 100-character values: a padded counter, or with `noise` random
    base64 text, which no compression shrinks (what a disk copy's size is measured with)."""
    if noise:
        return [
            (f"key:{i:012d}", base64.b64encode(os.urandom(75)).decode())
            for i in range(start, start + n)
        ]
    return [(f"key:{i:012d}", f"value:{i:012d}".ljust(100, "v")) for i in range(start, start + n)]


def fill_redis(
    port: int, n: int, per_command: int = 1, noise: bool = False, first: int = 0
) -> None:
    """N keys over RESP (redis-server or a node's --resp-port), 10,000 keys a round trip: one
    SET each, or MSETs of `per_command` keys (a node applies an MSET as one write); `noise`:
    incompressible values; `first`: the number of the first key."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        for start in range(first, first + n, 10_000):
            buf = []
            pairs = _pairs(min(10_000, first + n - start), start, noise)
            commands = range(0, len(pairs), per_command)
            for i in commands:
                chunk = pairs[i : i + per_command]
                name = "SET" if per_command == 1 else "MSET"
                buf.append(f"*{1 + 2 * len(chunk)}\r\n${len(name)}\r\n{name}\r\n")
                buf.extend(f"${len(k)}\r\n{k}\r\n${len(v)}\r\n{v}\r\n" for k, v in chunk)
            s.sendall("".join(buf).encode())
            need, got = len(commands) * 5, 0  # "+OK\r\n" each
            while got < need:
                got += len(s.recv(1 << 16))


def fill_node(url: str, n: int, batch: int = 2000) -> None:
    for start in range(0, n, batch):
        body = json.dumps(dict(_pairs(min(batch, n - start), start))).encode()
        req = urllib.request.Request(f"{url}/keys", data=body, method="PUT")
        urllib.request.urlopen(req).read()


class PeakRss:
    """Samples a process's RSS in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = procs.rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, procs.rss_bytes(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_memory(n: int) -> list[str]:
    redis_port = procs.free_port()
    redis = procs.start_redis(redis_port)
    try:
        before = procs.rss_bytes(redis.pid)
        fill_redis(redis_port, n)
        redis_growth = procs.rss_bytes(redis.pid) - before
    finally:
        procs.stop(redis)
    node = procs.start_node("--log-level", "WARNING", "--tcp-port", "0")
    try:
        before = procs.rss_bytes(node.proc.pid)
        fill_node(node.url, n)
        after_fill = procs.rss_bytes(node.proc.pid)
        node_growth = after_fill - before
        with PeakRss(node.proc.pid) as peak, urllib.request.urlopen(f"{node.url}/getAll") as r:
            size = 0
            while chunk := r.read(1 << 16):
                size += len(chunk)
        stream_growth = peak.peak - after_fill
    finally:
        procs.stop(node.proc)
    mb = 1024 * 1024
    return [
        "| data set | redis-server growth | node growth | node / redis "
        f"| `/getAll` ({size / mb:,.0f} MiB) peak growth |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| {n:,} keys (16-char keys, 100-char values) | {redis_growth / mb:,.0f} MiB "
        f"| {node_growth / mb:,.0f} MiB | {node_growth / redis_growth:.2f}x "
        f"| {stream_growth / mb:,.1f} MiB |",
    ]


# --- line protocol vs Redis -----------------------------------------------------------------------

LINE_CONNECTIONS = 32
LINE_DEPTHS = (1, 16)
LINE_VALUE = "value-" + "v" * 26  # 32 characters


@dataclass(frozen=True)
class LineLoad:
    """One command per connection, repeated: the node's form and Redis's inline form."""

    name: str
    node: bytes  # the node's command for connection {i}, as a format string
    redis: bytes
    redis_lines: int  # reply lines per command from Redis
    writes: bool


LINE_LOADS = (
    LineLoad(
        "PUT / SET",
        b"PUT line:%06d " + LINE_VALUE.encode() + b"\n",
        b"SET line:%06d " + LINE_VALUE.encode() + b"\r\n",
        1,
        True,
    ),
    LineLoad("GET", b"GET line:%06d\n", b"GET line:%06d\r\n", 2, False),
)


def _line_worker(
    port: int,
    first: int,
    connections: int,
    command: bytes,
    depth: int,
    reply_lines: int,
    duration: float,
    barrier: Barrier,
    results: multiprocessing.Queue[int],
) -> None:
    """One client process: `connections` sockets, each sending `depth` commands in one write and
    waiting for all their replies before the next write (depth 1: no pipelining)."""
    socks = []
    for i in range(first, first + connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append((s, command.replace(b"%06d", b"%06d" % i) * depth))
    ep = select.epoll()
    state: dict[int, list[Any]] = {}
    for s, batch in socks:
        state[s.fileno()] = [s, batch, 0]
    need = depth * reply_lines
    barrier.wait()
    stop = time.monotonic() + duration
    for s, batch in socks:
        s.send(batch)
        ep.register(s.fileno(), select.EPOLLIN)
    done = 0
    poll = ep.poll
    while time.monotonic() < stop:
        for fd, _ in poll(0.05):
            st = state[fd]
            data = st[0].recv(1 << 18)
            if not data:
                raise RuntimeError("the server closed a benchmark connection")
            st[2] += data.count(b"\n")
            if st[2] >= need:
                st[2] -= need
                done += depth
                st[0].send(st[1])
    ep.close()
    for s, _ in socks:
        s.close()
    results.put(done)


def line_load(
    port: int, command: bytes, reply_lines: int, depth: int, duration: float, processes: int
) -> float:
    """Operations per second of LINE_CONNECTIONS connections spread over `processes` clients."""
    ctx = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[int] = ctx.Queue()
    barrier = ctx.Barrier(processes)
    per = LINE_CONNECTIONS // processes
    workers = [
        ctx.Process(
            target=_line_worker,
            args=(port, i * per, per, command, depth, reply_lines, duration, barrier, results),
            daemon=True,
        )
        for i in range(processes)
    ]
    for w in workers:
        w.start()
    try:
        total = sum(results.get(timeout=duration + 30) for _ in workers)
    finally:
        for w in workers:
            w.join(5)
            if w.is_alive():
                w.kill()  # our own child, by its handle
                w.join()
    return total / duration


REDIS_BENCH_LINE = re.compile(r"^(\w+): ([\d.]+) requests per second", re.M)


def redis_benchmark(port: int, test: str, depth: int, requests: int) -> float | None:
    """redis-benchmark's figure for the same load (C client, same connections), if installed."""
    binary = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
    if not os.path.exists(binary):
        return None
    out = subprocess.run(
        [binary, "-p", str(port), "-c", str(LINE_CONNECTIONS), "-P", str(depth), "-t", test,
         "-n", str(requests), "-r", "1000", "-d", str(len(LINE_VALUE)), "-q"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    m = REDIS_BENCH_LINE.findall(out.replace("\r", "\n"))
    return float(m[-1][1]) if m else None


def bench_line(duration: float, rounds: int, processes: int) -> list[str]:
    """Node (sync write mode, the default; async for writes) against redis-server, same client."""
    sync_node = procs.start_node("--log-level", "WARNING")
    async_node = procs.start_node("--log-level", "WARNING", "--write-mode", "async")
    redis_port = procs.free_port()
    redis = procs.start_redis(redis_port)
    cases = [(load, depth) for load in LINE_LOADS for depth in LINE_DEPTHS]
    rps: dict[tuple[str, str, int], list[float]] = {}

    def run(target: str, port: int, command: bytes, lines: int, load: LineLoad, depth: int) -> None:
        ops = line_load(port, command, lines, depth, duration, processes)
        rps.setdefault((target, load.name, depth), []).append(ops)

    try:
        for _ in range(rounds):
            for load, depth in cases:  # PUT before GET: the GETs find their keys
                run("node", sync_node.tcp_port, load.node, 1, load, depth)
                if load.writes:  # the write mode changes nothing for reads
                    run("async", async_node.tcp_port, load.node, 1, load, depth)
                run("redis", redis_port, load.redis, load.redis_lines, load, depth)
        reference: dict[tuple[str, int], float | None] = {}
        for load, depth in cases:
            requests = int(statistics.median(rps["redis", load.name, depth]) * duration * 2)
            test = "set" if load.writes else "get"
            reference[load.name, depth] = redis_benchmark(redis_port, test, depth, requests)
    finally:
        procs.stop(sync_node.proc)
        procs.stop(async_node.proc)
        procs.stop(redis)

    def fmt(target: str, load: LineLoad, depth: int) -> str:
        runs = rps.get((target, load.name, depth))
        return f"{statistics.median(runs):,.0f}" if runs else "-"

    lines = [
        "| command | pipelined | node ops/s | redis ops/s | node / redis | target "
        "| node, async mode | async / redis | redis-benchmark (C client) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for load, depth in cases:
        n = statistics.median(rps["node", load.name, depth])
        r = statistics.median(rps["redis", load.name, depth])
        a = rps.get(("async", load.name, depth))
        ref = reference[load.name, depth]
        lines.append(
            f"| {load.name} | {depth} | {n:,.0f} | {r:,.0f} | {n / r:.0%} "
            f"| {'>= 50%' if depth == 1 else '>= 30%'} | {fmt('async', load, depth)} "
            f"| {f'{statistics.median(a) / r:.0%}' if a else '-'} "
            f"| {f'{ref:,.0f}' if ref else 'n/a'} |"
        )
    lines.append(
        f"\n{LINE_CONNECTIONS} connections over {processes} client processes; a node is a mesh of "
        "one; medians of the rounds. When redis-benchmark is far above the redis column, the "
        "Python client, not Redis, set that figure."
    )
    return lines


# --- a normal client beside slow, idle and flooding ones ----------------------------------------

BOUNDARY_IDLE = 1000  # idle connections on each of HTTP and the line protocol
BOUNDARY_SLOW = 5  # slowloris clients (a request header one byte a second)
# A garbage datagram flood from another process (so that it does not share our interpreter).
FLOOD = """
import random, socket, sys, time
rng, port, sent = random.Random(3), int(sys.argv[1]), 0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while True:
    s.sendto(rng.randbytes(512), ("127.0.0.1", port))
    sent += 1
    if sent % 200 == 0:
        time.sleep(0.001)
"""


def _http_roundtrip(url: str, i: int) -> float:
    started = time.perf_counter()
    for path in (f"/set?k=b{i}&v={i}", f"/get?k=b{i}"):
        with urllib.request.urlopen(url + path, timeout=30) as r:
            r.read()
    return (time.perf_counter() - started) * 1000


def _line_roundtrip(port: int, i: int) -> float:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"PUT l{i} v\nGET l{i}\n".encode())
        got = b""
        while got.count(b"\n") < 2:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("the line server closed a benchmark connection")
            got += chunk
    if got.count(b'"Ok"') != 2:
        raise RuntimeError(f"the line server answered {got!r}")
    return (time.perf_counter() - started) * 1000


def slowloris(port: int, i: int, stop: threading.Event, sent: list[int] | None = None) -> None:
    """A slow HTTP client: a request header one byte a second, never finished, until `stop`.

    `sent[i]` counts the bytes it sent (or tried to, if the node closed on it)."""
    request = f"GET /get?k=x{i} HTTP/1.1\r\nHost: x\r\nX-Slow: {'a' * 100}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for byte in request:
            if stop.wait(1.0):
                return
            if sent is not None:
                sent[i] += 1
            try:
                s.sendall(bytes([byte]))
            except OSError:
                return  # the node may close a slow client: also fine


@contextmanager
def _idle_and_slow_clients(node: procs.NodeProc) -> Iterator[None]:
    stop = threading.Event()

    slow = [
        threading.Thread(target=slowloris, args=(node.port, i, stop), daemon=True)
        for i in range(BOUNDARY_SLOW)
    ]
    idle: list[socket.socket] = []
    try:
        for t in slow:
            t.start()
        for port in (node.port, node.tcp_port):
            for _ in range(BOUNDARY_IDLE):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(1.5)  # every slowloris client is mid-request
        yield
    finally:
        stop.set()
        for s in idle:
            s.close()
        for t in slow:
            t.join(5)


@contextmanager
def _garbage_flood(node: procs.NodeProc) -> Iterator[None]:
    flood = subprocess.Popen([sys.executable, "-c", FLOOD, str(node.port)])
    try:
        time.sleep(0.5)
        yield
    finally:
        procs.stop(flood)


def bench_boundary(samples: int = 200) -> list[str]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * BOUNDARY_IDLE + 1024  # the node inherits the limit
    if soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    node = procs.start_node("--log-level", "WARNING")
    conditions: dict[str, Callable[[], AbstractContextManager[None]]] = {
        "quiet": nullcontext,
        f"{BOUNDARY_IDLE:,} idle HTTP + {BOUNDARY_IDLE:,} idle line connections, "
        f"{BOUNDARY_SLOW} slowloris": lambda: _idle_and_slow_clients(node),
        "a flood of garbage datagrams on the gossip port": lambda: _garbage_flood(node),
    }
    lines = [
        "| a normal client, one node | HTTP SET+GET p50 ms | p99 ms | max ms "
        "| line PUT+GET p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    try:
        for name, condition in conditions.items():
            with condition():
                http = [_http_roundtrip(node.url, i) for i in range(samples)]
                line = [_line_roundtrip(node.tcp_port, i) for i in range(samples)]
            cells = []
            for xs in (http, line):
                q = statistics.quantiles(xs, n=100)
                cells += [f"{q[49]:.2f}", f"{q[98]:.2f}", f"{max(xs):.2f}"]
            lines.append(f"| {name} | {' | '.join(cells)} |")
    finally:
        procs.stop(node.proc)
    lines.append(f"\n{samples} round trips each, one after another, a new connection each.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument(
        "--keys",
        type=int,
        default=int(os.environ.get("KEYS", 1_000_000)),
        help="keys for the memory and durability tests (default: $KEYS, else 1,000,000)",
    )
    parser.add_argument(
        "--only",
        default="http,memory,line,boundary,mesh,repair,resp,durability,database",
        help="comma-separated sections: http, memory, line, boundary, mesh, repair, resp, "
        "durability, database, soak",
    )
    parser.add_argument("--join-keys", type=int, default=1_000_000, help="keys a joiner streams")
    parser.add_argument(
        "--resp-requests", type=int, default=200_000, help="redis-benchmark -n for the resp section"
    )
    parser.add_argument(
        "--durability-requests",
        type=int,
        default=100_000,
        help="redis-benchmark -n for the durability section",
    )
    parser.add_argument("--soak-seconds", type=float, default=600.0, help="length of the soak")
    parser.add_argument(
        "--line-clients", type=int, default=2, help="client processes for the line section"
    )
    args = parser.parse_args(argv)
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/bin/{tool}"):
            print(f"bench: {tool} is missing; run `make install-system` (needs root)")
            return 2
    sections = set(args.only.split(","))
    print(
        f"# kvmesh benchmark ({time.strftime('%Y-%m-%d %H:%M')}, "
        f"{args.rounds} rounds x {args.duration:g}s, wrk -t1 -c32)\n"
    )
    if "http" in sections:
        print("\n".join(bench_http(args.duration, args.rounds)), "\n", flush=True)
    if "memory" in sections:
        print("\n".join(bench_memory(args.keys)), "\n", flush=True)
    if "line" in sections:
        lines = bench_line(args.duration, args.rounds, args.line_clients)
        print("\n".join(lines), "\n", flush=True)
    if "boundary" in sections:
        print("\n".join(bench_boundary()), "\n", flush=True)
    if "resp" in sections:
        from loadtest import bench_resp

        print("\n".join(bench_resp.bench_resp(args.resp_requests, args.rounds)), "\n", flush=True)
    if "durability" in sections:
        from loadtest import bench_durability  # imports this module: late, to avoid a cycle

        lines = bench_durability.bench_durability(
            args.duration, args.rounds, args.durability_requests, args.keys
        )
        print("\n".join(lines), "\n", flush=True)
    if "database" in sections:
        from loadtest import bench_database  # imports this module: late, to avoid a cycle

        print(
            "\n".join(bench_database.bench_database(args.duration, args.rounds)), "\n", flush=True
        )
    if "mesh" in sections:
        from loadtest import bench_mesh, bench_peers  # import this module: late, no cycle

        for section in (
            bench_peers.bench_peer_client(args.rounds),
            bench_mesh.bench_writes(args.duration, args.rounds),
            bench_mesh.bench_lag(),
            bench_mesh.bench_detection(),
            bench_mesh.bench_join(args.join_keys),
        ):
            print("\n".join(section), "\n", flush=True)
    if "repair" in sections:
        from loadtest import bench_repair  # imports this module: late, to avoid a cycle

        print("\n".join(bench_repair.bench_repair(args.join_keys)), "\n", flush=True)
    if "soak" in sections:
        from loadtest import bench_mesh

        print("\n".join(bench_mesh.bench_soak(args.soak_seconds)), "\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
