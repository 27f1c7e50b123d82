"""Database mode for `make bench` (`--only database`): one node over a private PostgreSQL server,
against pgbench running the node's own statements on the same server with the same concurrency,
and against the same node in memory mode.

    wrk -t1 -c32 -d5s --latency -s SCRIPT http://NODE/        SET: /set?k=bench:N&v=VALUE,
                                                               GET: /get?k=bench:N, N random
    pgbench -n -M prepared -c 32 -j 2 -T 5 -f SCRIPT URL       the node's UPSERT / GET, one row

- Keys `bench:1` .. `bench:KEYS` (100,000), loaded first through the node (PUT /keys, 2,000 a
  request) into both modes; values of 32 characters; each request picks N at random (wrk's Lua
  `math.random`, pgbench's `random(1, KEYS)`).
- pgbench's statements are cluster.storage.postgres's UPSERT and GET as the node sends them, read
  from that module: the UPSERT's parameter arrays become one-element arrays built in the statement
  (`ARRAY['bench:' || :n]::text[]`, ..., the version `(clock_timestamp() in ms * 65536)`, the
  node's HLC scale, so that every upsert replaces the row as the node's do), GET's `$1` becomes
  `'bench:' || :n`. With `-M prepared` `:n` is a parameter of a prepared statement, as the node's
  are (asyncpg prepares and caches its statements).
- PostgreSQL: procs.start_postgres (fsync off: nothing in it has to outlive the run), the same
  server for the node and for pgbench. The node runs with its default pool (--store-pool-size 10)
  and with a pool of 32, one connection per wrk connection as pgbench has.
- Rounds are interleaved (every target sees the same noise) and medians taken.

Speed is never asserted in a test; this prints figures for docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from cluster.storage.postgres import GET, UPSERT
from loadtest import procs
from loadtest.bench import WrkResult, median, wrk

KEYS = 100_000
VALUE = "value-" + "v" * 26  # 32 characters, as the line section's
CONNECTIONS = 32
PGBENCH_THREADS = 2
POOLS = (10, 32)  # the node's default pool, and one connection per client connection

# The node's version scale: its HLC is milliseconds << 16 (a logical counter below); here the
# clock's microseconds fill those bits, so every upsert is newer than the row it meets.
PG_VERSION = "(extract(epoch FROM clock_timestamp()) * 65536000)::bigint"

WRK_SCRIPT = """-- {what} on a random key of bench:1 .. bench:{keys}
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "{path}" .. math.random(1, {keys}){tail})
end
"""

PGBENCH_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.M)
PGBENCH_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
PGBENCH_LATENCY = re.compile(r"^latency average = ([\d.]+) ms", re.M)


def pgbench_binary() -> Path | None:
    bindir = procs.postgres_bindir()
    found = bindir / "pgbench" if bindir is not None else None
    return found if found is not None and found.exists() else None


def pgbench_upsert() -> str:
    """The node's UPSERT with its five parameter arrays as one-element arrays of one row."""
    values = {
        "$1::text[]": "ARRAY['bench:' || :n]::text[]",
        "$2::text[]": f"ARRAY['{VALUE}']::text[]",
        "$3::bigint[]": f"ARRAY[{PG_VERSION}]::bigint[]",
        "$4::text[]": "ARRAY['pgbench']::text[]",
        "$5::float8[]": "ARRAY[NULL]::float8[]",
    }
    statement = UPSERT.strip()
    for parameter, value in values.items():
        assert statement.count(parameter) == 1, f"UPSERT changed: {parameter}"
        statement = statement.replace(parameter, value)
    return statement


def pgbench_get() -> str:
    """The node's GET for key bench:N."""
    assert GET.count("$1") == 1, "GET changed"
    return GET.replace("$1", "('bench:' || :n)")


def pgbench_script(statement: str) -> str:
    return f"\\set n random(1, {KEYS})\n{statement};\n"


@contextmanager
def _scripts(directory: Path) -> Iterator[dict[str, Path]]:
    files = {
        "wrk SET": WRK_SCRIPT.format(
            what="SET", keys=KEYS, path="/set?k=bench:", tail=f' .. "&v={VALUE}"'
        ),
        "wrk GET": WRK_SCRIPT.format(what="GET", keys=KEYS, path="/get?k=bench:", tail=""),
        "pgbench SET": pgbench_script(pgbench_upsert()),
        "pgbench GET": pgbench_script(pgbench_get()),
    }
    paths = {}
    for name, text in files.items():
        path = directory / (name.replace(" ", "-") + (".lua" if "wrk" in name else ".sql"))
        path.write_text(text)
        paths[name] = path
    yield paths


def pgbench(pg: procs.Postgres, script: Path, duration: float) -> tuple[float, float]:
    """(transactions/s, average latency in ms) of one pgbench run; fails on failed ones."""
    binary = pgbench_binary()
    assert binary is not None
    out = subprocess.run(
        [str(binary), "-n", "-M", "prepared", "-c", str(CONNECTIONS), "-j", str(PGBENCH_THREADS),
         "-T", str(max(1, round(duration))), "-f", str(script),
         "-h", "127.0.0.1", "-p", str(pg.port), "-U", "kvmesh", "postgres"],
        capture_output=True, text=True, check=True, timeout=duration + 120,
    ).stdout  # fmt: skip
    tps = PGBENCH_TPS.search(out)
    if tps is None:
        raise RuntimeError(f"unexpected pgbench output:\n{out}")
    failed = PGBENCH_FAILED.search(out)
    if failed is not None and int(failed.group(1)):
        raise RuntimeError(f"pgbench: failed transactions:\n{out}")
    latency = PGBENCH_LATENCY.search(out)
    return float(tps.group(1)), float(latency.group(1)) if latency else float("nan")


def fill(url: str, keys: int = KEYS, batch: int = 2000) -> None:
    """bench:1 .. bench:KEYS through the node, `batch` keys a PUT /keys."""
    for start in range(1, keys + 1, batch):
        body = {f"bench:{i}": VALUE for i in range(start, min(start + batch, keys + 1))}
        req = urllib.request.Request(f"{url}/keys", data=json.dumps(body).encode(), method="PUT")
        urllib.request.urlopen(req, timeout=60).read()


def rows_by(pg: procs.Postgres, node: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(pg.url)
        try:
            n: int = await conn.fetchval("SELECT count(*) FROM kv_entries WHERE node = $1", node)
            return n
        finally:
            await conn.close()

    return asyncio.run(count())


def bench_database(duration: float, rounds: int) -> list[str]:
    if pgbench_binary() is None:
        return ["database: PostgreSQL (pgbench, initdb) is not installed; make install-system"]
    pg = procs.start_postgres()
    tmp = Path(tempfile.mkdtemp(prefix="kvbench-db-"))
    quiet = ("--log-level", "WARNING", "--tcp-port", "0", "--resp-port", "0")
    nodes: dict[str, procs.NodeProc] = {}
    try:
        for pool in POOLS:
            nodes[f"node, pool {pool}"] = procs.start_node(
                *quiet, "--store", pg.url, "--store-pool-size", str(pool), log_dir=tmp
            )
        nodes["node in memory"] = procs.start_node(*quiet, log_dir=tmp)
        fill(nodes[f"node, pool {POOLS[0]}"].url)  # the database, once for both pools
        fill(nodes["node in memory"].url)
        results: dict[tuple[str, str], list[WrkResult]] = {}
        pgb: dict[str, list[tuple[float, float]]] = {"SET": [], "GET": []}
        with _scripts(tmp) as scripts:
            for _ in range(rounds):  # interleaved: every target sees the same noise
                for op in ("SET", "GET"):
                    for name, node in nodes.items():
                        r = wrk(node.url + "/", duration, CONNECTIONS, scripts[f"wrk {op}"])
                        results.setdefault((name, op), []).append(r)
                    pgb[op].append(pgbench(pg, scripts[f"pgbench {op}"], duration))
        written = rows_by(pg, "pgbench")  # pgbench's upserts did replace rows
    finally:
        procs.stop([n.proc for n in nodes.values()])
        procs.remove_postgres(pg)
        shutil.rmtree(tmp, ignore_errors=True)
    if not written:
        raise RuntimeError("pgbench's upserts replaced no row: the version guard refused them")
    failed = {k: median(rs).failed for k, rs in results.items() if median(rs).failed}
    if failed:
        raise RuntimeError(f"non-2xx answers during the runs: {failed}")

    lines = [
        f"| {CONNECTIONS} connections | SET /s | vs pgbench | GET /s | vs pgbench "
        "| SET p50 / p99 ms | GET p50 / p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    pg_rate = {op: statistics.median(t for t, _ in runs) for op, runs in pgb.items()}
    pg_latency = {op: statistics.median(lat for _, lat in runs) for op, runs in pgb.items()}
    lines.append(
        f"| pgbench, the node's statements (-c {CONNECTIONS} -j {PGBENCH_THREADS} -M prepared) "
        f"| {pg_rate['SET']:,.0f} | 100% | {pg_rate['GET']:,.0f} | 100% "
        f"| avg {pg_latency['SET']:.2f} | avg {pg_latency['GET']:.2f} |"
    )
    for name in nodes:
        s, g = median(results[name, "SET"]), median(results[name, "GET"])
        lines.append(
            f"| {name} (wrk -t1) | {s.rps:,.0f} | {s.rps / pg_rate['SET']:.0%} | {g.rps:,.0f} "
            f"| {g.rps / pg_rate['GET']:.0%} | {s.p50_ms:.2f} / {s.p99_ms:.2f} "
            f"| {g.p50_ms:.2f} / {g.p99_ms:.2f} |"
        )
    memory = {op: median(results["node in memory", op]).rps for op in ("SET", "GET")}
    for pool in POOLS:
        name = f"node, pool {pool}"
        lines.append(
            f"\n{name}: SET {median(results[name, 'SET']).rps / memory['SET']:.0%} and GET "
            f"{median(results[name, 'GET']).rps / memory['GET']:.0%} of the node in memory mode."
        )
    lines.append(
        f"\nTarget: node >= 50% of pgbench for SET and for GET. {KEYS:,} keys, random ones; "
        f"{rounds} interleaved rounds of {duration:g} s, medians; one PostgreSQL (fsync off) "
        f"for the node and pgbench; pgbench replaced {written:,} rows."
    )
    return lines
