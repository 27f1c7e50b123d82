"""The mesh boundary under bad input: real node.py processes on loopback, attacked from outside.

- Garbage, truncated, stale (replayed) and maximum-size datagrams on the gossip UDP port, and bad
  bodies on the node-to-node routes (/internal/replicate, the repair routes /internal/ae/...,
  /internal/snapshot, /internal/gossip/pushpull): dropped or refused, counted in /metrics, and the
  node keeps serving with its membership and data unchanged.
- With --cluster-key nothing unauthenticated changes membership or data, and nothing leaks.
- Slow clients (one byte a second) and a thousand idle connections (HTTP and the line protocol)
  do not starve a normal client.

Every test is bounded (a few seconds each); processes are started on free ports and stopped by PID.
No test asserts how fast a round trip was (a busy machine would fail it): "keeps serving" means
every request is answered, within the client's timeout. The latencies under these attacks are
figures of `make bench` (loadtest/bench.py, section "boundary"). Where a test claims something never
happens, it first waits on a counter showing that it had every chance to (datagrams refused,
probe rounds and state exchanges completed).
An oversized *datagram* cannot be sent over IPv4 (65,507 bytes is the largest UDP payload, and the
node accepts that much before decoding): the oversize check is exercised on push/pull bodies.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.api import internal as internal_api
from cluster.membership.messages import (
    MAX_DATAGRAM,
    MAX_PUSH_PULL,
    Alive,
    Dead,
    Leave,
    Message,
    PushPull,
    Suspect,
    encode_packet,
)
from cluster.net import auth
from loadtest import procs
from loadtest.bench import slowloris

pytestmark = pytest.mark.e2e

FAST = list(procs.FAST_MESH_ARGS)
KEY = "boundary-secret"


def call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def metrics(node: procs.NodeProc) -> dict[str, float]:
    _, raw = call(node.url + "/metrics")
    out: dict[str, float] = {}
    for line in raw.decode().splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def members(node: procs.NodeProc) -> dict[str, tuple[str, int]]:
    _, raw = call(node.url + "/cluster/members")
    return {m["name"]: (m["state"], m["incarnation"]) for m in json.loads(raw)["members"]}


def dump(node: procs.NodeProc) -> dict[str, str]:
    return dict(json.loads(call(node.url + "/getAll")[1]))


def eventually(check: Any, limit: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {limit}s: {what}")
        time.sleep(0.05)


def udp(node: procs.NodeProc, *datagrams: bytes) -> None:
    """Send paced (the kernel drops what overflows the node's receive buffer, uncounted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i, d in enumerate(datagrams):
            s.sendto(d, ("127.0.0.1", node.port))
            if i % 10 == 9 or len(d) > 10_000:
                time.sleep(0.005)


def now_ms() -> int:
    return int(time.time() * 1000)


def assert_serves(node: procs.NodeProc) -> None:
    """A write and a read are answered (within `call`'s timeout; how fast is for `make bench`)."""
    status, _ = call(f"{node.url}/set?k=probe&v={time.monotonic()}")
    assert status == 200
    assert call(node.url + "/get?k=probe")[0] == 200


def gossip_counts(node: procs.NodeProc) -> tuple[float, float]:
    """(full state exchanges asked for or served, datagrams received) so far."""
    m = metrics(node)
    return m["gossip_push_pull_ok_total"] + m["gossip_push_pull_served_total"], m[
        "gossip_datagrams_received_total"
    ]


def wait_for_gossip(nodes: list[procs.NodeProc], pushpulls: int = 2, datagrams: int = 10) -> None:
    """Wait until, from now on, each of `nodes` took part in `pushpulls` full state exchanges and
    received `datagrams` datagrams (pings, acks, gossip): several probe rounds went by, and
    whatever one node holds has reached the other."""
    before = {n.name: gossip_counts(n) for n in nodes}

    def done() -> bool:
        for n in nodes:
            (pp, dg), (pp0, dg0) = gossip_counts(n), before[n.name]
            if pp < pp0 + pushpulls or dg < dg0 + datagrams:
                return False
        return True

    eventually(done, what=f"{pushpulls} exchanges and {datagrams} datagrams on each node")


class Pair:
    """Two joined nodes, optionally with a cluster key."""

    def __init__(self, tmp: Path, key: str | None) -> None:
        extra = ["--cluster-key", key] if key else []
        self.a = procs.start_node(*FAST, *extra, log_dir=tmp, name="a")
        self.b = procs.start_node(
            *FAST, *extra, "--join", f"127.0.0.1:{self.a.port}", log_dir=tmp, name="b"
        )
        eventually(
            lambda: all(
                {n: s for n, (s, _) in members(x).items()} == {"a": "alive", "b": "alive"}
                for x in (self.a, self.b)
            ),
            what="a and b see each other alive",
        )

    def stop(self) -> None:
        for n in (self.a, self.b):
            procs.stop(n.proc)


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Pair]:
    pair = Pair(tmp_path, None)
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Pair]:
    pair = Pair(tmp_path, KEY)
    try:
        yield pair
    finally:
        pair.stop()


# --- datagrams ------------------------------------------------------------------------------------


def test_garbage_truncated_and_maximum_size_datagrams_are_dropped_and_counted(plain: Pair) -> None:
    a = plain.a
    call(a.url + "/set?k=before&v=1")
    data_before, members_before = dump(a), members(a)
    rng = random.Random(7)
    valid = encode_packet([Alive("intruder", "127.0.0.1:9", 1)], None, now_ms())
    garbage = [rng.randbytes(rng.randrange(1, 1400)) for _ in range(300)]
    crafted = [
        b"",  # empty
        valid[:10],  # truncated mid-JSON
        valid[:1],  # only the format marker
        b"\x07" + valid[1:],  # unknown format marker
        b"\x00" + json.dumps([99, now_ms(), [5, "x", "127.0.0.1:9", 1]]).encode(),  # version
        b"\x00" + json.dumps([1, now_ms(), [42, "x"]]).encode(),  # unknown message type
        b"\x00" + json.dumps([1, now_ms(), [5, "x", "no-port", 1]]).encode(),  # bad address
        b"\x00" + json.dumps([1, -5, [5, "x", "127.0.0.1:9", 1]]).encode(),  # negative time
        b"\x00" + json.dumps([1, now_ms(), [5, "x", "127.0.0.1:9", 2**70]]).encode(),  # huge int
        b"\x00" + b"[" * 50_000,  # deeply nested
        b"\x00" + rng.randbytes(MAX_DATAGRAM - 1),  # the largest datagram IPv4 carries
    ]
    signed = encode_packet([Alive("intruder", "127.0.0.1:9", 1)], "some-key", now_ms())
    udp(a, *garbage, *crafted, signed)

    def counted() -> bool:
        m = metrics(a)
        return m["gossip_dropped_malformed_total"] >= len(garbage) + len(crafted) - 1 and (
            m["gossip_dropped_auth_total"] >= 1
        )

    eventually(counted, what=f"drops counted: {metrics(a)}")
    assert_serves(a)
    assert members(a) == members_before
    assert "intruder" not in members(plain.b)
    assert dump(a) == {**data_before, "probe": dump(a)["probe"]}


def test_a_flood_of_garbage_datagrams_does_not_stop_the_node(plain: Pair) -> None:
    a = plain.a
    rng = random.Random(3)
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                s.sendto(rng.randbytes(512), ("127.0.0.1", a.port))
                sent[0] += 1
                if sent[0] % 200 == 0:
                    time.sleep(0.001)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        eventually(
            lambda: metrics(a)["gossip_dropped_malformed_total"] >= 1000, what="the flood reaches a"
        )
        for _ in range(20):
            assert_serves(a)
        # Probe rounds under the flood: b receives a's pings and its acks (b probes nothing but
        # a), and a keeps dropping garbage meanwhile.
        flooded = metrics(a)["gossip_dropped_malformed_total"]
        wait_for_gossip([plain.b], pushpulls=0, datagrams=10)
        assert metrics(a)["gossip_dropped_malformed_total"] > flooded
        for node in (a, plain.b):
            assert {n: s for n, (s, _) in members(node).items()} == {"a": "alive", "b": "alive"}
    finally:
        stop.set()
        flooder.join()
    assert metrics(a)["gossip_dropped_malformed_total"] > 1000


# --- node-to-node HTTP bodies ---------------------------------------------------------------------


BAD_BODIES = [
    b"",
    b"not json",
    b'{"v": 1, "from": "x", "stable": 0, "batches": [[1, "x", false, [["k", "v", null]]]',  # cut
    b'{"v": 2, "from": "x", "stable": 0, "batches": []}',  # another version
    b'{"v": 1, "from": "x", "stable": 0, "batches": [["ts", "x", false, []]]}',
    b'{"v": 1, "from": "x", "stable": 0, "batches": [[1, "x", false, [[7, "v", null]]]]}',
    b"[1, 2, 3]",
    b'{"entries": [["k"]], "clear": [0, ""]}',
]


@pytest.mark.parametrize(
    "path",
    ["/internal/replicate", "/internal/ae/descend", "/internal/ae/reconcile", "/internal/ae/give"],
)
def test_malformed_replication_bodies_are_refused_counted_and_change_nothing(
    plain: Pair, path: str
) -> None:
    a = plain.a
    call(a.url + "/set?k=kept&v=1")
    before, counted = dump(a), metrics(a)["internal_rejected_malformed_total"]
    for body in BAD_BODIES:
        status, raw = call(a.url + path, "POST", body, {"Content-Type": "application/json"})
        assert status == 400, (body, raw)
        assert json.loads(raw)["code"] == "INVALID_BODY"
    assert metrics(a)["internal_rejected_malformed_total"] >= counted + len(BAD_BODIES)
    assert dump(a) == before
    assert_serves(a)


def _declared_length_answer(node: procs.NodeProc, path: str, length: int) -> bytes:
    """Announce a body of `length` bytes, send none, and read what the node answers."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        return s.recv(4096)


def test_oversized_bodies_are_refused_with_413(plain: Pair) -> None:
    a = plain.a
    # The peer routes cap what they read before authenticating: a body announced past the cap
    # is refused at once, before a byte of it is read.
    cap = getattr(internal_api, "MAX_INTERNAL_BODY", MAX_PUSH_PULL)
    for path in ("/internal/replicate", "/internal/ae/reconcile", "/internal/ae/give"):
        answer = _declared_length_answer(a, path, cap + 1)
        assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:200])
        assert b"BODY_TOO_LARGE" in answer
    # Push/pull bodies are membership state: 8 MiB at most, sent for real.
    status, raw = call(a.url + "/internal/gossip/pushpull", "POST", b"x" * (MAX_PUSH_PULL + 1))
    assert status == 413, raw[:200]
    assert_serves(a)


def test_bad_snapshot_requests_are_refused(plain: Pair) -> None:
    a = plain.a
    for query in ("limit=abc", "limit=0", "limit=1000000", "limit=-1"):
        status, raw = call(f"{a.url}/internal/snapshot?{query}")
        assert status == 400, (query, raw)
    # The internal cursor is lenient (a garbage one restarts the scan): never a server error.
    assert call(f"{a.url}/internal/snapshot?after=%25%25%25")[0] in (200, 400)
    assert_serves(a)


def test_push_pull_garbage_is_refused_and_counted(plain: Pair) -> None:
    a = plain.a
    before = metrics(a)["gossip_push_pull_refused_total"]
    rogue = encode_packet([Alive("intruder", "127.0.0.1:9", 1)], None, now_ms())  # not a push/pull
    for body in (b"", b"garbage", b"\x00[1]", rogue):
        status, _ = call(a.url + "/internal/gossip/pushpull", "POST", body)
        assert status == 400
    assert metrics(a)["gossip_push_pull_refused_total"] >= before + 4
    assert "intruder" not in members(a)


def test_a_replicated_timestamp_far_ahead_is_refused_counted_and_not_adopted(plain: Pair) -> None:
    a = plain.a
    ahead = (now_ms() + 3_600_000) << 16  # an hour ahead
    body = json.dumps(
        {"v": 1, "from": "b", "stable": 0, "batches": [[ahead, "b", False, [["fut", "v", None]]]]}
    ).encode()
    before = metrics(a)["replication_refused_batches_total"]
    assert call(a.url + "/internal/replicate", "POST", body)[0] == 200
    m = metrics(a)
    assert m["replication_refused_batches_total"] == before + 1
    assert m["hlc_last_wall_ms"] < now_ms() + 1000
    assert call(a.url + "/get?k=fut")[0] == 404
    assert "refused a batch from node=b" in a.log.read_text()


# --- with a cluster key ---------------------------------------------------------------------------


def test_with_a_cluster_key_unauthenticated_gossip_changes_no_membership(keyed: Pair) -> None:
    a, b = keyed.a, keyed.b
    inc_b = members(a)["b"][1]
    before = metrics(a)
    forged: list[list[Message]] = [
        [Alive("intruder", "127.0.0.1:9", 1)],
        [Dead("b", inc_b, "a")],
        [Leave("b", inc_b + 1, "a")],
        [Suspect("b", inc_b, "a")],
    ]
    unsigned = [encode_packet(m, None, now_ms()) for m in forged]
    wrong_key = [encode_packet(m, "not-the-key", now_ms()) for m in forged]
    # Signed with the right key (as if captured) but ten minutes old: outside the replay window.
    stale = [encode_packet(m, KEY, now_ms() - 600_000) for m in forged]
    truncated = [p[:20] for p in wrong_key]  # shorter than the HMAC
    udp(a, *unsigned, *wrong_key, *stale, *truncated)

    def counted() -> bool:
        m = metrics(a)
        return (
            m["gossip_dropped_auth_total"] >= before["gossip_dropped_auth_total"] + 8
            and m["gossip_dropped_stale_total"] >= before["gossip_dropped_stale_total"] + 4
            and m["gossip_dropped_malformed_total"] >= before["gossip_dropped_malformed_total"] + 4
        )

    eventually(counted, what=f"drops counted: {metrics(a)}")
    wait_for_gossip([a, b])  # probe rounds and state exchanges: nothing forged surfaces later
    for node in (a, b):
        view = members(node)
        assert "intruder" not in view
        assert {n: s for n, (s, _) in view.items()} == {"a": "alive", "b": "alive"}
    # Push/pull with no signature, or a stale one: 401, counted, not merged.
    join = PushPull("intruder", "127.0.0.1:9", True, False, ())
    for packet in (encode_packet([join], None, now_ms()), encode_packet([join], KEY, 1)):
        assert call(a.url + "/internal/gossip/pushpull", "POST", packet)[0] == 401
    assert (
        metrics(a)["gossip_push_pull_refused_total"] >= before["gossip_push_pull_refused_total"] + 2
    )
    assert "intruder" not in members(a)


def test_with_a_cluster_key_unauthenticated_requests_neither_write_nor_read(keyed: Pair) -> None:
    a = keyed.a
    call(a.url + "/set?k=secret&v=s3cret")
    before = metrics(a)["internal_rejected_unauthenticated_total"]
    write = json.dumps(
        {
            "v": 1,
            "from": "x",
            "stable": 0,
            "batches": [[1 << 16, "x", False, [["evil", "1", None]]]],
        }
    ).encode()
    wrong = auth.signature("not-the-key", "POST", "/internal/replicate", write)
    give = json.dumps({"entries": [["evil", "1", 1 << 16, "x", None]]}).encode()
    attempts = [
        ("POST", "/internal/replicate", write, {}),
        ("POST", "/internal/replicate", write, {auth.HEADER: wrong}),
        ("POST", "/internal/replicate", write, {auth.HEADER: "00" * 32}),
        ("POST", "/internal/ae/give", give, {}),
        ("POST", "/internal/ae/descend", bytes([0]) + bytes(36), {}),
        ("GET", "/internal/ae/digests", None, {}),
        ("GET", "/internal/snapshot?limit=10", None, {}),
        ("POST", "/internal/replicate", b"garbage", {}),
    ]
    for method, path, body, headers in attempts:
        status, raw = call(a.url + path, method, body, headers)
        assert status == 401, (path, raw)
        assert b"s3cret" not in raw
        assert json.loads(raw)["code"] == "UNAUTHORIZED"
    assert metrics(a)["internal_rejected_unauthenticated_total"] >= before + len(attempts)
    assert call(a.url + "/get?k=evil")[0] == 404
    assert call(keyed.b.url + "/get?k=evil")[0] == 404
    # A correctly signed request is still served (the key works; the refusals were the point).
    path = "/internal/snapshot?limit=10"
    sent_ms = int(time.time() * 1000)
    signed = {
        auth.HEADER: auth.signature(KEY, "GET", path, b"", sent_ms),
        auth.TIME_HEADER: str(sent_ms),
    }
    ok = call(a.url + path, headers=signed)
    assert ok[0] == 200
    assert b"s3cret" in ok[1]
    # The same request signed correctly but ten minutes ago (a replay): refused and counted.
    old_ms = sent_ms - 600_000
    replayed = {
        auth.HEADER: auth.signature(KEY, "GET", path, b"", old_ms),
        auth.TIME_HEADER: str(old_ms),
    }
    counted = metrics(a)["internal_rejected_unauthenticated_total"]
    assert call(a.url + path, headers=replayed)[0] == 401
    assert metrics(a)["internal_rejected_unauthenticated_total"] == counted + 1


# --- slow and idle clients ------------------------------------------------------------------------


def _line_roundtrip(port: int, key: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"PUT {key} v\nGET {key}\n".encode())
        got = b""
        while got.count(b"\n") < 2:
            chunk = s.recv(4096)
            assert chunk, "the line server closed the connection"
            got += chunk
    assert got.count(b'"Ok"') == 2, got


def test_slow_and_idle_clients_do_not_starve_a_normal_one(tmp_path: Path) -> None:
    tcp_port = procs.free_port()
    node = procs.start_node(*FAST, tcp_port=tcp_port, log_dir=tmp_path, name="solo")
    idle: list[socket.socket] = []
    stop = threading.Event()
    slow_threads: list[threading.Thread] = []
    trickled = [0] * 5  # bytes each slowloris client has sent (or tried to, if closed on)
    try:
        # A few slowloris clients: a request header one byte a second, never finished.
        for i in range(len(trickled)):
            t = threading.Thread(target=slowloris, args=(node.port, i, stop, trickled), daemon=True)
            t.start()
            slow_threads.append(t)
        # A thousand idle connections each on HTTP and on the line protocol, never a byte.
        for port in (node.port, tcp_port):
            for _ in range(1000):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        # Every slow client is connected and mid-request. The idle connections were made
        # before the normal client's, so (accept queues are first in, first out) answering the
        # normal client means the node accepted them first. Each round trip must be answered
        # within the client's timeout; how fast is a figure of `make bench` (section "boundary").
        eventually(lambda: min(trickled) >= 1, what="every slow client sent a byte")
        for i in range(30):
            assert call(f"{node.url}/set?k=n{i}&v={i}")[0] == 200
            assert call(f"{node.url}/get?k=n{i}")[0] == 200
            _line_roundtrip(tcp_port, f"l{i}")
        assert node.proc.poll() is None
        log = node.log.read_text()
        assert "Traceback" not in log, log[-2000:]
    finally:
        stop.set()
        for s in idle:
            s.close()
        for t in slow_threads:
            t.join(5)
        procs.stop(node.proc)


@pytest.fixture(autouse=True)
def _enough_file_descriptors() -> None:
    """Two thousand idle sockets need more than a default 1024 descriptors (the node inherits
    the limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if os.name != "posix":  # pragma: no cover
        pytest.skip("POSIX sockets only")
