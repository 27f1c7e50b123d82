"""docker-compose.yml without a Docker engine: the file validates (`docker-compose config`), and
the very same node command and nginx config run here, outside containers.

What differs from containers, and how it is bridged (nothing else is changed):
- Every container has its own address and the same ports; here the nodes share 127.0.0.1 and
  each gets free ports through the same KV_* variables compose sets (KV_PORT, KV_TCP_PORT), plus
  KV_HOST=127.0.0.1 and KV_ADVERTISE (the command derives that from `hostname -i` in a container).
- Docker's DNS lists the service's replicas; here a fake `getent` on PATH prints the nodes'
  addresses with their ports, which the command takes as they are.
- nginx resolves the service name `node` to every replica; here the `server node:...` lines of
  nginx/docker.conf are replaced by one line per node, and the listen ports by free ones. The
  official image has the stream module built in; Debian's nginx loads it from a wrapper config
  that includes docker.conf as it is.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from loadtest import mesh as meshlib
from loadtest import procs

pytestmark = pytest.mark.e2e

COMPOSE = shutil.which("docker-compose")
need_compose = pytest.mark.skipif(
    COMPOSE is None,
    reason="docker-compose is not installed (Debian package docker-compose: make install-system)",
)
need_nginx = pytest.mark.skipif(procs.nginx_binary() is None, reason="nginx is not installed")


def compose_config(*options: str) -> dict[str, Any]:
    """`docker-compose [OPTIONS] config` (validated, normalised), read as data by the YAML library
    of the interpreter docker-compose itself runs on (Debian's package brings python3-yaml)."""
    if COMPOSE is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    result = subprocess.run(
        [COMPOSE, "-f", str(procs.ROOT / "docker-compose.yml"), *options, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    shebang = Path(COMPOSE).read_text(errors="replace").splitlines()[0]
    python = shebang[2:].strip().split()[0] if shebang.startswith("#!") else sys.executable
    loaded = subprocess.run(
        [python, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=result.stdout,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    data: dict[str, Any] = json.loads(loaded.stdout)
    return data


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


def unescape(value: str) -> str:
    """What a container receives: compose turns `$$` into `$` (config keeps it escaped)."""
    return value.replace("$$", "$")


@need_compose
def test_the_compose_file_is_valid_and_complete(config: dict[str, Any]) -> None:
    # docker-compose 1.29's `config` lists every service; `up` starts those without a profile.
    services = {k: v for k, v in config["services"].items() if not v.get("profiles")}
    assert set(services) == {"node", "nginx", "locust", "locust-worker"}
    node = services["node"]
    assert node["deploy"]["replicas"] == 3
    assert node["environment"]["KV_SERVICE"] == "node"
    assert "healthcheck" in node
    nginx = services["nginx"]
    assert nginx["depends_on"]["node"]["condition"] == "service_healthy"
    assert any(v.endswith("nginx/docker.conf:/etc/nginx/nginx.conf:ro") for v in nginx["volumes"])
    assert {p.split(":", 1)[1] for p in nginx["ports"]} == {
        "8080:8080/tcp",
        "9888:9888/tcp",
        "6379:6379/tcp",
    }
    assert any(p.endswith("8089:8089/tcp") for p in services["locust"]["ports"])
    # The locust image runs the version locked for the load extra.
    pinned = re.search(r"^locust==(\S+)", (procs.ROOT / "requirements.lock").read_text(), re.M)
    assert pinned is not None
    for name in ("locust", "locust-worker"):
        assert services[name]["image"] == f"locustio/locust:{pinned.group(1)}"
    dockerfile = (procs.ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert "pip install -c requirements.lock ." in dockerfile  # the locked versions


CRDB = ["crdb1", "crdb2", "crdb3"]


@need_compose
def test_the_cockroach_profile_is_valid_and_complete() -> None:
    """`docker compose --profile cockroach up`: a 3-node CockroachDB cluster, initialised once,
    and three stateless nodes over it behind an nginx of their own, all on a network of their own
    where the nodes answer to `node` (nginx/docker.conf's upstreams)."""
    services = compose_config("--profile", "cockroach")["services"]
    profile = {k for k, v in services.items() if v.get("profiles") == ["cockroach"]}
    assert profile == {*CRDB, "crdb-init", "node-crdb", "nginx-crdb"}
    for name in CRDB:
        crdb = services[name]
        assert crdb["image"].startswith("cockroachdb/cockroach:v")
        assert crdb["command"] == (
            f"start --insecure --join={','.join(CRDB)} --advertise-addr={name}"
        )
        assert any(v.endswith(":/cockroach/cockroach-data:rw") for v in crdb["volumes"])
        assert set(crdb["networks"]) == {"crdb"}
    init = services["crdb-init"]
    assert init["image"] == services["crdb1"]["image"]
    assert "cockroach init --insecure --host=crdb1:26257" in init["command"][0]
    assert set(init["depends_on"]) == set(CRDB)
    node = services["node-crdb"]
    memory_node = services["node"]
    assert node["command"] == memory_node["command"]  # the same discovery and start
    assert node["healthcheck"] == memory_node["healthcheck"]
    assert node["image"] == memory_node["image"]
    assert node["deploy"]["replicas"] == 3
    env = node["environment"]
    assert env["KV_STORE"] == "postgresql://root@crdb1:26257/defaultdb?sslmode=disable"
    assert env["KV_SERVICE"] == "node"
    assert "KV_DATA_ROOT" not in env  # stateless: --data-dir is refused with --store
    assert "volumes" not in node
    assert node["networks"] == {"crdb": {"aliases": ["node"]}}
    assert node["depends_on"]["crdb-init"]["condition"] == "service_completed_successfully"
    nginx = services["nginx-crdb"]
    assert nginx["volumes"] == services["nginx"]["volumes"]  # docker.conf as it is
    assert set(nginx["networks"]) == {"crdb"}
    assert nginx["depends_on"]["node-crdb"]["condition"] == "service_healthy"
    assert {p.split(":", 1)[1] for p in nginx["ports"]} == {"8081:8080/tcp", "9889:9888/tcp"}
    # The memory mesh is untouched by the profile: not on the network crdb, its ports its own.
    assert "networks" not in memory_node
    assert "networks" not in services["nginx"]


def test_docker_conf_is_the_template_rendered() -> None:
    assert (procs.ROOT / "nginx" / "docker.conf").read_text() == meshlib.render_docker_conf(), (
        "regenerate it: python -m loadtest.mesh --render-docker-conf > nginx/docker.conf"
    )


FAKE_GETENT = """#!/bin/sh
# getent ahostsv4 NAME as Docker's DNS answers for the compose service: every replica (with its
# port here, since the nodes share one address); the list is the file `hosts` beside this script.
[ "$1" = ahostsv4 ] && [ "$2" = node ] || exit 2
cat "$(dirname "$0")/hosts"
"""


def fake_dns(directory: Path, ports: list[int]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    getent = directory / "getent"
    getent.write_text(FAKE_GETENT)
    getent.chmod(getent.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (directory / "hosts").write_text("".join(f"127.0.0.1:{p}  STREAM node\n" for p in ports))
    return directory


class ComposeNode:
    """One replica of the `node` service, run from the compose file's command and environment."""

    def __init__(
        self,
        config: dict[str, Any],
        ports: tuple[int, int, int],
        fake_bin: Path,
        log_dir: Path,
        env: dict[str, str],
    ) -> None:
        service = config["services"]["node"]
        self.port, self.tcp_port, self.resp_port = ports
        command = [unescape(str(c)) for c in service["command"]]
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
        self.env = {
            **inherited,
            **{k: unescape(str(v)) for k, v in service["environment"].items()},
            # What differs outside containers (see the module docstring):
            "KV_HOST": "127.0.0.1",
            "KV_PORT": str(self.port),
            "KV_TCP_PORT": str(self.tcp_port),
            "KV_RESP_PORT": str(self.resp_port),
            "KV_ADVERTISE": f"127.0.0.1:{self.port}",
            "PATH": f"{fake_bin}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            **env,
        }
        self.log = log_dir / f"node-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                command,
                env=self.env,
                cwd=procs.ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthcheck(self, config: dict[str, Any]) -> int:
        """The compose healthcheck's command, pointed at this node's port."""
        test = config["services"]["node"]["healthcheck"]["test"]
        assert test[0] == "CMD"
        argv = [str(a).replace("8080", str(self.port)) for a in test[1:]]
        if argv[0] == "python":
            argv[0] = sys.executable
        return subprocess.run(argv, timeout=10, check=False).returncode


StartNodes = Callable[..., list[ComposeNode]]


@pytest.fixture
def start_nodes(tmp_path: Path) -> Iterator[StartNodes]:
    """start(config, count, **env): `count` replicas that see each other through the fake DNS."""
    started: list[ComposeNode] = []

    def start(config: dict[str, Any], count: int, **env: str) -> list[ComposeNode]:
        ports = [(procs.free_port(), procs.free_port(), procs.free_port()) for _ in range(count)]
        fake_bin = fake_dns(tmp_path / f"bin{len(started)}", [p for p, _, _ in ports])
        for pair in ports:
            started.append(ComposeNode(config, pair, fake_bin, tmp_path, env))
        return started[-count:]

    try:
        yield start
    finally:
        for node in started:
            procs.stop(node.proc)


def wait_healthy(nodes: list[ComposeNode], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        while not meshlib.is_kvmesh(node.url):
            assert node.proc.poll() is None, node.log.read_text()
            assert time.monotonic() < deadline, node.log.read_text()
            time.sleep(0.1)


def members(url: str) -> dict[str, str]:
    with closing(http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)) as c:
        c.request("GET", "/cluster/members")
        body = json.loads(c.getresponse().read())
    return {m["address"]: m["state"] for m in body["members"]}


def docker_conf_here(
    http_port: int, tcp_port: int, nodes: list[ComposeNode], resp_port: int
) -> str:
    """nginx/docker.conf with the service name and the listen ports replaced (nothing else)."""
    text = (procs.ROOT / "nginx" / "docker.conf").read_text()
    replaced = 0
    for public, local, ports in (
        (8080, http_port, [n.port for n in nodes]),
        (9888, tcp_port, [n.tcp_port for n in nodes]),
        (6379, resp_port, [n.resp_port for n in nodes]),
    ):
        text, n = re.subn(
            rf"^(\s*)listen {public};$", rf"\1listen 127.0.0.1:{local};", text, flags=re.M
        )
        replaced += n

        def servers(m: re.Match[str], ports: list[int] = ports) -> str:
            return "\n".join(f"{m[1]}server 127.0.0.1:{p} {m[2]};" for p in ports)

        text, n = re.subn(rf"^(\s*)server node:{public} (.*);$", servers, text, flags=re.M)
        replaced += n
    assert replaced == 6, "docker.conf no longer has the lines this test replaces"
    return text


@pytest.fixture
def docker_nginx(tmp_path: Path) -> Iterator[Callable[[list[ComposeNode]], tuple[int, int]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(nodes: list[ComposeNode]) -> tuple[int, int]:
        binary = procs.nginx_binary()
        assert binary is not None
        http_port, tcp_port = procs.free_port(), procs.free_port()
        workdir = tmp_path / "nginx"
        workdir.mkdir()
        resp_port = procs.free_port()
        conf = docker_conf_here(http_port, tcp_port, nodes, resp_port)
        (workdir / "docker.conf").write_text(conf)
        load = ""
        if meshlib.STREAM_MODULE.exists():
            load = f"load_module {meshlib.STREAM_MODULE};\n"
        # The official image's command supplies `daemon off;`; its pid file and error log too.
        (workdir / "wrapper.conf").write_text(
            f"{load}daemon off;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log notice;\n"
            f"include {workdir}/docker.conf;\n"
        )
        with open(workdir / "stderr.log", "wb") as err:
            proc = subprocess.Popen(
                [binary, "-p", str(workdir), "-c", str(workdir / "wrapper.conf")],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        started.append(proc)
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 10
        while not meshlib.is_kvmesh(url):
            assert proc.poll() is None, (workdir / "stderr.log").read_text()
            assert time.monotonic() < deadline, "nginx did not answer"
            time.sleep(0.05)
        return http_port, tcp_port

    try:
        yield start
    finally:
        for proc in started:
            procs.stop(proc)


@need_compose
@need_nginx
def test_the_compose_node_command_forms_a_mesh_behind_the_docker_nginx_config(
    config: dict[str, Any],
    start_nodes: StartNodes,
    docker_nginx: Callable[[list[ComposeNode]], tuple[int, int]],
) -> None:
    nodes = start_nodes(config, 3)
    wait_healthy(nodes)
    addresses = {f"127.0.0.1:{n.port}" for n in nodes}
    for node in nodes:
        assert node.healthcheck(config) == 0
        # Each joined the others, never only itself: everyone sees all three alive.
        deadline = time.monotonic() + 10
        while members(node.url) != dict.fromkeys(addresses, "alive"):
            assert time.monotonic() < deadline, members(node.url)
            time.sleep(0.1)
        assert "joins 127.0.0.1:" in node.log.read_text()

    http_port, tcp_port = docker_nginx(nodes)
    with closing(http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)) as c:
        c.request("PUT", "/keys/compose", body=b'{"value": "up"}')
        resp = c.getresponse()
        resp.read()
        assert (resp.status, resp.headers["X-Replicas"]) == (200, "3/3")
    for node in nodes:
        with closing(http.client.HTTPConnection("127.0.0.1", node.port, timeout=5)) as c:
            c.request("GET", "/keys/compose")
            assert json.loads(c.getresponse().read())["value"] == "up"
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"PUT line via-stream\nGET compose\nGET line\n")
        replies = [json.loads(reader.readline()) for _ in range(3)]
        reader.close()
    assert replies == [
        {"status": "Ok"},
        {"status": "Ok", "result": "up"},
        {"status": "Ok", "result": "via-stream"},
    ]


@need_compose
def test_a_node_alone_under_the_service_name_starts_a_mesh_of_one(
    config: dict[str, Any], start_nodes: StartNodes
) -> None:
    # `--scale node=1`, or the first replica: the service name lists only itself. It waits
    # KV_DISCOVER_WAIT seconds (shortened here) for another, then serves on its own.
    (node,) = start_nodes(config, 1, KV_DISCOVER_WAIT="1")
    wait_healthy([node])
    assert members(node.url) == {f"127.0.0.1:{node.port}": "alive"}
    assert "joins nobody" in node.log.read_text()
