"""`make run`: a local mesh of N nodes behind nginx, in the foreground, like `docker compose up`.

    python -m loadtest.mesh [--nodes 3] [--http-port 8080] [--tcp-port 9888]
    python -m loadtest.mesh --persist              # PERSIST=1 make run: replicas in run/data/
    python -m loadtest.mesh --postgres             # STORE=postgres make run: database mode
    python -m loadtest.mesh --store postgresql://USER@HOST:PORT/DB   # an existing database
    python -m loadtest.mesh --stop                 # make stop: a run left in the background
    python -m loadtest.mesh --reuse --quiet -- CMD  # run CMD against a mesh (make stress)
    python -m loadtest.mesh --render-docker-conf   # print nginx/docker.conf

Node i (1-based) listens on HTTP (and gossip UDP) port `--node-port-base + i` and on line-protocol
port `--node-tcp-base + i`; nginx listens on the public ports and balances over all nodes. Every
node is started with `--join` of all the others, at once, as in docker-compose: the mesh forms as
soon as two answer, and a node restarted later rejoins through any survivor.

Each node's log lines are printed with its name in front (nginx's as `nginx`). Ctrl-C (SIGINT),
SIGTERM or SIGHUP stops every process this started, nginx first, then the nodes, and the ports are
free when it returns. The children run in their own session, so a Ctrl-C reaches only this runner,
which stops them in order; on Linux they also get SIGTERM if the runner itself is killed
(`setpriv --pdeathsig`). PID files go to the run directory so that `--stop` (make stop) can stop a
run left in the background, by PID, after checking each PID is still the process it recorded.
Starting, waiting and stopping are `loadtest.supervise`'s.

With `--persist` (PERSIST=1 make run) node NAME keeps its replica on disk in RUN_DIR/data/NAME
(`--data-dir`; `--data-root DIR` puts them elsewhere): a mesh stopped and started again, or a node
killed and restarted, comes back with its data. Nothing removes those directories but you.

Database mode: with `--postgres` (STORE=postgres make run) a PostgreSQL server of our own keeps
its files in RUN_DIR/postgres (initdb the first time, as the `postgres` user when run as root; kept
across runs like --persist's directories) and listens on 127.0.0.1:`--postgres-port` (15432); it
is started before the nodes and stopped after them with `pg_ctl stop` (by its postmaster.pid, as
`--stop` does for a run that was killed). Every node gets `--store` with its URL and keeps nothing
itself; `--store URL` points the nodes at a database of your own instead. nginx is configured as
in memory mode: a door that database mode does not serve yet (the nodes leave its port closed;
RESP at least) keeps its stream port, which closes every connection, and the banner says which.
In database mode each node is also a `backup` server of nginx's HTTP upstream, never marked
failed: when every node answers 503 because the shared database is away, nginx passes on a node's
own answer (503 STORAGE_UNAVAILABLE) instead of its HTML 502 "no live upstreams".

A port already taken is reported before anything starts, with the option that moves it, and the
exit status is 2. A node that dies while the mesh runs is reported and the others keep serving
(`--restart` starts it again, as a compose restart policy would).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from loadtest import procs, supervise
from loadtest.supervise import STOP_TIMEOUT
from loadtest.supervise import Interrupted as Interrupted  # raised while the mesh starts

TEMPLATE = procs.ROOT / "nginx" / "kvmesh.conf.template"
DOCKER_CONF = procs.ROOT / "nginx" / "docker.conf"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
SERVER_OPTIONS = "max_fails=1 fail_timeout=2s"
# Database mode: the nodes again, as backup servers, used only while every node is marked failed.
# A 503 from a node there means the shared database is away and every node answers the same;
# max_fails=0 keeps the backups from being marked failed, and there are as many backup entries as
# nginx may try (proxy_next_upstream_tries: a node listed twice if need be), because nginx that
# still has a try left but no server to try answers its own 502 "no live upstreams" instead of
# passing on the last node's answer.
BACKUP_OPTIONS = "max_fails=0 backup"
POSTGRES_PORT = 15432  # make run's PostgreSQL (STORE=postgres; PG_PORT= moves it)
START_TIMEOUT = 30.0  # seconds for every node to answer /health with 200 (joined and synced)
EXIT_PORT_TAKEN = 2
COLORS = ("36", "33", "32", "35", "34", "91", "92", "93", "94", "95", "96")


# --- the balancer's configuration (pure) ----------------------------------------------------------


# RESP (Redis protocol) clients keep a connection for a long time, as line-protocol clients do.
RESP_STREAM = """    upstream kv_resp {{
        # RESP (redis-cli, redis-benchmark, client libraries): balanced per connection.
{servers}
    }}
    server {{
        listen {listen};
        proxy_pass kv_resp;
        proxy_next_upstream on;
        proxy_next_upstream_tries 3;
        proxy_connect_timeout 1s;
        proxy_timeout 10m;
    }}"""


def render_nginx(
    http_listen: str,
    tcp_listen: str,
    http_nodes: Sequence[str],
    tcp_nodes: Sequence[str],
    workers: str = "1",
    stream_module: Path | None = STREAM_MODULE,
    resp_listen: str | None = None,
    resp_nodes: Sequence[str] = (),
    http_backups: bool = False,
) -> str:
    """The balancer config for these nodes, from nginx/kvmesh.conf.template.

    `stream_module` is loaded with `load_module` when the file exists (Debian builds the stream
    module as a separate package); None for nginx builds that have it compiled in (the official
    image). `http_backups` (database mode): every HTTP node again as a `backup` server that is
    never marked failed (BACKUP_OPTIONS), so that when all of them answer 503 (the shared database
    is away) the client gets a node's answer, not nginx's 502 "no live upstreams".
    """
    load = ""
    if stream_module is not None and stream_module.exists():
        load = f"load_module {stream_module};"

    def servers(addresses: Sequence[str], options: str = SERVER_OPTIONS) -> str:
        return "\n".join(f"        server {a} {options};" for a in addresses)

    text = TEMPLATE.read_text()
    http_servers = servers(http_nodes)
    if http_backups and len(http_nodes) > 1:  # nginx never marks a single server failed
        found = re.search(r"proxy_next_upstream_tries (\d+);", text)
        tries = int(found.group(1)) if found else len(http_nodes)
        backups = [http_nodes[i % len(http_nodes)] for i in range(max(tries, len(http_nodes)))]
        http_servers += "\n" + servers(backups, BACKUP_OPTIONS)

    resp = ""
    if resp_listen is not None:
        resp = RESP_STREAM.format(servers=servers(resp_nodes), listen=resp_listen)
    for placeholder, value in {
        "{{RESP_STREAM}}": resp,
        "{{LOAD_STREAM_MODULE}}": load,
        "{{WORKERS}}": workers,
        "{{HTTP_SERVERS}}": http_servers,
        "{{TCP_SERVERS}}": servers(tcp_nodes),
        "{{HTTP_LISTEN}}": http_listen,
        "{{TCP_LISTEN}}": tcp_listen,
    }.items():
        text = text.replace(placeholder, value)
    return text


def render_docker_conf() -> str:
    """nginx/docker.conf: the template for docker-compose (official nginx image, stream built in).

    The upstreams name the compose service `node`: nginx resolves it to every node container's
    address when it starts (so restart nginx after `--scale`). The image's command supplies
    `daemon off;`, its own pid file and error log.
    """
    header = (
        "# GENERATED from kvmesh.conf.template by `python -m loadtest.mesh --render-docker-conf`;\n"
        "# edit the template, then regenerate. docker-compose mounts it as /etc/nginx/nginx.conf.\n"
    )
    return header + render_nginx(
        "8080",
        "9888",
        ["node:8080"],
        ["node:9888"],
        workers="auto",
        stream_module=None,
        resp_listen="6379",
        resp_nodes=["node:6379"],
    )


# --- the plan: which processes on which ports (pure) ----------------------------------------------


@dataclass(frozen=True)
class NodeSpec:
    name: str
    port: int  # HTTP, and gossip over UDP on the same number
    tcp_port: int  # line protocol
    resp_port: int  # RESP


@dataclass(frozen=True)
class Plan:
    host: str
    http_port: int
    tcp_port: int
    nodes: tuple[NodeSpec, ...]
    node_args: tuple[str, ...] = ()
    resp_port: int = 6379
    data_root: Path | None = None  # each node keeps its replica in data_root/<name> (--data-dir)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def store(self) -> str | None:
        """The database the nodes keep their data in (node.py --store), or None: the mesh."""
        store = None
        for i, arg in enumerate(self.node_args):
            if arg == "--store" and i + 1 < len(self.node_args):
                store = self.node_args[i + 1]
            elif arg.startswith("--store="):
                store = arg.split("=", 1)[1]
        return None if store in (None, "memory") else store

    @property
    def database(self) -> bool:
        """Database mode: stateless nodes over one shared database (node.py --store)."""
        return self.store is not None

    def data_dir(self, spec: NodeSpec) -> Path | None:
        return None if self.data_root is None else self.data_root / spec.name

    def node_command(self, spec: NodeSpec) -> list[str]:
        seeds = [f"{self.host}:{n.port}" for n in self.nodes if n is not spec]
        data_dir = self.data_dir(spec)
        return [
            sys.executable,
            str(procs.ROOT / "node.py"),
            "--name",
            spec.name,
            "--host",
            self.host,
            "--port",
            str(spec.port),
            "--tcp-port",
            str(spec.tcp_port),
            "--resp-port",
            str(spec.resp_port),
            *(["--join", ",".join(seeds)] if seeds else []),
            *(["--data-dir", str(data_dir)] if data_dir is not None else []),
            *self.node_args,
        ]

    def nginx_conf(self) -> str:
        return render_nginx(
            f"{self.host}:{self.http_port}",
            f"{self.host}:{self.tcp_port}",
            [f"{self.host}:{n.port}" for n in self.nodes],
            [f"{self.host}:{n.tcp_port}" for n in self.nodes],
            resp_listen=f"{self.host}:{self.resp_port}",
            resp_nodes=[f"{self.host}:{n.resp_port}" for n in self.nodes],
            http_backups=self.database,
        )

    def ports(self) -> list[tuple[int, str, str]]:
        """(port, protocol, what uses it) for every port this plan binds."""
        out = [
            (self.http_port, "tcp", "nginx HTTP (--http-port)"),
            (self.tcp_port, "tcp", "nginx line protocol (--tcp-port)"),
            (self.resp_port, "tcp", "nginx RESP (--resp-port, RESP_PORT= for make run)"),
        ]
        for n in self.nodes:
            out.append((n.port, "tcp", f"{n.name} HTTP (--node-port-base)"))
            out.append((n.port, "udp", f"{n.name} gossip (--node-port-base)"))
            out.append((n.tcp_port, "tcp", f"{n.name} line protocol (--node-tcp-base)"))
            out.append((n.resp_port, "tcp", f"{n.name} RESP (--node-resp-base)"))
        return out


def make_plan(
    nodes: int,
    host: str = "127.0.0.1",
    http_port: int = 8080,
    tcp_port: int = 9888,
    node_port_base: int = 18080,
    node_tcp_base: int = 19880,
    node_args: Sequence[str] = (),
    resp_port: int = 6379,
    node_resp_base: int = 16379,
    data_root: Path | None = None,
) -> Plan:
    specs = tuple(
        NodeSpec(f"node{i}", node_port_base + i, node_tcp_base + i, node_resp_base + i)
        for i in range(1, nodes + 1)
    )
    return Plan(host, http_port, tcp_port, specs, tuple(node_args), resp_port, data_root)


def free_plan(nodes: int, node_args: Sequence[str] = (), data_root: Path | None = None) -> Plan:
    """A plan on free loopback ports (tests, the checker): nothing fixed, nothing shared.
    With `data_root`, node i keeps its replica on disk in data_root/node<i>."""
    specs = tuple(
        NodeSpec(f"node{i}", procs.free_port(), procs.free_port(), procs.free_port())
        for i in range(1, nodes + 1)
    )
    return Plan(
        "127.0.0.1",
        procs.free_port(),
        procs.free_port(),
        specs,
        tuple(node_args),
        procs.free_port(),
        data_root,
    )


# --- ports ----------------------------------------------------------------------------------------


def port_taken(host: str, port: int, proto: str) -> bool:
    """True if binding (host, port) fails. TCP is tried with SO_REUSEADDR, as nginx and aiohttp
    bind, so a port left in TIME_WAIT by a previous run does not count as taken."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if proto == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def taken_ports(plan: Plan) -> list[str]:
    """A sentence for each port of the plan that something else holds."""
    problems = []
    seen: set[tuple[int, str]] = set()
    for port, proto, what in plan.ports():
        if (port, proto) in seen:
            raise SystemExit(f"mesh: port {port} is planned twice; choose other port bases")
        seen.add((port, proto))
        if not 0 < port < 65536:
            problems.append(f"port {port} for {what} is out of range")
        elif port_taken(plan.host, port, proto):
            problems.append(f"{proto} port {port} on {plan.host}, for {what}, is already in use")
    return problems


# --- PID files ------------------------------------------------------------------------------------


def _is_ours(pid: int, pid_file: Path) -> bool:
    """Does `pid` run and is it still the process its PID file recorded (not a reused PID)?"""
    if not supervise.alive(pid):
        return False
    cmd = supervise.cmdline(pid)
    if pid_file.stem == "mesh":
        return "loadtest.mesh" in cmd
    if pid_file.stem == "nginx":
        return "nginx" in cmd
    return "node.py" in cmd and f"--name {pid_file.stem} " in cmd + " "


def stop_recorded(run_dir: Path, timeout: float = STOP_TIMEOUT) -> list[str]:
    """make stop: stop what the PID files in run_dir name, by PID; returns what was stopped.

    The runner first (it stops its children in order), then anything left (a runner that was
    killed with -9 leaves its children behind). A PID that no longer runs what it recorded is
    left alone and its file removed.
    """
    stopped: list[str] = []
    recorded = supervise.read_pid_files(run_dir)
    runner = [(f, p) for f, p in recorded if f.stem == "mesh"]
    rest = [(f, p) for f, p in recorded if f.stem != "mesh"]
    for group, grace in ((runner, timeout + 5), (rest, timeout)):
        ours = [(f, supervise.Pid.of(pid)) for f, pid in group if _is_ours(pid, f)]
        stopped += [f"{f.stem} (PID {p.pid})" for f, p in ours]
        supervise.stop([p for _, p in ours], grace)
        for pid_file, pid in group:
            if not _is_ours(pid, pid_file):
                pid_file.unlink(missing_ok=True)
    pg = recorded_postgres(run_dir)  # --postgres: the runner stops it, unless it was killed
    if pg is not None and pg.running():
        pid = pg.pid_file.read_text().split("\n", 1)[0].strip()
        pg.stop()
        stopped.append(f"postgres (PID {pid})")
    return stopped


def recorded_postgres(run_dir: Path) -> procs.Postgres | None:
    """The PostgreSQL server of RUN_DIR/postgres (--postgres), if it left a postmaster.pid."""
    base = run_dir / "postgres"
    if procs.postgres_bindir() is None or not (base / "data" / "postmaster.pid").exists():
        return None
    return procs.postgres_in(base, POSTGRES_PORT, durable=True)


def running_runner(run_dir: Path) -> int | None:
    pid_file = run_dir / "mesh.pid"
    for f, pid in supervise.read_pid_files(run_dir):
        if f == pid_file and pid != os.getpid() and _is_ours(pid, f):
            return pid
    return None


# --- health ---------------------------------------------------------------------------------------


def health(url: str, timeout: float = 1.0) -> dict[str, object] | None:
    """The JSON of GET url/health when it answers 200, else None."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=timeout) as r:
            body = json.loads(r.read())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def is_kvmesh(url: str) -> bool:
    """Does a ready kvmesh node (or a balancer in front of them) answer at `url`?"""
    body = health(url)
    return body is not None and body.get("status") == "ok" and "members" in body


# --- the running mesh -----------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    cmd: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    reported: bool = False


@dataclass
class Mesh:
    """The processes of one plan: start, watch, stop; output prefixed or into log files."""

    plan: Plan
    run_dir: Path
    quiet: bool = False
    restart: bool = False
    stopping: threading.Event = field(default_factory=threading.Event)
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    children: dict[str, Child] = field(default_factory=dict)
    postgres: procs.Postgres | None = None  # --postgres: started first, stopped last
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _postgres_started: bool = False

    # Output ---------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def _prefix(self, name: str) -> str:
        width = max(len(c) for c in (*self.children, "nginx"))
        label = f"{name:<{width}} |"
        if self.out.isatty() and not os.environ.get("NO_COLOR"):
            names = sorted(self.children)
            color = COLORS[names.index(name) % len(COLORS)] if name in names else "90"
            label = f"\033[{color}m{label}\033[0m"
        return label

    def _printer(self, name: str) -> Callable[[str], None]:
        prefix = self._prefix(name)
        return lambda line: self.say(f"{prefix} {line}")

    # Processes ------------------------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        child.proc = supervise.spawn(
            child.cmd,
            output=self.run_dir / f"{child.name}.log" if self.quiet else self._printer(child.name),
            cwd=procs.ROOT,
            session=True,  # Ctrl-C reaches the runner only; it stops them in order
            die_with_parent=True,  # if the runner dies without cleaning up (kill -9): SIGTERM
            pid_file=self.run_dir / f"{child.name}.pid",
        )
        child.reported = False

    def start_postgres(self) -> None:
        """--postgres: initdb into its directory the first time, then pg_ctl start (waits until
        it accepts connections)."""
        pg = self.postgres
        if pg is None:
            return
        if not pg.initialized():
            self.say(f"mesh: creating a PostgreSQL cluster in {pg.base / 'data'} (initdb)")
        pg.create()
        self.say(f"mesh: starting PostgreSQL on 127.0.0.1:{pg.port} (log: {pg.log})")
        pg.start()
        self._postgres_started = True

    def respawn(self, name: str) -> None:
        """Start a child again with the same command (the same name and ports)."""
        self._spawn(self.children[name])

    def start_nodes(self) -> None:
        for spec in self.plan.nodes:
            child = Child(spec.name, self.plan.node_command(spec))
            self.children[spec.name] = child
        for child in self.children.values():
            self._spawn(child)

    def wait_nodes(self, timeout: float = START_TIMEOUT) -> None:
        """Until every node answers /health 200 with its own name; NotReady if one exits."""
        pending = {n.name: f"http://{self.plan.host}:{n.port}" for n in self.plan.nodes}

        def ready() -> bool:
            for name, url in list(pending.items()):
                body = health(url, timeout=0.5)
                if body is not None and body.get("name") == name:
                    del pending[name]
            return not pending

        supervise.wait_until(
            ready,
            lambda: f"{', '.join(pending)} to become ready",
            timeout,
            watch={n: self.children[n].proc for n in pending},
            stopping=self.stopping,
            interval=0.1,
        )

    def start_nginx(self) -> None:
        binary = procs.nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        conf = self.run_dir / "nginx.conf"
        temp = self.run_dir / "nginx-temp"
        temp.mkdir(exist_ok=True)
        conf.write_text(
            "# Written by loadtest.mesh for this run; the template is nginx/kvmesh.conf.template.\n"
            f"daemon off;\npid {temp / 'nginx.pid'};\nerror_log stderr notice;\n"
            + self.plan.nginx_conf()
        )
        child = Child("nginx", [binary, "-p", str(temp), "-c", str(conf), "-e", "stderr"])
        self.children["nginx"] = child
        self._spawn(child)

    def wait_nginx(self, timeout: float = 10.0) -> None:
        try:
            supervise.wait_until(
                lambda: is_kvmesh(self.plan.url),
                f"nginx to answer on {self.plan.url}",
                timeout,
                watch={"nginx": self.children["nginx"].proc},
                stopping=self.stopping,
            )
        except supervise.NotReady as exc:
            raise supervise.NotReady(f"{exc}{self._log_tail('nginx')}") from None

    def _log_tail(self, name: str, lines: int = 5) -> str:
        """The last lines a quiet child wrote (its log file), to say why it exited."""
        log = self.run_dir / f"{name}.log"
        if not self.quiet or not log.exists():
            return ""
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        return "".join(f"\n  {name} | {line}" for line in tail)

    def check(self) -> bool:
        """Report children that exited (and restart nodes if asked); False if the mesh is down."""
        for child in self.children.values():
            proc = child.proc
            if proc is None or proc.poll() is None or child.reported:
                continue
            child.reported = True
            self.say(f"mesh: {child.name} exited with status {proc.returncode}")
            if child.name != "nginx" and self.restart:
                child.restarts += 1
                self.say(f"mesh: restarting {child.name} (restart {child.restarts})")
                self._spawn(child)
        nginx = self.children.get("nginx")
        if nginx is not None and nginx.proc is not None and nginx.proc.poll() is not None:
            self.say("mesh: nginx is gone; stopping the mesh")
            return False
        nodes = [c for n, c in self.children.items() if n != "nginx"]
        if nodes and all(c.proc is not None and c.proc.poll() is not None for c in nodes):
            self.say("mesh: every node is gone; stopping the mesh")
            return False
        return True

    def stop(self) -> None:
        """nginx first (clients see a closed port, not half a mesh), then the nodes together."""
        for names in (["nginx"], [n for n in self.children if n != "nginx"]):
            supervise.stop(
                [p for n in names if (c := self.children.get(n)) and (p := c.proc) is not None],
                STOP_TIMEOUT,
                on_kill=lambda pid: self.say(f"mesh: PID {pid} ignored SIGTERM; killing it"),
            )
        for child in self.children.values():
            (self.run_dir / f"{child.name}.pid").unlink(missing_ok=True)
        if self.postgres is not None and self._postgres_started:
            self.say("mesh: stopping PostgreSQL (pg_ctl stop)")
            self.postgres.stop()
            self._postgres_started = False

    def _node_ports_open(self, port: Callable[[NodeSpec], int]) -> bool:
        """Does any node accept connections on this port of its own?"""
        for spec in self.plan.nodes:
            try:
                socket.create_connection((self.plan.host, port(spec)), timeout=0.5).close()
            except OSError:
                continue
            return True
        return False

    def banner(self) -> str:
        p = self.plan
        nodes = ", ".join(f"{n.name} {p.host}:{n.port}" for n in p.nodes)
        logs = f"  logs           {self.run_dir}/*.log\n" if self.quiet else ""
        data = f"  data           {p.data_root}/<node> (kept on disk)\n" if p.data_root else ""
        line = (
            f"{p.host}:{p.tcp_port}   (try: printf 'GET hello\\n' | nc -q1 {p.host} {p.tcp_port})"
        )
        resp = f"{p.host}:{p.resp_port}   (try: redis-cli -p {p.resp_port} GET hello)"
        if p.store is not None:
            where = describe_store(p.store)
            if self.postgres is not None:
                where += f" (PostgreSQL in {self.postgres.base}, log {self.postgres.log})"
            data = f"  database       {where}: every node reads and writes it\n"
            # Which doors database mode serves yet: whether the nodes opened their ports.
            closed = "not served in database mode yet ({} closes every connection)"
            if not self._node_ports_open(lambda n: n.tcp_port):
                line = closed.format(f"{p.host}:{p.tcp_port}")
            if not self._node_ports_open(lambda n: n.resp_port):
                resp = closed.format(f"{p.host}:{p.resp_port}")
        return (
            f"\nkvmesh: {len(p.nodes)} node(s) behind nginx\n"
            f"  HTTP           {p.url}   (try: curl '{p.url}/set?k=hello&v=world')\n"
            f"  line protocol  {line}\n"
            f"  RESP (Redis)   {resp}\n"
            f"  nodes          {nodes}\n"
            f"  members        {p.url}/cluster/members\n"
            f"{data}"
            f"{logs}"
            "  Ctrl-C (or make stop) stops everything.\n"
        )


def describe_store(url: str) -> str:
    """A database URL as the banner shows it: host:port/name, never the user or password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


# --- the command line -----------------------------------------------------------------------------


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(
        prog="python -m loadtest.mesh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", type=int, default=int(os.environ.get("N", "3")), help="[3, $N]")
    p.add_argument("--host", default="127.0.0.1", help="address of nginx and the nodes")
    p.add_argument("--http-port", type=int, default=8080, help="nginx HTTP port [8080]")
    p.add_argument("--tcp-port", type=int, default=9888, help="nginx line-protocol port [9888]")
    p.add_argument("--node-port-base", type=int, default=18080, help="node i: HTTP base+i")
    p.add_argument("--node-tcp-base", type=int, default=19880, help="node i: line base+i")
    p.add_argument("--resp-port", type=int, default=6379, help="nginx RESP port [6379]")
    p.add_argument("--node-resp-base", type=int, default=16379, help="node i: RESP base+i")
    p.add_argument("--run-dir", type=Path, default=procs.ROOT / "run", help="PID files, logs")
    p.add_argument("--node-arg", action="append", default=[], help="extra node.py argument")
    p.add_argument(
        "--persist",
        action="store_true",
        help="keep each node's replica on disk in RUN_DIR/data/NAME (node.py --data-dir)",
    )
    p.add_argument(
        "--data-root", type=Path, help="like --persist, in DATA_ROOT/NAME instead of RUN_DIR/data"
    )
    p.add_argument(
        "--store",
        help="database mode: every node keeps its data in this postgresql:// URL (node.py --store)",
    )
    p.add_argument(
        "--postgres",
        action="store_true",
        help="database mode over a PostgreSQL server of our own, its files in RUN_DIR/postgres "
        "(kept across runs), started before the nodes and stopped after them",
    )
    p.add_argument(
        "--postgres-port",
        type=int,
        default=POSTGRES_PORT,
        help=f"--postgres: its port on 127.0.0.1 [{POSTGRES_PORT}]",
    )
    p.add_argument("--restart", action="store_true", help="restart a node that exits")
    p.add_argument("--quiet", action="store_true", help="node logs to RUN_DIR/NAME.log")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="with a command: use the kvmesh already answering on --http-port, if any",
    )
    p.add_argument("--stop", action="store_true", help="stop a run left in the background")
    p.add_argument("--render-docker-conf", action="store_true", help="print nginx/docker.conf")
    args = p.parse_args(argv)
    if args.nodes < 1:
        p.error("--nodes must be at least 1")
    if args.postgres and args.store:
        p.error("--postgres starts a database of its own; --store names another: choose one")
    if (args.postgres or args.store) and (args.persist or args.data_root):
        p.error("in database mode the nodes keep nothing: no --persist or --data-root")
    return args, command


def main(argv: Sequence[str] | None = None) -> int:
    args, command = _parse(sys.argv[1:] if argv is None else argv)
    run_dir: Path = args.run_dir.resolve()
    if args.render_docker_conf:
        sys.stdout.write(render_docker_conf())
        return 0
    if args.stop:
        stopped = stop_recorded(run_dir) if run_dir.exists() else []
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing to stop")
        return 0
    postgres = None
    node_args = list(args.node_arg)
    if args.postgres:
        try:
            postgres = procs.postgres_in(run_dir / "postgres", args.postgres_port, durable=True)
        except RuntimeError as exc:
            print(f"mesh: {exc}", file=sys.stderr)
            return 1
        node_args += ["--store", postgres.url]
    elif args.store:
        node_args += ["--store", args.store]
    plan = make_plan(
        args.nodes,
        args.host,
        args.http_port,
        args.tcp_port,
        args.node_port_base,
        args.node_tcp_base,
        node_args,
        args.resp_port,
        args.node_resp_base,
        data_root(args, run_dir),
    )
    stopping = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stopping.set()

    with supervise.signals_handled(on_signal):
        if command and args.reuse and is_kvmesh(plan.url):
            print(f"mesh: using the kvmesh already answering on {plan.url}", flush=True)
            return _run_command(command, plan, stopping)
        problem = _cannot_start(plan, run_dir, postgres)
        if problem:
            print(problem, file=sys.stderr)
            return EXIT_PORT_TAKEN
        mesh = Mesh(
            plan,
            run_dir,
            quiet=args.quiet,
            restart=args.restart,
            stopping=stopping,
            postgres=postgres,
        )
        with supervise.pid_file(run_dir / "mesh.pid"):
            return _run_mesh(mesh, command, received)


def data_root(args: argparse.Namespace, run_dir: Path) -> Path | None:
    """Where the nodes keep their replicas: --data-root, RUN_DIR/data with --persist, or
    nowhere (in memory only)."""
    if args.data_root is not None:
        root: Path = args.data_root.resolve()
        return root
    return run_dir / "data" if args.persist else None


def _cannot_start(plan: Plan, run_dir: Path, postgres: procs.Postgres | None = None) -> str | None:
    """Why this plan cannot start here (a sentence for the user), or None."""
    if procs.nginx_binary() is None:
        return (
            "mesh: nginx is not installed; run `sudo make install-system` "
            "(apt-get install nginx libnginx-mod-stream)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    other = running_runner(run_dir)
    if other is not None:
        return (
            f"mesh: a mesh is already running from {run_dir} (PID {other}); "
            "stop it with `make stop` first"
        )
    leftovers = stop_recorded(run_dir)  # children of a runner that was killed with -9
    if leftovers:
        print(f"mesh: stopped leftovers of an earlier run: {', '.join(leftovers)}")
    problems = taken_ports(plan)
    if postgres is not None and port_taken("127.0.0.1", postgres.port, "tcp"):
        problems.append(
            f"tcp port {postgres.port} on 127.0.0.1, for PostgreSQL (--postgres-port, "
            "PG_PORT= for make run), is already in use"
        )
    if problems:
        return (
            "mesh: cannot start, ports are taken:\n  "
            + "\n  ".join(problems)
            + "\n  Stop what holds them (`ss -ltnup` shows it) or move ours with the options"
            " named above."
        )
    return None


def _run_mesh(mesh: Mesh, command: list[str], received: list[int]) -> int:
    status = 0
    try:
        mesh.start_postgres()
        mesh.start_nodes()
        mesh.wait_nodes()
        mesh.start_nginx()
        mesh.wait_nginx()
        mesh.say(mesh.banner())
        if command:
            status = _run_command(command, mesh.plan, mesh.stopping)
        else:
            while not mesh.stopping.is_set() and mesh.check():
                mesh.stopping.wait(0.25)
    except Interrupted:
        pass
    except RuntimeError as exc:  # supervise.NotReady: a process exited or never got ready
        mesh.say(f"mesh: {exc}; stopping")
        status = 1
    finally:
        if received:
            mesh.say(f"mesh: {signal.Signals(received[0]).name}: stopping every process")
        mesh.stop()
        mesh.say("mesh: stopped")
    return status


def _run_command(command: list[str], plan: Plan, stopping: threading.Event) -> int:
    """Run `command` with KVMESH_URL and KVMESH_LINE set; its exit status is ours. A signal to
    the runner stops it (SIGTERM) before the mesh is stopped."""
    env = {**os.environ, "KVMESH_URL": plan.url, "KVMESH_LINE": f"{plan.host}:{plan.tcp_port}"}
    try:
        proc = subprocess.Popen(command, env=env)
    except OSError as exc:
        print(f"mesh: cannot run {command[0]}: {exc}", file=sys.stderr)
        return 127
    while True:
        try:
            return proc.wait(0.25)
        except subprocess.TimeoutExpired:
            if stopping.is_set():
                supervise.stop(proc, STOP_TIMEOUT)
                return proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
