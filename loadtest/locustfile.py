"""Locust load for kvmesh through the balancer: a realistic mix, and a read-your-writes user.

    make stress                      # headless, DURATION=30s USERS=50, reports in loadtest/reports/
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080      # web UI on :8089

- `KvUser` (9 in 10 users): mostly reads (GET /keys/{k}, /get?k=, HEAD), writes with and without a
  TTL (PUT /keys/{k}, /set?k=&v=), deletes, batch PUT /keys, and paged listings that follow
  `next_cursor` for a few pages. Keys come from a shared key space (`--keyspace`, seeded at the
  start), so users read each other's writes and some reads miss: a 404 for a missing key is an
  answer, not a failure.
- `ReadYourWritesUser` (1 in 10): writes a fresh value to a key of its own through the balancer and
  reads it straight back through it; any other answer is a failure named "read-your-writes
  violation" (the contract: through the load balancer a client reads its own writes). Deletes are
  read back too (a 404 is expected).

At the end it prints one summary line (requests/s, failures, p50/p95/p99, violations) and sets a
non-zero exit status when the failure ratio is over `--max-fail-ratio` or any read-your-writes
violation was seen. Only the standard library and locust are imported, so the same file runs in
the official locust image (docker-compose).
"""

from __future__ import annotations

import json
import random
import string
import urllib.request
import uuid
from typing import Any

from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

SEED_BATCH = 500
violations = {"read_your_writes": 0}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--max-fail-ratio",
        type=float,
        default=0.01,
        help="exit non-zero if more than this fraction of requests failed [0.01]",
    )
    parser.add_argument(
        "--keyspace", type=int, default=2000, help="keys shared by the users [2000]"
    )


def _keyspace(env: Environment) -> int:
    options = env.parsed_options
    return int(getattr(options, "keyspace", 2000)) if options is not None else 2000


def _value(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(8, 64)))


@events.test_start.add_listener
def _seed(environment: Environment, **_kw: Any) -> None:
    """Fill the key space once (batch PUTs), so that reads mostly find something."""
    if isinstance(environment.runner, WorkerRunner) or not environment.host:
        return
    rng = random.Random(1)
    size = _keyspace(environment)
    for start in range(0, size, SEED_BATCH):
        pairs = {f"k{i}": _value(rng) for i in range(start, min(size, start + SEED_BATCH))}
        req = urllib.request.Request(
            environment.host.rstrip("/") + "/keys",
            data=json.dumps(pairs).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()
        except OSError as exc:  # the run goes on: its requests will fail and be counted
            print(f"kvmesh stress: could not seed the key space through {environment.host}: {exc}")
            return


@events.quitting.add_listener
def _summary(environment: Environment, **_kw: Any) -> None:
    """One line a person can read, and the exit status a script can branch on."""
    if isinstance(environment.runner, WorkerRunner):
        return
    total = environment.stats.total
    ratio = total.fail_ratio
    pct = {p: total.get_response_time_percentile(p) for p in (0.5, 0.95, 0.99)}
    options = environment.parsed_options
    limit = float(getattr(options, "max_fail_ratio", 0.01)) if options is not None else 0.01
    ryw = violations["read_your_writes"]
    print(
        f"\nkvmesh stress: {total.num_requests} requests, {total.total_rps:.0f} req/s, "
        f"{total.num_failures} failures ({ratio:.2%}, limit {limit:.2%}), "
        f"p50 {pct[0.5]:.0f} ms, p95 {pct[0.95]:.0f} ms, p99 {pct[0.99]:.0f} ms, "
        f"read-your-writes violations {ryw}",
        flush=True,
    )
    if total.num_requests == 0 or ratio > limit or ryw:
        environment.process_exit_code = 1


class KvUser(FastHttpUser):
    """The realistic mix: weights are out of 100 tasks."""

    weight = 9
    wait_time = between(0.005, 0.05)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.keys = _keyspace(self.environment)

    def key(self) -> str:
        return f"k{self.rng.randrange(self.keys)}"

    def _expect(self, method: str, url: str, name: str, ok: tuple[int, ...], **kw: Any) -> Any:
        with self.client.request(method, url, name=name, catch_response=True, **kw) as resp:
            if resp.status_code in ok:
                resp.success()
            else:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
            return resp

    @task(42)
    def get(self) -> None:
        self._expect("GET", f"/keys/{self.key()}", "GET /keys/[key]", (200, 404))

    @task(10)
    def get_query(self) -> None:
        self._expect("GET", f"/get?k={self.key()}", "GET /get?k=", (200, 404))

    @task(3)
    def head(self) -> None:
        self._expect("HEAD", f"/keys/{self.key()}", "HEAD /keys/[key]", (200, 404))

    @task(12)
    def put(self) -> None:
        body = {"value": _value(self.rng)}
        self._expect("PUT", f"/keys/{self.key()}", "PUT /keys/[key]", (200,), json=body)

    @task(5)
    def put_ttl(self) -> None:
        body = {"value": _value(self.rng), "ttl": self.rng.choice((5, 30, 300))}
        self._expect("PUT", f"/keys/{self.key()}", "PUT /keys/[key] ttl", (200,), json=body)

    @task(6)
    def set_query(self) -> None:
        url = f"/set?k={self.key()}&v={_value(self.rng)}"
        self._expect("GET", url, "GET /set?k=&v=", (200,))

    @task(5)
    def delete(self) -> None:
        self._expect("DELETE", f"/keys/{self.key()}", "DELETE /keys/[key]", (200, 404))

    @task(5)
    def batch(self) -> None:
        pairs = {self.key(): _value(self.rng) for _ in range(self.rng.randint(2, 10))}
        ttl = "?expire_in=60" if self.rng.random() < 0.3 else ""
        self._expect("PUT", f"/keys{ttl}", "PUT /keys (batch)", (200,), json=pairs)

    @task(3)
    def listing(self) -> None:
        """Page through part of the key space: up to 3 pages of 50, following next_cursor."""
        flt = f"&filter=k{self.rng.randrange(10)}*" if self.rng.random() < 0.5 else ""
        url = f"/keys?limit=50{flt}"
        for _ in range(3):
            resp = self._expect("GET", url, "GET /keys?limit=&cursor=", (200,))
            if resp.status_code != 200:
                return
            cursor = resp.json().get("next_cursor")
            if cursor is None:
                return
            url = f"/keys?limit=50{flt}&cursor={cursor}"


class ReadYourWritesUser(FastHttpUser):
    """Writes through the balancer and reads back through it: the answer must be the write."""

    weight = 1
    wait_time = between(0.005, 0.05)

    def on_start(self) -> None:
        self.prefix = f"ryw-{uuid.uuid4().hex[:12]}"
        self.seq = 0

    def _violation(self, resp: Any, wrote: str, read: str) -> None:
        violations["read_your_writes"] += 1
        resp.failure(f"read-your-writes violation: wrote {wrote}, read {read}")

    @task(4)
    def write_then_read(self) -> None:
        self.seq += 1
        key = f"{self.prefix}-{self.seq % 20}"
        value = f"{self.prefix}-v{self.seq}"
        with self.client.put(
            f"/keys/{key}", json={"value": value}, name="ryw: PUT", catch_response=True
        ) as put:
            if put.status_code != 200:
                put.failure(f"HTTP {put.status_code}")
                return
        with self.client.get(f"/keys/{key}", name="ryw: GET", catch_response=True) as get:
            got = get.json().get("value") if get.status_code == 200 else f"HTTP {get.status_code}"
            if got != value:
                self._violation(get, value, str(got))

    @task(1)
    def delete_then_read(self) -> None:
        self.seq += 1
        key = f"{self.prefix}-d{self.seq % 20}"
        with self.client.put(
            f"/keys/{key}", json={"value": "x"}, name="ryw: PUT", catch_response=True
        ) as put:
            if put.status_code != 200:
                put.failure(f"HTTP {put.status_code}")
                return
        with self.client.delete(f"/keys/{key}", name="ryw: DELETE", catch_response=True) as d:
            if d.status_code != 200:
                d.failure(f"HTTP {d.status_code}")
                return
        with self.client.get(f"/keys/{key}", name="ryw: GET", catch_response=True) as get:
            if get.status_code == 404:
                get.success()
            else:
                self._violation(get, "a delete", f"HTTP {get.status_code}")
