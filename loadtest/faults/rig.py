"""The rig: node.py processes in network namespaces of their own, nginx and the clients in a hub.

    with Rig(nodes=3, node_args=FAST) as rig:      # namespaces, bridge, nodes, nginx
        result = rig.run_in_hub(scenario)          # a coroutine, run where it reaches every node

Layout for run R (a random number 1..250 that names everything of this run: parallel runs use
different numbers and never touch each other's namespaces):

    namespace kvf-<R>-hub   bridge br0 10.213.R.254/24, lo up; veth vn1..vnN enslaved to br0;
                            nginx on 127.0.0.1:8080 (HTTP) and :9888 (line protocol) balancing
                            over every node; the clients of a scenario (a thread that setns()
                            into this namespace and runs an asyncio loop)
    namespace kvf-<R>-nI    eth0 10.213.R.I/24 (the other end of vnI), lo up; node.py bound to
                            10.213.R.I: HTTP and gossip on 7000, line protocol on 7001; with
                            `persist`, its replica on disk in LOG_DIR/data/nI (emptied at start)

Nothing is created in the root namespace, and 10.213.R.0/24 exists only inside these namespaces,
so no packet of the rig can leave them. Faults are nft rules inside the node namespaces
(faults.py); the hub's bridge is never touched, so clients reach an isolated node unless a
scenario says otherwise.

Cleanup. Every process is started (`loadtest.supervise.spawn`) with its PID recorded (with its
start time, so that a reused PID is never signalled) in /run/kvf/<R>.json together with the
owner's PID. `Rig.close` (also from atexit and, through `install_signal_handlers`, on
SIGTERM/SIGHUP) kills the processes by PID (`supervise.stop` with no grace: SIGKILL), then deletes
the namespaces. `cleanup_stale()` removes what an earlier run left behind when its owner is gone
(a SIGKILLed orchestrator): the processes of its registry and of `ip netns pids`, then its
namespaces.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from loadtest import supervise
from loadtest.mesh import render_nginx
from loadtest.procs import ROOT, nginx_binary
from loadtest.supervise import Pid

logger = logging.getLogger(__name__)

PREFIX = "kvf-"
REGISTRY = Path("/run/kvf")
SUBNET = "10.213"
HUB_OCTET = 254
HTTP_PORT = 7000  # HTTP and gossip (UDP) of every node, each on its own address
TCP_PORT = 7001  # line protocol of every node
BALANCER_HTTP = "127.0.0.1:8080"  # nginx, on the hub's own loopback
BALANCER_TCP = "127.0.0.1:9888"
IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"
TC = shutil.which("tc") or "/usr/sbin/tc"

_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class RigError(RuntimeError):
    """The rig could not be built (not root, no namespaces, a node that never came up)."""


# --- namespaces -----------------------------------------------------------------------------------


def run_cmd(
    cmd: Sequence[str], input_text: str | None = None, check: bool = True, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run a short command (ip, nft, tc); RigError with its stderr if it fails and `check`."""
    proc = subprocess.run(
        list(cmd), input=input_text, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise RigError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns_list() -> list[str]:
    out = run_cmd([IP, "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(name: str) -> list[int]:
    out = run_cmd([IP, "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def namespaces_available() -> tuple[bool, str]:
    """Whether this machine lets us build the rig, and if not, why (for skip messages)."""
    if os.geteuid() != 0:
        return False, "the fault rig needs root (network namespaces, nft)"
    if not Path(IP).exists():
        return False, "iproute2 (`ip`) is not installed"
    if not Path(NFT).exists():
        return False, "nft is not installed (apt-get install nftables)"
    probe = f"{PREFIX}probe-{os.getpid()}"
    added = run_cmd([IP, "netns", "add", probe], check=False)
    if added.returncode != 0:
        return False, f"`ip netns add` is not permitted here: {added.stderr.strip()}"
    try:
        table = run_cmd(
            [IP, "netns", "exec", probe, NFT, "add", "table", "inet", "kvfprobe"], check=False
        )
        if table.returncode != 0:
            return False, f"nft does not work in a namespace: {table.stderr.strip()}"
    finally:
        run_cmd([IP, "netns", "del", probe], check=False)
    return True, ""


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Move the calling *thread* into network namespace `name` (sockets it opens live there)."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)


# --- the registry of what a run started -----------------------------------------------------------


def _kill(pids: Sequence[Pid]) -> None:
    """SIGKILL at once, by PID, those that still run what they recorded."""
    supervise.stop(pids, timeout=0)


def _netns_kill(ns: str) -> None:
    """Kill whatever runs in namespace `ns` (all of it was started by the rig)."""
    _kill([Pid.of(pid) for pid in netns_pids(ns)])


def _run_of(netns: str) -> str | None:
    if not netns.startswith(PREFIX):
        return None
    rest = netns[len(PREFIX) :]
    run, sep, _ = rest.partition("-")
    return run if sep and run.isdigit() else None


def cleanup_stale(verbose: bool = True) -> list[str]:
    """Remove namespaces and processes of earlier runs whose owner process is gone.

    A run is identified by the prefix `kvf-<R>-`; its registry file says which process owns it.
    Live runs (owner alive, same start time) are left alone. Returns the namespaces removed.
    """
    removed: list[str] = []
    runs: dict[str, list[str]] = {}
    for ns in netns_list():
        run = _run_of(ns)
        if run is not None:
            runs.setdefault(run, []).append(ns)
        elif ns.startswith(f"{PREFIX}probe-"):
            owner = ns.rsplit("-", 1)[1]
            if owner.isdigit() and supervise.start_time(int(owner)) is None:
                run_cmd([IP, "netns", "del", ns], check=False)
    if REGISTRY.exists():
        for entry in REGISTRY.glob("*.json"):
            runs.setdefault(entry.stem, [])
    for run, namespaces in sorted(runs.items()):
        record = _read_registry(run)
        owner_of_run = record.get("owner")
        if owner_of_run is not None and Pid(int(owner_of_run[0]), owner_of_run[1]).running():
            continue  # a run in progress (perhaps in parallel): not ours to touch
        _kill([Pid(int(pid), start) for pid, start in record.get("pids", [])])
        for ns in namespaces:
            _netns_kill(ns)
        for ns in namespaces:
            run_cmd([IP, "netns", "del", ns], check=False)
            removed.append(ns)
        (REGISTRY / f"{run}.json").unlink(missing_ok=True)
    if removed and verbose:
        logger.warning("removed leftovers of earlier fault runs: %s", ", ".join(removed))
    return removed


def _read_registry(run: str) -> dict[str, Any]:
    try:
        data = json.loads((REGISTRY / f"{run}.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- the rig --------------------------------------------------------------------------------------


@dataclass
class NodeProc:
    """One node: where it lives and, while it runs, its process."""

    name: str
    index: int
    ip: str
    netns: str
    log: Path
    args: tuple[str, ...] = ()  # the extra arguments it was last started with
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0

    @property
    def address(self) -> str:
        return f"{self.ip}:{HTTP_PORT}"

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{HTTP_PORT}"

    @property
    def tcp(self) -> tuple[str, int]:
        return self.ip, TCP_PORT

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Rig:
    """Namespaces, a bridge, N node.py processes and nginx; removed again by `close`."""

    nodes_count: int = 3
    node_args: tuple[str, ...] = ()
    log_dir: Path | None = None
    balancer: bool = True
    persist: bool = False  # each node keeps its replica in LOG_DIR/data/<name> (--data-dir)
    run: int = 0
    nodes: dict[str, NodeProc] = field(default_factory=dict)
    nginx: subprocess.Popen[bytes] | None = None
    _pids: list[Pid] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- naming ---------------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.run}-"

    @property
    def hub(self) -> str:
        return f"{self.prefix}hub"

    @property
    def hub_ip(self) -> str:
        return f"{SUBNET}.{self.run}.{HUB_OCTET}"

    @property
    def balancer_url(self) -> str:
        return f"http://{BALANCER_HTTP}"

    @property
    def balancer_tcp(self) -> tuple[str, int]:
        host, port = BALANCER_TCP.rsplit(":", 1)
        return host, int(port)

    def names(self) -> list[str]:
        return list(self.nodes)

    @property
    def data_root(self) -> Path:
        """Where the nodes keep their replicas when `persist` (one directory per node)."""
        assert self.log_dir is not None
        return self.log_dir / "data"

    def node(self, name: str) -> NodeProc:
        return self.nodes[name]

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Rig:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        ok, why = namespaces_available()
        if not ok:
            raise RigError(why)
        cleanup_stale()
        atexit.register(self.close)
        self._create_network()
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix=f"kvfaults-{self.run}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.persist:
            shutil.rmtree(self.data_root, ignore_errors=True)  # an earlier run's: start empty
        for i in range(1, self.nodes_count + 1):
            name = f"n{i}"
            self.nodes[name] = NodeProc(
                name, i, f"{SUBNET}.{self.run}.{i}", f"{self.prefix}{name}", self.log_dir / name
            )
        first = self.nodes["n1"]
        for node in self.nodes.values():
            join = () if node is first else (first.address,)
            self.start_node(node.name, join=join)
        for node in self.nodes.values():
            self.wait_http(node, "/health")
        if self.balancer and nginx_binary() is not None:
            self._start_nginx()

    def close(self) -> None:
        """Kill every process of this run by PID, delete its namespaces. Idempotent."""
        with self._lock:
            if self._closed or self.run == 0:
                return
            self._closed = True
        # The processes running now (reaped here), then any earlier ones still there, by PID.
        running = [n.proc for n in self.nodes.values() if n.proc is not None]
        supervise.stop([p for p in (self.nginx, *running) if p is not None], timeout=0)
        _kill(self._pids[::-1])
        for ns in reversed(self._namespaces):
            _netns_kill(ns)  # anything else that ended up in there was started by us
            run_cmd([IP, "netns", "del", ns], check=False)
        (REGISTRY / f"{self.run}.json").unlink(missing_ok=True)
        atexit.unregister(self.close)

    def _register(self) -> None:
        REGISTRY.mkdir(parents=True, exist_ok=True)
        me = os.getpid()
        record = {
            "owner": [me, supervise.start_time(me)],
            "pids": [[p.pid, p.start] for p in self._pids],
            "netns": self._namespaces,
        }
        tmp = REGISTRY / f"{self.run}.json.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(REGISTRY / f"{self.run}.json")

    def _create_network(self) -> None:
        """Claim a run number (its hub namespace is the lock), then build the network."""
        taken = {_run_of(ns) for ns in netns_list()}
        candidates = [r for r in range(1, 251) if str(r) not in taken]
        random.shuffle(candidates)
        for run in candidates:
            if run_cmd([IP, "netns", "add", f"{PREFIX}{run}-hub"], check=False).returncode == 0:
                self.run = run
                break
        else:
            raise RigError("no free run number for the fault rig")
        self._namespaces.append(self.hub)
        self._register()
        names = [f"n{i}" for i in range(1, self.nodes_count + 1)]
        for name in names:
            run_cmd([IP, "netns", "add", f"{self.prefix}{name}"])
            self._namespaces.append(f"{self.prefix}{name}")
        self._register()
        hub = [
            "link set lo up",
            "link add br0 type bridge",
            f"addr add {self.hub_ip}/24 dev br0",
            "link set br0 up",
        ]
        for name in names:
            hub += [
                f"link add v{name} type veth peer name eth0 netns {self.prefix}{name}",
                f"link set v{name} master br0",
                f"link set v{name} up",
            ]
        run_cmd([IP, "-n", self.hub, "-batch", "-"], "\n".join(hub) + "\n")
        for i, name in enumerate(names, start=1):
            inner = [
                "link set lo up",
                f"addr add {SUBNET}.{self.run}.{i}/24 dev eth0",
                "link set eth0 up",
            ]
            run_cmd([IP, "-n", f"{self.prefix}{name}", "-batch", "-"], "\n".join(inner) + "\n")

    def _spawn(self, netns: str, cmd: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Start `cmd` in namespace `netns`, output appended to `log`, its PID in the registry.

        `ip netns exec` execs the command itself: the PID is the command's. A session of its own
        keeps a terminal's Ctrl-C away from it: the rig decides how its processes end.
        """
        proc = supervise.spawn(
            [IP, "netns", "exec", netns, *cmd], output=log, cwd=ROOT, session=True
        )
        self._pids.append(Pid.of(proc.pid))
        self._register()
        return proc

    def _wait_http(
        self, url: str, name: str, proc: subprocess.Popen[bytes] | None, log: Path, timeout: float
    ) -> None:
        """Until `url` answers 200 from inside the hub; RigError, with `log`, if not."""

        def ready() -> bool:
            with in_netns(self.hub):
                return supervise.http_ok(url)

        try:
            what = f"{name} to answer {url}"
            supervise.wait_until(ready, what, timeout, watch={name: proc}, interval=0.1)
        except supervise.NotReady as exc:
            raise RigError(f"{exc}:\n{_read(log)}") from exc

    # --- processes ------------------------------------------------------------------------------

    def ns_exec(
        self, netns: str, *cmd: str, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside one of this run's namespaces."""
        if not netns.startswith(self.prefix):
            raise RigError(f"{netns} is not a namespace of this run")
        return run_cmd([IP, "netns", "exec", netns, *cmd], input_text, check)

    def start_node(
        self, name: str, join: Sequence[str] = (), extra: Sequence[str] = ()
    ) -> NodeProc:
        """Start (or restart) node `name` in its namespace; returns at once (see wait_http)."""
        node = self.nodes[name]
        if node.running:
            raise RigError(f"{name} is already running")
        node.args = tuple(extra)
        node.starts += 1
        node.paused = False
        cmd = [
            sys.executable,
            str(ROOT / "node.py"),
            "--name",
            name,
            "--host",
            node.ip,
            "--port",
            str(HTTP_PORT),
            "--tcp-port",
            str(TCP_PORT),
            *(["--join", ",".join(join)] if join else []),
            *(["--data-dir", str(self.data_root / name)] if self.persist else []),
            *self.node_args,
            *extra,
        ]
        log = node.log.with_suffix(".log")
        with open(log, "ab") as f:
            f.write(f"--- start {node.starts}: {' '.join(cmd[1:])}\n".encode())
        node.proc = self._spawn(node.netns, cmd, log)
        return node

    def log_text(self, name: str) -> str:
        return _read(self.nodes[name].log.with_suffix(".log"))

    def wait_http(self, node: NodeProc, path: str, timeout: float = 30.0) -> None:
        """Block until `path` on the node answers 200 (checked from inside the hub)."""
        log = node.log.with_suffix(".log")
        self._wait_http(f"{node.url}{path}", node.name, node.proc, log, timeout)

    def _start_nginx(self) -> None:
        binary = nginx_binary()
        assert binary is not None
        work = Path(tempfile.mkdtemp(prefix=f"kvfaults-nginx-{self.run}-"))
        work.chmod(0o755)  # the workers (nobody) create their temp files under it
        body = render_nginx(
            BALANCER_HTTP,
            BALANCER_TCP,
            [n.address for n in self.nodes.values()],
            [f"{n.ip}:{TCP_PORT}" for n in self.nodes.values()],
        )
        conf = work / "nginx.conf"
        conf.write_text(
            f"daemon off;\npid {work}/nginx.pid;\nerror_log {work}/error.log warn;\n{body}"
        )
        log = work / "stderr.log"
        self.nginx = self._spawn(self.hub, [binary, "-p", str(work), "-c", str(conf)], log)
        self._wait_http(f"{self.balancer_url}/health", "nginx", self.nginx, log, 10.0)

    # --- running client code in the hub ---------------------------------------------------------

    def run_in_hub(self, factory: Callable[[], Awaitable[T]], timeout: float = 900.0) -> T:
        """Run `factory()` on an asyncio loop in a thread that lives in the hub namespace.

        The calling thread stays where it is and waits interruptibly: Ctrl-C or SIGTERM in the
        main thread unwinds into `close`, which kills the nodes, and the hub thread then ends.
        """
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                with in_netns(self.hub):
                    box["result"] = asyncio.run(_as_coroutine(factory))
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=target, name=f"hub-{self.run}", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while thread.is_alive():
            thread.join(0.2)
            if time.monotonic() > deadline:
                raise RigError(f"the scenario did not finish within {timeout}s")
        if "error" in box:
            raise box["error"]
        result: T = box["result"]
        return result


async def _as_coroutine(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


def _read(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except OSError:
        return ""


# SIGINT, SIGTERM and SIGHUP unwind the main thread, so `with Rig(...)` blocks clean up.
install_signal_handlers = supervise.exit_on_signals
