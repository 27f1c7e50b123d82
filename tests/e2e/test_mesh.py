"""The mesh end to end: real node.py processes on loopback, joined by gossip.

Fast membership timing (probe every 0.2 s) keeps each test to seconds. No test asserts how fast a
real round trip was (a busy machine would fail it): each waits, with a generous deadline, for what
must happen; how fast it happens is measured by `make bench` (loadtest/bench_mesh.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cluster.membership.messages import Alive, encode_packet
from loadtest import procs
from tests.helpers import scrape_metrics

pytestmark = pytest.mark.e2e

FAST = [*procs.FAST_MESH_ARGS, "--log-level", "INFO"]


def call(
    url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None, dict(r.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None, dict(e.headers)


def eventually(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> float:
    """Poll `check` until true; returns the seconds it took (fails after `timeout`)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def states(node: procs.NodeProc) -> dict[str, str]:
    _, body, _ = call(node.url + "/cluster/members")
    return {m["name"]: m["state"] for m in body["members"]}


def metrics(node: procs.NodeProc) -> dict[str, float]:
    return scrape_metrics(node.url + "/metrics")


def exchanged(node: procs.NodeProc) -> float:
    """Full state exchanges (push/pull) this node asked for or served."""
    m = metrics(node)
    return m["gossip_push_pull_ok_total"] + m["gossip_push_pull_served_total"]


def dump(node: procs.NodeProc) -> dict[str, str]:
    _, body, _ = call(node.url + "/getAll")
    return dict(body)


class Mesh:
    def __init__(self, tmp: Any) -> None:
        self.tmp = tmp
        self.nodes: list[procs.NodeProc] = []

    def start(self, *args: str, join: procs.NodeProc | None = None, **kw: Any) -> procs.NodeProc:
        extra = ["--join", f"127.0.0.1:{join.port}"] if join is not None else []
        node = procs.start_node(*FAST, *extra, *args, log_dir=self.tmp, **kw)
        self.nodes.append(node)
        return node

    def formed(self, nodes: list[procs.NodeProc]) -> None:
        names = {n.name for n in nodes}
        for n in nodes:
            eventually(
                lambda n=n: {k for k, v in states(n).items() if v == "alive"} >= names,
                what=f"{n.name} sees {names} alive",
            )

    def stop_all(self) -> None:
        for n in self.nodes:
            procs.stop(n.proc)


@pytest.fixture
def mesh(tmp_path: Any) -> Iterator[Mesh]:
    m = Mesh(tmp_path)
    try:
        yield m
    finally:
        m.stop_all()


@pytest.fixture
def three(mesh: Mesh) -> list[procs.NodeProc]:
    a = mesh.start()
    b = mesh.start(join=a)
    c = mesh.start(join=a)
    mesh.formed([a, b, c])
    return [a, b, c]


def test_every_kind_of_write_reaches_every_node(three: list[procs.NodeProc]) -> None:
    a, b, c = three
    status, _, headers = call(a.url + "/keys/k1", "PUT", {"value": "v1"})
    assert status == 200
    assert headers["X-Replicas"] == "3/3"
    call(b.url + "/keys?expire_in=100", "PUT", {"x": "1", "y": "2"})
    call(c.url + "/set?k=z&v=3")
    call(a.url + "/keys/t", "PUT", {"value": "ttl", "ttl": 100})
    call(b.url + "/rm?k=y")
    for n in three:  # sync mode: every acknowledged write is already everywhere
        assert dump(n) == {"k1": "v1", "x": "1", "z": "3", "t": "ttl"}
        _, body, _ = call(n.url + "/keys/t")
        assert 90 < body["ttl"] <= 100
    call(c.url + "/keys", "DELETE")
    for n in three:
        assert dump(n) == {}


def test_concurrent_conflicting_writes_converge(three: list[procs.NodeProc]) -> None:
    def writer(node: procs.NodeProc, tag: str) -> None:
        for i in range(60):
            call(f"{node.url}/set?k=key{i % 10}&v={tag}{i}")

    threads = [threading.Thread(target=writer, args=(n, n.name)) for n in three]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eventually(lambda: dump(three[0]) == dump(three[1]) == dump(three[2]), what="converged")
    assert len(dump(three[0])) == 10


def test_a_joiner_streams_5000_keys_and_serves_only_when_synced(mesh: Mesh) -> None:
    a = mesh.start()
    for start in range(0, 5000, 1000):
        call(
            a.url + "/keys", "PUT", {f"key{i:05d}": f"value{i}" for i in range(start, start + 1000)}
        )
    d = mesh.start(join=a)  # start_node returns once /health answers 200: synced
    _, health, _ = call(d.url + "/health")
    assert health["status"] == "ok"
    assert health["keys"] == 5000
    assert dump(d) == dump(a)


def test_kill_9_is_detected_and_a_restart_catches_up(
    mesh: Mesh, three: list[procs.NodeProc]
) -> None:
    a, b, c = three
    os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait()
    # Only that the crash is seen (within eventually's deadline): the detection time is a figure
    # of `make bench` (bench_mesh.bench_detection), not a bound a busy machine could miss.
    eventually(
        lambda: states(a)[c.name] != "alive" and states(b)[c.name] != "alive",
        what="the crash seen by both",
    )
    eventually(lambda: states(a)[c.name] == "dead", what="declared dead")
    status, _, headers = call(a.url + "/set?k=while-down&v=1")
    assert status == 200
    assert headers["X-Replicas"] == "2/2"
    # Restart under the same name and port: memory is empty, it rejoins and catches up.
    c2 = mesh.start(join=a, port=c.port, name=c.name)
    mesh.formed([a, b, c2])
    assert dump(c2) == dump(a)
    _, members, _ = call(a.url + "/cluster/members")
    assert {m["name"]: m["state"] for m in members["members"]}[c.name] == "alive"


def test_leave_remove_and_join_admin_calls(mesh: Mesh, three: list[procs.NodeProc]) -> None:
    a, b, c = three
    status, body, _ = call(c.url + "/cluster/leave", "POST")
    assert status == 200
    eventually(lambda: states(a).get(c.name) in ("left", None), what="c seen as left")
    assert [m["name"] for m in call(c.url + "/cluster/members")[1]["members"]] == [c.name]
    call(c.url + "/set?k=solo&v=1")  # a mesh of one still serves
    status, body, _ = call(c.url + "/cluster/join", "POST", {"seeds": [f"127.0.0.1:{a.port}"]})
    assert status == 200
    assert {m["name"] for m in body["members"]} >= {a.name, b.name, c.name}
    mesh.formed([a, b, c])
    status, body, _ = call(a.url + "/cluster/remove", "POST", {"name": b.name})
    assert status == 200
    eventually(lambda: states(c).get(b.name) in ("left", None), what="b removed everywhere")
    status, body, _ = call(a.url + "/cluster/remove", "POST", {"name": "nobody"})
    assert (status, body["code"]) == (404, "NOT_FOUND")
    port = procs.free_port()
    status, body, _ = call(a.url + "/cluster/join", "POST", {"seeds": [f"127.0.0.1:{port}"]})
    assert (status, body["code"]) == (502, "NO_SEED_REACHABLE")


def test_cluster_key_keeps_a_stranger_out(mesh: Mesh) -> None:
    a = mesh.start("--cluster-key", "s3cret")
    b = mesh.start("--cluster-key", "s3cret", join=a)
    mesh.formed([a, b])
    stranger = mesh.start("--cluster-key", "other")
    refused = metrics(a)["gossip_push_pull_refused_total"]
    seeds = {"seeds": [f"127.0.0.1:{a.port}"]}
    status, body, _ = call(stranger.url + "/cluster/join", "POST", seeds)
    assert status == 502
    assert body["code"] == "SEED_REFUSED"  # a refused push/pull: the keys differ
    assert (
        metrics(a)["gossip_push_pull_refused_total"] >= refused + 1
    )  # a got its state and refused it
    # The stranger's announcement over UDP, signed with its key, as it would gossip it: refused by
    # both (counted), so it definitely arrived.
    announce = encode_packet(
        [Alive(stranger.name, f"127.0.0.1:{stranger.port}", 1)], "other", int(time.time() * 1000)
    )
    dropped = {n.name: metrics(n)["gossip_dropped_auth_total"] for n in (a, b)}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in (a, b):
            for _ in range(5):
                s.sendto(announce, ("127.0.0.1", n.port))
    eventually(
        lambda: all(metrics(n)["gossip_dropped_auth_total"] >= dropped[n.name] + 5 for n in (a, b)),
        what="a and b refused the stranger's datagrams",
    )
    # Then a and b exchange their full state (push/pull every second): had either taken the
    # stranger in, the other would know it by then.
    since = {n.name: exchanged(n) for n in (a, b)}
    eventually(
        lambda: all(exchanged(n) >= since[n.name] + 2 for n in (a, b)),
        what="a and b exchanged state since the refusals",
    )
    assert stranger.name not in states(a)
    assert stranger.name not in states(b)
    call(a.url + "/set?k=secret&v=1")
    assert call(stranger.url + "/get?k=secret")[0] == 404


def test_admin_token_guards_mutating_cluster_calls(mesh: Mesh) -> None:
    a = mesh.start("--admin-token", "t0k")
    assert call(a.url + "/cluster/members")[0] == 200
    status, body, _ = call(a.url + "/cluster/leave", "POST")
    assert (status, body["code"]) == (401, "UNAUTHORIZED")
    status, body, _ = call(a.url + "/cluster/remove", "POST", {"name": "x"})
    assert status == 401
    ok = call(a.url + "/cluster/leave", "POST", headers={"Authorization": "Bearer t0k"})
    assert ok[0] == 200


def test_a_node_whose_seeds_are_only_itself_starts_as_a_mesh_of_one(mesh: Mesh) -> None:
    port = procs.free_port()
    for seed in (f"127.0.0.1:{port}", f"localhost:{port}"):
        node = mesh.start("--join", seed, port=port)  # returns once /health answers 200
        assert [m["name"] for m in call(node.url + "/cluster/members")[1]["members"]] == [node.name]
        procs.stop(node.proc)


def test_the_line_protocol_listens_only_once_synced(mesh: Mesh) -> None:
    a = mesh.start()
    for start in range(0, 60_000, 10_000):
        call(a.url + "/keys", "PUT", {f"k{i:05d}": "v" for i in range(start, start + 10_000)})
    b = mesh.start(join=a, wait=False)
    probes_while_syncing = connected_while_syncing = 0
    while True:
        # The port first, then /health: a node turns ready only once, so a port that answered
        # before /health said 503 was open while the node was syncing (the other order would
        # count a node that became ready between the two probes).
        line_open = _listening(b.tcp_port)
        status = call(b.url + "/health")[0] if _listening(b.port) else 0
        if status == 200:
            break
        if status == 503:
            probes_while_syncing += 1
            connected_while_syncing += line_open
        time.sleep(0.005)
    assert probes_while_syncing > 0  # 60,000 keys take a while to stream
    assert connected_while_syncing == 0
    with socket.create_connection(("127.0.0.1", b.tcp_port), timeout=5) as s:
        s.sendall(b"GET k59999\n")
        assert json.loads(s.makefile().readline()) == {"status": "Ok", "result": "v"}


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True
