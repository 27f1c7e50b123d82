"""Start and stop the processes that benchmarks and end-to-end tests need, by PID.

Shared by `loadtest.bench`, `loadtest.check` and the e2e tests: a free loopback port, a node.py
process that is ready when /health answers, an nginx with a config of our own, a redis-server.
Everything started here is started and stopped through `loadtest.supervise`: by PID (SIGTERM,
then SIGKILL), never by name.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loadtest import supervise
from loadtest.supervise import stop as stop  # procs.stop(proc): SIGTERM, then SIGKILL

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


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections' source ports."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports handed out by this process: a plan asks for several before any is bound.
_given: set[int] = set()
_pick = random.Random()  # spreads test ports; not for anything secret


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (nodes gossip on UDP at the HTTP port).

    Chosen below the kernel's ephemeral range, never by binding port 0: a port from that range
    can be taken as the source port of an outgoing connection (nodes open many) between the
    moment it is handed out and the moment nginx or a node binds it, and the bind then fails.
    """
    low, high = 10000, _ephemeral_low() - 1
    for _ in range(1000):
        port = _pick.randint(low, high)
        if port in _given:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{high}")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until GET url answers 200; supervise.NotReady if `proc` exits first, TimedOut (a
    TimeoutError) after `timeout` seconds."""
    watch = {} if proc is None else {f"PID {proc.pid}": proc}
    supervise.wait_until(lambda: supervise.http_ok(url), f"{url} to answer", timeout, watch=watch)


@dataclass
class NodeProc:
    port: int
    tcp_port: int
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    resp_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_node(
    *args: str,
    port: int | None = None,
    tcp_port: int | None = None,
    resp_port: int | None = None,
    name: str | None = None,
    log_dir: Path | None = None,
    wait: bool = True,
    env: dict[str, str] | None = None,
) -> NodeProc:
    port = port or free_port()
    tcp_port = free_port() if tcp_port is None else tcp_port
    resp_port = free_port() if resp_port is None else resp_port  # never the fixed 6379
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
        "--resp-port",
        str(resp_port),
        "--name",
        name,
        *args,
    ]
    proc = supervise.spawn(cmd, output=log, cwd=ROOT, env=env)
    node = NodeProc(port, tcp_port, name, proc, log, resp_port)
    if wait:
        _serving(proc, node.url + "/health")
    return node


def _serving(proc: subprocess.Popen[bytes], url: str, timeout: float = 15.0) -> None:
    """Until GET url answers 200; `proc` is stopped if it never does."""
    supervise.wait_ready(proc, lambda: supervise.http_ok(url), f"{url} to answer", timeout)


@contextlib.contextmanager
def nodes(count: int, *args: str) -> Iterator[list[NodeProc]]:
    started: list[NodeProc] = []
    try:
        for _ in range(count):
            started.append(start_node(*args))
        yield started
    finally:
        stop([n.proc for n in started])


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
    proc = supervise.spawn(
        [binary, "-p", str(workdir), "-c", str(conf)], output=workdir / "stderr.log"
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
    _serving(ng.proc, f"http://127.0.0.1:{port}/")
    return ng


def start_redis(port: int, *args: str, timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """A redis-server without persistence, ready when it answers PING (not -LOADING); `args`
    (e.g. "--appendonly", "yes", "--dir", DIR) are added after the defaults and override them."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    defaults = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    # Its working directory is a temporary one: a replica's full sync writes dump.rdb there.
    proc = supervise.spawn(
        [binary, *defaults, *args], cwd=Path(tempfile.mkdtemp(prefix="kvredis-"))
    )
    supervise.wait_ready(proc, lambda: _redis_pong(port), "redis-server to answer PING", timeout)
    return proc


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- PostgreSQL -----------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """Where Debian's PostgreSQL server programs are (initdb, pg_ctl), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parent)
    return found[-1].parent if found else None


@dataclass
class Postgres:
    """A private PostgreSQL server of our own: its own data directory, port and socket.

    `durable` False (tests, benchmarks): fsync and full-page writes off, as nothing in it has to
    survive the machine; True (`make run`'s database in run/postgres): PostgreSQL's defaults."""

    base: Path
    port: int
    bindir: Path
    user: str | None  # the system user the server runs as (postgres when we are root)
    durable: bool = False

    @property
    def url(self) -> str:
        return f"postgresql://kvmesh@127.0.0.1:{self.port}/postgres"

    @property
    def pid_file(self) -> Path:
        return self.base / "data" / "postmaster.pid"

    @property
    def log(self) -> Path:
        return self.base / "log"

    def _run(self, *cmd: str) -> subprocess.CompletedProcess[bytes]:
        full = [str(self.bindir / cmd[0]), *cmd[1:]]
        if self.user is not None:
            full = ["runuser", "-u", self.user, "--", *full]
        return subprocess.run(full, capture_output=True, check=False, stdin=subprocess.DEVNULL)

    def initialized(self) -> bool:
        return (self.base / "data" / "PG_VERSION").exists()

    def create(self) -> bool:
        """initdb into BASE/data unless a cluster is there already (True if it made one):
        superuser `kvmesh`, trust on local connections. As root the server runs as the
        `postgres` user (PostgreSQL refuses to run as root), which then owns BASE."""
        self.base.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            shutil.chown(self.base, self.user)
        if self.initialized():
            return False
        done = self._run(
            "initdb", "-D", str(self.base / "data"), "-U", "kvmesh", "-A", "trust",
            "-E", "UTF8", "--locale", "C", *([] if self.durable else ["--no-sync"]),
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode()}")
        return True

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            opts += " -c fsync=off -c full_page_writes=off"
        done = self._run(
            "pg_ctl", "-D", str(self.base / "data"), "-o", opts, "-l", str(self.log),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {done.stderr.decode()}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: signals the server's PID (from its postmaster.pid) and waits."""
        self._run("pg_ctl", "-D", str(self.base / "data"), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        """Does the server of BASE/data run (pg_ctl status, by its postmaster.pid)?"""
        return self._run("pg_ctl", "-D", str(self.base / "data"), "status").returncode == 0


def postgres_in(base: Path, port: int, durable: bool = False) -> Postgres:
    """The PostgreSQL server whose files are (or will be) in `base`, on `port`: nothing is
    created or started yet (`create`, then `start`)."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (make install-system installs it)")
    user = "postgres" if os.geteuid() == 0 else None
    return Postgres(base, port, bindir, user, durable)


def start_postgres() -> Postgres:
    """initdb into a fresh temporary directory and start the server on a free port."""
    pg = postgres_in(Path(tempfile.mkdtemp(prefix="kvpg-")), free_port())
    pg.create()
    pg.start()
    return pg


def remove_postgres(pg: Postgres) -> None:
    pg.stop("immediate")
    shutil.rmtree(pg.base, ignore_errors=True)
