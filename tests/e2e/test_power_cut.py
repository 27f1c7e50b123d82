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
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import procs

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(procs.nginx_binary() is None, reason="nginx is not installed"),
]


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.check", "--converge-timeout", "20s", *args],
        cwd=procs.ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    print(result.stdout, result.stderr)
    return result


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
