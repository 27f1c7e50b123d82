"""Start and stop the processes that benchmarks and end-to-end tests need, by PID.

Shared by `loadtest.bench`, `loadtest.check` and the e2e tests: a free loopback port, a node.py
process that is ready when /health answers, an nginx with a config of our own, a redis-server.
Everything started here is stopped by PID (SIGTERM, then SIGKILL), never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# node.py options for tests and quick runs: membership and repair in fractions of a second
# (probe every 0.2 s instead of 1 s), so a crash is detected and repaired within seconds.
FAST_MESH_ARGS: tuple[str, ...] = (
    "--probe-interval",
    "0.2",
    "--probe-timeout",
    "0.1",
    "--gossip-interval",
    "0.05",
    "--push-pull-interval",
    "1",
    "--antientropy-interval",
    "0.5",
    "--replication-timeout",
    "1",
)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (nodes gossip on UDP at the HTTP port)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout}s")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop one process we started: SIGTERM, wait, SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class NodeProc:
    port: int
    tcp_port: int
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_node(
    *args: str,
    port: int | None = None,
    tcp_port: int | None = None,
    name: str | None = None,
    log_dir: Path | None = None,
    wait: bool = True,
    env: dict[str, str] | None = None,
) -> NodeProc:
    port = port or free_port()
    tcp_port = free_port() if tcp_port is None else tcp_port
    name = name or f"n{port}"
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="kvnode-"))
    log = log_dir / f"{name}.log"
    cmd = [
        sys.executable,
        str(ROOT / "node.py"),
        "--port",
        str(port),
        "--tcp-port",
        str(tcp_port),
        "--name",
        name,
        *args,
    ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})}
        )
    node = NodeProc(port, tcp_port, name, proc, log)
    if wait:
        try:
            wait_http(node.url + "/health", proc=proc)
        except Exception:
            stop(proc)
            raise
    return node


@contextlib.contextmanager
def nodes(count: int, *args: str) -> Iterator[list[NodeProc]]:
    started: list[NodeProc] = []
    try:
        for _ in range(count):
            started.append(start_node(*args))
        yield started
    finally:
        for n in started:
            stop(n.proc)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)


def start_nginx(conf_body: str, workdir: Path | None = None) -> Nginx:
    """Run nginx in the foreground with `conf_body` (the parts inside the main context, after
    the daemon/pid/error_log lines this function writes)."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (make install-system installs it)")
    workdir = workdir or Path(tempfile.mkdtemp(prefix="kvnginx-"))
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"daemon off;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log warn;\n" + conf_body
    )
    proc = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "stderr.log", "wb"),  # noqa: SIM115 - the child keeps it open
    )
    return Nginx(proc, workdir)


def static_nginx(port: int, body: str = '{"key":"k","value":"v"}') -> Nginx:
    """One nginx worker answering every request with a static 200: the benchmark ceiling."""
    conf = (
        "worker_processes 1;\n"
        "events { worker_connections 4096; }\n"
        "http {\n  access_log off;\n"
        f"  client_body_temp_path {tempfile.gettempdir()};\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ default_type application/json; "
        f"return 200 '{body}'; }} }}\n}}\n"
    )
    ng = start_nginx(conf)
    wait_http(f"http://127.0.0.1:{port}/", proc=ng.proc)
    return ng


def start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise TimeoutError("redis-server did not start")
