"""`kvmesh`, the operator's command, against a real 3-node mesh behind nginx."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from click.testing import CliRunner

from cluster import ctl
from loadtest import mesh as meshlib
from loadtest import procs

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(procs.nginx_binary() is None, reason="nginx is not installed"),
]


def kvmesh(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.ctl", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=procs.ROOT,
        check=False,
    )


def test_the_operator_command(running_mesh: meshlib.Mesh) -> None:
    lb = running_mesh.plan.url
    members = kvmesh(lb, "members")
    assert members.returncode == 0, members.stderr
    lines = members.stdout.splitlines()
    assert lines[0].split() == ["Node", "Address", "Status", "Incarnation"]
    assert sorted(line.split()[0] for line in lines[1:]) == ["node1", "node2", "node3"]
    assert all("alive" in line for line in lines[1:])
    assert "(this node)" in members.stdout

    assert kvmesh(lb, "set", "greeting", "hello world", "--ttl", "60").stdout == "OK\n"
    assert kvmesh(lb, "get", "greeting").stdout == "hello world\n"
    for i in range(5):
        assert kvmesh(lb, "set", f"page:{i}", str(i)).returncode == 0
    listed = kvmesh(lb, "keys", "--filter", "page:*", "--limit", "2")  # three pages
    assert listed.stdout.splitlines() == [f"page:{i}\t{i}" for i in range(5)]
    assert kvmesh(lb, "del", "greeting").stdout == "deleted\n"

    missing = kvmesh(lb, "get", "greeting")
    assert (missing.returncode, missing.stderr) == (1, "NOT_FOUND: no such key: greeting\n")
    bad = kvmesh(lb, "set", "k" * 65, "v")
    assert bad.returncode == 1
    assert bad.stderr.startswith("KEY_TOO_LONG: ")
    ghost = kvmesh(lb, "remove", "ghost")
    assert (ghost.returncode, ghost.stderr) == (1, "NOT_FOUND: no such member: ghost\n")
    gone = kvmesh(f"http://127.0.0.1:{procs.free_port()}", "members")
    assert gone.returncode == 4
    assert gone.stderr.startswith("UNREACHABLE: ")

    node3 = running_mesh.plan.nodes[2]
    direct = f"http://127.0.0.1:{node3.port}"
    assert kvmesh(direct, "leave").stdout == "left\n"
    alone = kvmesh(direct, "members").stdout.splitlines()
    assert len(alone) == 2  # the header and itself: a mesh of one
    seed = f"127.0.0.1:{running_mesh.plan.nodes[0].port}"
    joined = kvmesh(direct, "join", seed)
    assert joined.stdout == "joined: 3 members\n", joined.stderr


def test_status_against_the_mesh(running_mesh: meshlib.Mesh) -> None:
    lb = running_mesh.plan.url
    names = ["node1", "node2", "node3"]
    for i in range(4):
        assert kvmesh(lb, "set", f"status:{i}", str(i)).returncode == 0

    deadline = time.monotonic() + 20
    while True:  # replication is asynchronous: wait until every node reports the four keys
        shown = kvmesh(lb, "status")
        assert shown.returncode == 0, shown.stderr
        header, members, nodes, events = shown.stdout.split("\n\n")
        keys = {row.split()[0]: row.split()[1] for row in nodes.splitlines()[1:]}
        if keys == dict.fromkeys(names, "4") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert keys == dict.fromkeys(names, "4"), shown.stdout
    assert nodes.splitlines()[0].split()[:3] == ["Node", "Keys", "Req/s"]

    assert header.startswith("mesh as seen by node")
    rows = members.splitlines()
    assert rows[0].split() == ["Node", "Address", "Status", "Incarnation", "Since"]
    assert sorted(row.split()[0] for row in rows[1:]) == names
    assert all(row.split()[-3] == "alive" for row in rows[1:]), shown.stdout
    assert events.startswith("Events (last 15 min):\n")
    assert " joined " in events, shown.stdout

    raw = kvmesh(lb, "status", "--json")
    assert raw.returncode == 0, raw.stderr
    body = json.loads(raw.stdout)
    assert body["served_by"] in names
    assert sorted(n["name"] for n in body["nodes"]) == names


STATUS: dict[str, Any] = {
    "served_by": "node1",
    "at": 1_700_000_000.0,
    "admin_token_required": False,
    "members": [
        {
            "name": "node1",
            "address": "127.0.0.1:18081",
            "state": "alive",
            "incarnation": 7,
            "for_s": 12.0,
        },
        {
            "name": "node2",
            "address": "127.0.0.1:18082",
            "state": "dead",
            "incarnation": 3,
            "for_s": 186.0,
        },
    ],
    "events": [
        {"at": 1_700_000_000.0, "name": "node2", "kind": "dead", "incarnation": 3, "detail": ""},
        {
            "at": 1_700_000_001.0,
            "name": "node3",
            "kind": "removed",
            "incarnation": 2,
            "detail": "by node1",
        },
    ],
    "nodes": [
        {
            "name": "node1",
            "address": "127.0.0.1:18081",
            "ready": True,
            "keys": 42,
            "tombstones": 1,
            "peers": [
                {"name": "node2", "address": "a", "queued": 5, "lag_ms": 900, "failing": True},
                {"name": "node3", "address": "b", "queued": 2, "lag_ms": 40, "failing": False},
            ],
            "refused_for_skew": 0,
            "repairs": 1,
            "repair_failures": 0,
            "last_repair": {
                "at": 1_700_000_000.0,
                "peer": "node3",
                "leaves": 3,
                "sent": 4,
                "received": 2,
                "applied": 1,
            },
            "hlc_ahead_ms": 0,
            "load": {"requests_per_s": 12.345, "p99_ms": 1.5, "series": []},
        },
        {"name": "node2", "address": "127.0.0.1:18082", "error": "timed out " + "x" * 80},
    ],
}


def test_status_formatting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctl.Client, "call", lambda self, method, path, body=None: STATUS)
    out = CliRunner().invoke(ctl.main, ["status"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == "mesh as seen by node1"
    assert lines[3].split() == ["node1", "(this", "node)", "127.0.0.1:18081", "alive", "7", "12s"]
    assert lines[4].split()[-1] == "3.1m"
    clock = time.strftime("%H:%M:%S", time.localtime(1_700_000_000.0))
    row = lines[7].split()
    assert row[:9] == ["node1", "42", "12.3", "1.50", "7", "(failing:", "node2)", "900", "0"]
    assert lines[7].endswith(f"{clock} with node3: 3 leaves, sent 4, got 2, applied 1")
    assert lines[8].startswith("node2  unreachable: timed out xxx")
    assert lines[8].endswith("...")
    assert len(lines[8].split("unreachable: ")[1]) == 60
    assert lines[10] == "Events (last 15 min):"
    assert lines[11] == f"{clock}  dead       node2  incarnation 3"
    assert lines[12].endswith("  removed    node3  incarnation 2, by node1")

    raw = CliRunner().invoke(ctl.main, ["status", "--json"])
    assert json.loads(raw.output) == STATUS
