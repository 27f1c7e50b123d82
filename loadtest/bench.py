"""`make bench`: throughput and memory of one node, each against an anchor measured in the same run.

    python -m loadtest.bench [--duration S] [--rounds N] [--keys N] [--only http,memory]

- HTTP: wrk (1 thread, 32 connections) against a static nginx `return 200` (one worker: the
  ceiling), then GET and SET on the node; rounds are interleaved and the median taken, because
  these machines are shared and noisy. Prints requests/s, p50/p99 and the ratios to the ceiling.
- Memory: the resident-set growth of the node and of a redis-server for the same N keys
  (16-character keys, 100-character values), and the node's growth while streaming `/getAll`.

Speed is never asserted in a test; this prints figures for the README.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass

from loadtest import procs

WRK_LINE = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_PCT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float


def wrk(url: str, duration: float, connections: int = 32) -> WrkResult:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", url],
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
    return WrkResult(float(m.group(1)), pct.get("50", float("nan")), pct.get("99", float("nan")))


def median(results: list[WrkResult]) -> WrkResult:
    return WrkResult(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
    )


def bench_http(duration: float, rounds: int) -> list[str]:
    nginx_port = procs.free_port()
    ng = procs.static_nginx(nginx_port)
    node = procs.start_node("--log-level", "WARNING", "--tcp-port", "0")
    try:
        urllib.request.urlopen(f"{node.url}/set?k=benchkey&v=hello-bench").read()
        targets = {
            "nginx static (ceiling)": f"http://127.0.0.1:{nginx_port}/",
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
        procs.stop(ng.proc)
    ceiling = med["nginx static (ceiling)"].rps
    lines = [
        "| target | requests/s | p50 ms | p99 ms | vs nginx static |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in med.items():
        lines.append(
            f"| {name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.rps / ceiling:.1%} |"
        )
    return lines


def _pairs(n: int, start: int = 0) -> list[tuple[str, str]]:
    # 16-character keys, 100-character values
    return [(f"key:{i:012d}", f"value:{i:012d}".ljust(100, "v")) for i in range(start, start + n)]


def fill_redis(port: int, n: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        for start in range(0, n, 10_000):
            buf = []
            pairs = _pairs(min(10_000, n - start), start)
            for k, v in pairs:
                buf.append(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n${len(v)}\r\n{v}\r\n")
            s.sendall("".join(buf).encode())
            need, got = len(pairs) * 5, 0  # "+OK\r\n" each
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys for the memory test")
    parser.add_argument("--only", default="http,memory", help="comma-separated sections")
    args = parser.parse_args(argv)
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None and not shutil.os.path.exists(f"/usr/bin/{tool}"):
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
