"""nginx in front of three node.py processes, with the config `make run` uses (loadtest.mesh).

- A node killed with SIGKILL under load costs the clients no failed request beyond those in
  flight at the kill (nginx retries idempotent requests on the next node; in practice none fail).
- The line protocol is balanced by nginx's stream module: a PUT through the balancer is read back
  through it on other connections (other nodes), and a transaction commits through it.
- A frozen node (SIGSTOP) delays reads by nginx's read timeout (they are retried elsewhere) and
  costs a write a 504, never a retry that the node would replay when it resumes.
- Node-to-node routes are not proxied; every answer names the node that served it.
- The runner of `make run` (loadtest.mesh): prefixes each node's log lines with its name, prints
  the URLs, stops every process on Ctrl-C or SIGTERM (nginx included) and frees the ports;
  `--stop` (make stop) stops a run left in the background; a taken port is refused up front.

Processes run on free loopback ports and are stopped by PID (Mesh.stop) in the fixture.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loadtest import mesh as meshlib
from loadtest import procs, supervise

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(procs.nginx_binary() is None, reason="nginx is not installed"),
]

LOAD_SECONDS = 8.0
KILL_AT = 3.0
THREADS = 6


def balancer(mesh: meshlib.Mesh, timeout: float) -> http.client.HTTPConnection:
    """A connection to the mesh's balancer (nginx's HTTP port)."""
    return http.client.HTTPConnection("127.0.0.1", mesh.plan.http_port, timeout=timeout)


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: object = None
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    return resp.status, dict(resp.headers), resp.read()


@dataclass
class Load:
    """Bounded client load through the balancer; counts outcomes and requests in flight."""

    port: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    ok: int = 0
    ok_after_kill: int = 0
    failures: list[str] = field(default_factory=list)
    killed_at: float | None = None
    max_latency: float = 0.0

    def worker(self, index: int, until: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        seq = 0
        while time.monotonic() < until:
            seq += 1
            key = f"t{index}-{seq % 50}"
            method, path, body, expect = [
                ("PUT", f"/keys/{key}", {"value": f"v{seq}"}, (200,)),
                ("GET", f"/keys/{key}", None, (200, 404)),
                ("GET", f"/set?k={key}&v=s{seq}", None, (200,)),
                ("GET", f"/get?k={key}", None, (200, 404)),
            ][seq % 4]
            with self.lock:
                self.in_flight += 1
            started = time.monotonic()
            try:
                status, _, raw = request(conn, method, path, body)
                outcome = None if status in expect else f"{method} {path}: HTTP {status} {raw!r}"
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"{method} {path}: {exc!r}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            with self.lock:
                self.in_flight -= 1
                self.max_latency = max(self.max_latency, time.monotonic() - started)
                if outcome is None:
                    self.ok += 1
                    if self.killed_at is not None:
                        self.ok_after_kill += 1
                else:
                    self.failures.append(outcome)
        conn.close()


def test_a_node_killed_with_sigkill_costs_no_requests_beyond_those_in_flight(
    running_mesh: meshlib.Mesh,
) -> None:
    load = Load(running_mesh.plan.http_port)
    start = time.monotonic()
    until = start + LOAD_SECONDS
    threads = [
        threading.Thread(target=load.worker, args=(i, until), daemon=True) for i in range(THREADS)
    ]
    for t in threads:
        t.start()
    time.sleep(KILL_AT)
    victim = running_mesh.children["node2"].proc
    assert victim is not None
    with load.lock:  # no request starts or ends while we count and kill
        in_flight_at_kill = load.in_flight
        ok_before = load.ok
        os.kill(victim.pid, signal.SIGKILL)
        load.killed_at = time.monotonic()
    victim.wait()
    running_mesh.children["node2"].reported = True
    for t in threads:
        t.join(timeout=LOAD_SECONDS + 30)
    print(
        f"\nbalancer under SIGKILL: {load.ok} requests ok ({ok_before} before the kill, "
        f"{load.ok_after_kill} after), {len(load.failures)} failed, {in_flight_at_kill} in "
        f"flight at the kill, slowest {load.max_latency:.2f} s"
    )
    assert not any(t.is_alive() for t in threads)
    assert ok_before > 0, "no load before the kill"
    assert load.ok_after_kill > 0, "the balancer served nothing after the kill"
    assert len(load.failures) <= in_flight_at_kill, load.failures
    # The two survivors still answer through the balancer, and a write reaches both of them.
    with closing(balancer(running_mesh, 15)) as c:
        status, _, _ = request(c, "PUT", "/keys/after-kill", {"value": "yes"})
    assert status == 200
    for spec in running_mesh.plan.nodes:
        if spec.name != "node2":
            with closing(http.client.HTTPConnection("127.0.0.1", spec.port, timeout=5)) as c:
                status, _, raw = request(c, "GET", "/keys/after-kill")
            assert (status, json.loads(raw)["value"]) == (200, "yes"), spec.name


def test_a_frozen_node_delays_reads_and_fails_writes_but_never_replays_them(
    running_mesh: meshlib.Mesh,
) -> None:
    """SIGSTOP, not SIGKILL: the node accepts connections but does not answer. A read waits for
    nginx's read timeout and is retried on another node; a write is not (the frozen node would
    apply it when it resumes, after the retry, undoing later writes): the client gets a 504."""
    frozen = running_mesh.children["node2"].proc
    assert frozen is not None
    address = f"127.0.0.1:{running_mesh.plan.nodes[1].port}"
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        answers = []
        with closing(balancer(running_mesh, 30)) as c:
            for i in range(6):  # round robin reaches the frozen node within three
                status, headers, _ = request(c, "PUT", f"/keys/frozen{i}", {"value": "v"})
                answers.append((status, headers["X-Upstream"]))
                if status != 200:
                    break
        assert answers[-1] == (504, address), answers
        assert all(status == 200 for status, _ in answers[:-1]), answers
        # The timed-out node is skipped for fail_timeout (2 s, counted by nginx in whole seconds,
        # so up to 3 s), then tried again: read until nginx tries it (its weight recovers in
        # round robin), the read times out there and is answered by another node.
        deadline = time.monotonic() + 60
        reads: list[tuple[int, str]] = []
        with closing(balancer(running_mesh, 30)) as c:
            while not reads or not reads[-1][1].startswith(f"{address}, "):
                assert time.monotonic() < deadline, f"nginx never tried {address} again: {reads}"
                status, headers, _ = request(c, "GET", f"/keys/frozen{len(reads) % 3}")
                reads.append((status, headers["X-Upstream"]))
                time.sleep(0.05)
        assert all(status in (200, 404) for status, _ in reads), reads
        assert all(upstream != address for _, upstream in reads), reads  # never answered by it
    finally:
        os.kill(frozen.pid, signal.SIGCONT)


class LineClient:
    """One line-protocol connection: send lines, read JSON replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.sock.makefile("rb")

    def send(self, *lines: str) -> list[dict[str, object]]:
        self.sock.sendall("".join(f"{line}\n" for line in lines).encode())
        return [json.loads(self.reader.readline()) for _ in lines]

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()
        self.sock.close()


def test_the_line_protocol_is_balanced_through_the_stream_proxy(running_mesh: meshlib.Mesh) -> None:
    port = running_mesh.plan.tcp_port
    with LineClient(port) as c:
        assert c.send("PUT greeting   hello through nginx  ") == [{"status": "Ok"}]
        assert c.send("START", "PUT a 1", "PUT b 2", "COMMIT") == [{"status": "Ok"}] * 4
    # New connections are spread over the nodes: each reads what the first one wrote.
    for _ in range(4):
        with LineClient(port) as c:
            got = c.send("GET greeting", "GET a", "GET b", "GET missing")
        assert got[:3] == [
            {"status": "Ok", "result": "hello through nginx"},
            {"status": "Ok", "result": "1"},
            {"status": "Ok", "result": "2"},
        ]
        assert got[3]["status"] == "Error"
    # A client that sends its commands and closes its side (`printf ... | nc -q1`) gets the replies.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET greeting\nGET a\n")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert [json.loads(line) for line in received.splitlines()] == [
        {"status": "Ok", "result": "hello through nginx"},
        {"status": "Ok", "result": "1"},
    ]


def test_the_balancer_hides_internal_routes_and_names_the_node(running_mesh: meshlib.Mesh) -> None:
    addresses = {f"127.0.0.1:{n.port}" for n in running_mesh.plan.nodes}
    served = set()
    with closing(balancer(running_mesh, 5)) as c:
        status, _, raw = request(c, "GET", "/internal/snapshot")
        assert status == 404
        assert json.loads(raw)["code"] == "NOT_FOUND"
        for _ in range(6):
            status, headers, _ = request(c, "GET", "/health")
            assert status == 200
            served.add(headers["X-Upstream"])
    assert served <= addresses
    assert len(served) > 1, "round robin over the nodes"


# --- the runner of `make run` -----------------------------------------------------------------


def free_base(count: int) -> int:
    """A base such that base+1 .. base+count are free for TCP and UDP (the runner's node ports)."""
    for _ in range(100):
        base = procs.free_port() - 1
        ports = range(base + 1, base + count + 1)
        if all(not meshlib.port_taken("127.0.0.1", p, k) for p in ports for k in ("tcp", "udp")):
            return base
    raise RuntimeError("no run of free ports")


class Runner:
    """`python -m loadtest.mesh` as `make run` starts it, on free ports, output collected."""

    def __init__(self, run_dir: Path, nodes: int = 2, *extra: str) -> None:
        self.http_base, self.tcp_base = free_base(nodes), free_base(nodes)
        self.plan = plan = meshlib.make_plan(
            nodes, "127.0.0.1", procs.free_port(), procs.free_port(), self.http_base, self.tcp_base
        )
        self.run_dir = run_dir
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadtest.mesh",
                "--nodes",
                str(nodes),
                "--http-port",
                str(plan.http_port),
                "--tcp-port",
                str(plan.tcp_port),
                "--node-port-base",
                str(self.http_base),
                "--node-tcp-base",
                str(self.tcp_base),
                "--run-dir",
                str(run_dir),
                *extra,
            ],
            cwd=procs.ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or any(text in line for line in self.lines), "\n".join(
                self.lines
            )
            assert time.monotonic() < deadline, "\n".join(self.lines)
            time.sleep(0.05)

    def pids(self) -> dict[str, int]:
        return {f.stem: int(f.read_text()) for f in self.run_dir.glob("*.pid")}

    def ports(self) -> list[tuple[int, str]]:
        out = [(self.plan.http_port, "tcp"), (self.plan.tcp_port, "tcp")]
        for i in range(1, len(self.plan.nodes) + 1):
            out += [(self.http_base + i, "tcp"), (self.http_base + i, "udp")]
            out += [(self.tcp_base + i, "tcp")]
        return out

    def close(self) -> None:
        procs.stop(self.proc)  # type: ignore[arg-type]
        self.reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    r = Runner(tmp_path / "run")
    try:
        yield r
    finally:
        r.close()
        meshlib.stop_recorded(tmp_path / "run")


def gone(pid: int) -> bool:
    return not supervise.alive(pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_the_runner_prefixes_logs_prints_urls_and_stops_everything(
    runner: Runner, sig: signal.Signals
) -> None:
    runner.wait_for("Ctrl-C (or make stop) stops everything")
    out = "\n".join(runner.lines)
    assert f"HTTP           http://127.0.0.1:{runner.plan.http_port}" in out
    assert f"line protocol  127.0.0.1:{runner.plan.tcp_port}" in out
    assert any(line.startswith("node1 | ") for line in runner.lines), out
    assert any(line.startswith("node2 | ") for line in runner.lines), out
    pids = runner.pids()
    assert set(pids) == {"mesh", "node1", "node2", "nginx"}
    assert meshlib.is_kvmesh(f"http://127.0.0.1:{runner.plan.http_port}")

    os.kill(runner.proc.pid, sig)
    assert runner.proc.wait(timeout=30) == 0
    runner.reader.join(5)
    assert "mesh: stopped" in runner.lines[-1]
    assert all(gone(pid) for pid in pids.values()), pids
    assert not list(runner.run_dir.glob("*.pid"))
    taken = [p for p, proto in runner.ports() if meshlib.port_taken("127.0.0.1", p, proto)]
    assert not taken


def test_make_stop_stops_a_runner_left_in_the_background(runner: Runner) -> None:
    runner.wait_for("Ctrl-C (or make stop) stops everything")
    pids = runner.pids()
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.mesh", "--stop", "--run-dir", str(runner.run_dir)],
        cwd=procs.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "stopped: mesh" in result.stdout
    assert runner.proc.wait(timeout=30) == 0
    assert all(gone(pid) for pid in pids.values()), pids


def test_children_of_a_runner_killed_with_sigkill_stop_too(runner: Runner) -> None:
    runner.wait_for("Ctrl-C (or make stop) stops everything")
    pids = runner.pids()
    os.kill(pids["mesh"], signal.SIGKILL)
    runner.proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while not all(gone(pid) for pid in pids.values()):
        assert time.monotonic() < deadline, pids
        time.sleep(0.1)


def test_the_runner_refuses_a_taken_port_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run_dir = tmp_path / "run"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtest.mesh",
                "--nodes",
                "2",
                "--http-port",
                str(port),
                "--tcp-port",
                str(procs.free_port()),
                "--node-port-base",
                str(free_base(2)),
                "--node-tcp-base",
                str(free_base(2)),
                "--run-dir",
                str(run_dir),
            ],
            cwd=procs.ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2
    assert f"tcp port {port} on 127.0.0.1, for nginx HTTP (--http-port), is already in use" in (
        result.stderr
    )
    assert not list(run_dir.glob("*.pid"))
