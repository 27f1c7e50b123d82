"""The repair section of `make bench`: what anti-entropy costs after a partition heals.

Two node processes in a sync mesh hold the same N keys (1,000,000 by default: 16-character keys,
100-character values). The second is stopped (SIGSTOP) until the first declares it dead, which
cuts replication to it; the first then takes new keys (1 % and 0.01 % of N), which only it holds.
The second is resumed (SIGCONT): the first sees it alive again and repairs with it at once. The
figures: seconds from the resume until both hold the same number of keys, and the bytes the
repair round moved (request and reply bodies, both ways, as the node reports them in
/cluster/status), against the bytes of the differing entries themselves as they travel
(`[key, value, ts, node, expires]` in JSON). Anti-entropy's own interval is set far out, so that
the round measured is the one the heal started.
"""

from __future__ import annotations

import json
import os
import signal
import time

import orjson

from loadtest import procs
from loadtest.bench import _pairs, fill_redis
from loadtest.bench_mesh import _get, _states, mesh

TS = 111_411_200_493_027_328  # an HLC timestamp of today's width (18 digits)


def _keys(node: procs.NodeProc) -> int:
    status, raw = _get(node.url + "/health")
    return int(json.loads(raw).get("keys", -1)) if status == 200 else -1


def _until(check: object, what: str, within: float = 120.0) -> float:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - start > within:
            raise TimeoutError(f"{what}: not within {within:g} s")
        time.sleep(0.02)
    return time.monotonic() - start


def _last_repair(node: procs.NodeProc) -> dict[str, int]:
    _, raw = _get(node.url + "/cluster/status")
    own = next(n for n in json.loads(raw)["nodes"] if n.get("name") == node.name)
    return own["last_repair"] or {}


def diverge_and_heal(keys: int, diverged: int) -> dict[str, float]:
    with mesh(2, "--antientropy-interval", "3600") as (a, b):
        fill_redis(a.resp_port, keys, per_command=1000)
        _until(lambda: _keys(b) == keys, "the second node's copy")
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            _until(lambda: _states(a).get(b.name) == "dead", "the first node declaring it dead")
            fill_redis(a.resp_port, diverged, per_command=1000, first=keys)
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        seconds = _until(lambda: _keys(b) == keys + diverged, "convergence after the heal")
        repair = _last_repair(a)
    entries = sum(len(orjson.dumps([k, v, TS, a.name, None])) for k, v in _pairs(diverged, keys))
    return {
        "seconds": seconds,
        "bytes": repair.get("bytes", 0),
        "entry_bytes": entries,
        "sent": repair.get("sent", 0),
        "leaves": repair.get("leaves", 0),
    }


def bench_repair(keys: int, fractions: tuple[float, ...] = (0.01, 0.0001)) -> list[str]:
    lines = [
        f"| {keys:,} keys each, diverged by | differing entries, bytes | repair bytes | "
        "repair / entries | leaves differing | entries sent | resume to converged, s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for fraction in fractions:
        diverged = max(1, round(keys * fraction))
        r = diverge_and_heal(keys, diverged)
        lines.append(
            f"| {fraction:.2%} ({diverged:,} keys) | {r['entry_bytes']:,} | {r['bytes']:,} | "
            f"{r['bytes'] / r['entry_bytes']:.2f}x | {r['leaves']:,} | {r['sent']:,} | "
            f"{r['seconds']:.2f} |"
        )
    return lines
