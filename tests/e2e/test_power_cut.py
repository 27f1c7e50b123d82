"""The whole mesh loses power: every node SIGKILLed at once under load, then restarted.

No node survives to hand the data back, so what comes back is what each node kept on disk
(`--data-dir`, one directory per node, `--fsync always`). `python -m loadtest.check --power-cut`
drives concurrent writers through nginx (sets, deletes, batches, read-your-writes probes), kills
every node by PID a third of the way in, restarts them all, waits until all serve again (each finds
every peer joining and serves its own copy after --join-timeout), lets the writers go on, and
judges by last-writer-wins (`loadtest.oracle`): no acknowledged write lost, no deleted key back,
every node identical. Many keys, so that most keys' last write happened before the cut and must
come back from disk.

Line-protocol transactions and torn batches/transactions are judged by the fault suite's
`power-cut` scenario (tests/e2e/test_faults.py, on network namespaces; docs/faults.md).

The same cut on docker-compose.yml's layout: three replicas of the compose node command share
one volume (a temporary directory here), each claims a directory of its own in it, and after all
are killed and started again (recreated: new addresses) they claim them again and restore them.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from loadtest import procs
from tests.e2e import checker
from tests.e2e import test_compose as compose

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(procs.nginx_binary() is None, reason="nginx is not installed"),
]


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return checker.run_check(*args, timeout=50)


@pytest.mark.timeout(55)
def test_every_node_killed_at_once_and_restarted_loses_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    result = run_check(
        "--power-cut",
        "--duration", "9s",
        "--writers", "6",
        "--keys", "1000",
        "--down", "0.5s",
        "--data-root", str(data),
        "--node-arg=--fsync=always",
        "--node-arg=--join-timeout=2",
        "--keep-logs",
    )  # fmt: skip
    logs = re.search(r"node and nginx logs: (\S+)", result.stdout)
    try:
        assert result.returncode == 0
        assert "every node killed with SIGKILL at once" in result.stdout
        assert "every node is ready again" in result.stdout
        assert "VERDICT: PASS (0 violations: none)" in result.stdout
        assert "3 nodes read identical" in result.stdout
        acked = re.search(
            r"operations\s+\d+: (\d+) acknowledged \(\d+ sets, (\d+) deletes", result.stdout
        )
        assert acked is not None
        assert int(acked.group(1)) > 100
        assert int(acked.group(2)) > 0
        # The data came back from each node's own disk copy, not from a peer.
        assert logs is not None
        for node in ("node1", "node2", "node3"):
            assert (data / node / "kvmesh.db").exists()
            restored = re.findall(
                r"restored (\d+) entries from \S+",
                (Path(logs.group(1)) / f"{node}.log").read_text(),
            )
            assert len(restored) == 2, restored  # the first start, then the one after the cut
            assert int(restored[1]) > 0, restored
    finally:
        if logs is not None:
            shutil.rmtree(logs.group(1), ignore_errors=True)


# --- the same on docker-compose's layout ----------------------------------------------------------

# The compose file's node command, run here as tests/e2e/test_compose.py runs it (its fixtures:
# the validated config, replicas behind a fake Docker DNS), with the volume a temporary directory.
config = compose.config
start_nodes = compose.start_nodes


def _get(node: compose.ComposeNode, path: str) -> tuple[int, bytes]:
    with closing(http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)) as c:
        c.request("GET", path)
        resp = c.getresponse()
        return resp.status, resp.read()


def _send(node: compose.ComposeNode, method: str, path: str, body: object = None) -> str:
    with closing(http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)) as c:
        c.request(method, path, body=None if body is None else json.dumps(body).encode())
        resp = c.getresponse()
        resp.read()
        assert resp.status == 200, (method, path, resp.status)
        return resp.headers["X-Replicas"] or ""


def _claimed(node: compose.ComposeNode, root: Path) -> str:
    found = re.findall(
        rf"keeps its data in {re.escape(str(root))}/(node-\d+) ", node.log.read_text()
    )
    assert found, node.log.read_text()
    return found[-1]


@compose.need_compose
@pytest.mark.timeout(55)
def test_compose_replicas_keep_their_data_in_the_volume_across_a_power_cut(
    config: dict[str, Any], start_nodes: compose.StartNodes, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    env = {"KV_DATA_ROOT": str(volume), "KV_DISCOVER_WAIT": "1", "KV_JOIN_TIMEOUT": "2"}
    assert config["services"]["node"]["environment"]["KV_DATA_ROOT"] == "/data"
    assert config["services"]["node"]["environment"]["KV_FSYNC"] == "everysec"
    nodes = start_nodes(config, 3, **env)
    compose.wait_healthy(nodes)
    # Each replica claimed a directory of its own in the shared volume.
    assert sorted(_claimed(n, volume) for n in nodes) == ["node-1", "node-2", "node-3"]
    values = {f"pc{i:03d}": f"v{i}" for i in range(200)}
    assert _send(nodes[0], "PUT", "/keys", values) == "3/3"
    for i, key in enumerate(sorted(values)[:20]):
        assert _send(nodes[i % 3], "DELETE", f"/keys/{key}") == "3/3"
    for node in nodes:
        os.kill(node.proc.pid, signal.SIGKILL)  # sh exec'd node.py: the node's own PID
    for node in nodes:
        node.proc.wait(10)

    # Recreated containers: new addresses (new ports here), the same volume.
    again = start_nodes(config, 3, **env)
    compose.wait_healthy(again)
    assert sorted(_claimed(n, volume) for n in again) == ["node-1", "node-2", "node-3"]
    for node in again:
        restored = re.findall(r"restored (\d+) entries from ", node.log.read_text())
        assert restored, node.log.read_text()
        assert int(restored[-1]) >= 180, restored  # 180 values (and 20 tombstones, unless purged)
        status, body = _get(node, "/keys?filter=pc*&limit=1000")
        assert status == 200
        assert json.loads(body)["data"] == {k: v for k, v in sorted(values.items())[20:]}
