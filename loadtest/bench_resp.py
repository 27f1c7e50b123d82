"""RESP figures for `make bench` (`--only resp`): the node against redis-server, with the same C
client (redis-benchmark) in the same run, and the 3-node sync mesh against the same single node.

    redis-benchmark -t set,get -c 50 -n N [-P 16]   node vs redis-server
    redis-benchmark -t set -c 50 -n N               3-node sync mesh through one node vs one node
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess

from loadtest import bench_mesh, procs

LINE = re.compile(r"^(\w+): ([\d.]+) requests per second", re.M)
CLIENTS = 50


def redis_benchmark(port: int, tests: str, requests: int, depth: int = 1) -> dict[str, float]:
    """requests/s per test ("SET", "GET") of one redis-benchmark run against `port`."""
    binary = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
    out = subprocess.run(
        [binary, "-p", str(port), "-c", str(CLIENTS), "-n", str(requests), "-t", tests,
         "-P", str(depth), "-r", "100000", "-q"],
        capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    return {name: float(rate) for name, rate in LINE.findall(out.replace("\r", "\n"))}


def bench_resp(requests: int, rounds: int) -> list[str]:
    node = procs.start_node("--log-level", "WARNING", "--tcp-port", "0")
    redis_port = procs.free_port()
    redis = procs.start_redis(redis_port)
    rates: dict[tuple[str, str, int], list[float]] = {}
    try:
        for _ in range(rounds):  # interleaved, so both see the same noise
            for depth in (1, 16):
                for target, port in (("node", node.resp_port), ("redis", redis_port)):
                    for test, rate in redis_benchmark(port, "set,get", requests, depth).items():
                        rates.setdefault((target, test, depth), []).append(rate)
    finally:
        procs.stop(node.proc)
        procs.stop(redis)
    lines = [
        "| redis-benchmark -c 50 | pipelined | node ops/s | redis-server ops/s | node / redis |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for depth in (1, 16):
        for test in ("SET", "GET"):
            n = statistics.median(rates[("node", test, depth)])
            r = statistics.median(rates[("redis", test, depth)])
            lines.append(f"| {test} | {depth} | {n:,.0f} | {r:,.0f} | {n / r:.0%} |")
    lines += ["", *bench_resp_mesh(requests, rounds)]
    return lines


def bench_resp_mesh(requests: int, rounds: int) -> list[str]:
    single = procs.start_node("--log-level", "WARNING", "--tcp-port", "0")
    single_rates: list[float] = []
    mesh_rates: list[float] = []
    try:
        with bench_mesh.mesh(3) as nodes:
            for _ in range(rounds):
                single_rates.append(redis_benchmark(single.resp_port, "set", requests)["SET"])
                mesh_rates.append(redis_benchmark(nodes[0].resp_port, "set", requests)["SET"])
    finally:
        procs.stop(single.proc)
    s, m = statistics.median(single_rates), statistics.median(mesh_rates)
    return [
        "| RESP SET, redis-benchmark -c 50 | ops/s | vs single node |",
        "| --- | ---: | ---: |",
        f"| single node | {s:,.0f} | 100% |",
        f"| 3-node sync mesh, through one node | {m:,.0f} | {m / s:.0%} |",
    ]
