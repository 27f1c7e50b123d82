"""`make run`: a local mesh of N nodes behind nginx, in the foreground, like `docker compose up`.

    python -m loadtest.mesh [--nodes 3] [--http-port 8080] [--tcp-port 9888] [--run-dir run]

Node i listens on HTTP port `--node-port-base + i` and line port `--node-tcp-base + i`; nginx
listens on the public ports and balances over all nodes. Each node's log lines are printed with
its name in front. Ctrl-C (SIGINT) or SIGTERM stops every process this started, nginx included.
PID files go to the run directory so that `python -m loadtest.mesh --stop` (make stop) can stop a
run left in the background, by PID and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from loadtest import procs

TEMPLATE = procs.ROOT / "nginx" / "kvmesh.conf.template"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def render_nginx(
    http_listen: str,
    tcp_listen: str,
    http_nodes: list[str],
    tcp_nodes: list[str],
    workers: str = "1",
) -> str:
    """The balancer config for these nodes (also what the tests validate)."""
    text = TEMPLATE.read_text()
    load = f"load_module {STREAM_MODULE};" if STREAM_MODULE.exists() else ""
    servers = "\n".join(f"        server {a} max_fails=1 fail_timeout=2s;" for a in http_nodes)
    tcp = "\n".join(f"        server {a} max_fails=1 fail_timeout=2s;" for a in tcp_nodes)
    for placeholder, value in {
        "{{LOAD_STREAM_MODULE}}": load,
        "{{WORKERS}}": workers,
        "{{HTTP_SERVERS}}": servers,
        "{{TCP_SERVERS}}": tcp,
        "{{HTTP_LISTEN}}": http_listen,
        "{{TCP_LISTEN}}": tcp_listen,
    }.items():
        text = text.replace(placeholder, value)
    return text


def _pump(name: str, stream: object, lock: threading.Lock) -> None:
    assert hasattr(stream, "readline")
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        with lock:
            sys.stdout.write(f"{name:>8} | {line}\n")
            sys.stdout.flush()


def stop_recorded(run_dir: Path) -> int:
    """Stop the processes whose PID files are in run_dir (make stop)."""
    stopped = 0
    for pid_file in sorted(run_dir.glob("*.pid")):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            stopped += 1
        pid_file.unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.mesh", description=__doc__)
    p.add_argument("--nodes", type=int, default=int(os.environ.get("N", "3")))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--tcp-port", type=int, default=9888)
    p.add_argument("--node-port-base", type=int, default=18080)
    p.add_argument("--node-tcp-base", type=int, default=19880)
    p.add_argument("--run-dir", type=Path, default=procs.ROOT / "run")
    p.add_argument("--stop", action="store_true", help="stop a run left in the background")
    p.add_argument("--node-arg", action="append", default=[], help="extra node.py argument")
    args = p.parse_args(argv)
    if args.stop:
        print(f"stopped {stop_recorded(args.run_dir)} processes")
        return 0
    if procs.nginx_binary() is None:
        print("nginx is not installed: run `make install-system` as root (apt-get install nginx)")
        return 2
    args.run_dir.mkdir(parents=True, exist_ok=True)
    stop_recorded(args.run_dir)  # a previous run left behind
    host = args.host
    http_nodes = [f"{host}:{args.node_port_base + i + 1}" for i in range(args.nodes)]
    tcp_nodes = [f"{host}:{args.node_tcp_base + i + 1}" for i in range(args.nodes)]
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    lock = threading.Lock()
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for i in range(args.nodes):
            name = f"node{i + 1}"
            cmd = [
                sys.executable,
                str(procs.ROOT / "node.py"),
                "--name",
                name,
                "--host",
                host,
                "--port",
                str(args.node_port_base + i + 1),
                "--tcp-port",
                str(args.node_tcp_base + i + 1),
                *(["--join", ",".join(http_nodes[:i])] if i else []),
                *args.node_arg,
            ]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            children.append((name, proc))
            (args.run_dir / f"{name}.pid").write_text(str(proc.pid))
            threading.Thread(target=_pump, args=(name, proc.stdout, lock), daemon=True).start()
            procs.wait_http(f"http://{http_nodes[i]}/health", timeout=30, proc=proc)
        conf = args.run_dir / "nginx.conf"
        body = render_nginx(
            f"{host}:{args.http_port}", f"{host}:{args.tcp_port}", http_nodes, tcp_nodes
        )
        ng = procs.start_nginx(body, args.run_dir)
        conf.write_text(body)
        children.append(("nginx", ng.proc))
        (args.run_dir / "nginx-main.pid").write_text(str(ng.proc.pid))
        procs.wait_http(f"http://{host}:{args.http_port}/health", timeout=10, proc=ng.proc)
        with lock:
            print(
                f"\nkvmesh: {args.nodes} nodes behind nginx\n"
                f"  HTTP           http://{host}:{args.http_port}   (try: curl "
                f"'http://{host}:{args.http_port}/set?k=hello&v=world')\n"
                f"  line protocol  {host}:{args.tcp_port}   (try: nc {host} {args.tcp_port})\n"
                f"  nodes          {', '.join(http_nodes)}\n"
                "  Ctrl-C stops everything.\n",
                flush=True,
            )
        while not stopping.is_set():
            for name, proc in children:
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping the mesh")
                    stopping.set()
            stopping.wait(0.5)
    finally:
        for _name, proc in reversed(children):
            procs.stop(proc)
        for pid_file in args.run_dir.glob("*.pid"):
            pid_file.unlink(missing_ok=True)
        time.sleep(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
