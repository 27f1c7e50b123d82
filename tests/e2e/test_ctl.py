"""`kvmesh`, the operator's command, against a real 3-node mesh behind nginx."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
