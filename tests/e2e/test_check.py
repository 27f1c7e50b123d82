"""`python -m loadtest.check` for real, briefly: a clean verdict on a healthy mesh it is pointed
at (--url), and on a mesh of its own in which it kills a node with SIGKILL and restarts it, or
freezes one (SIGSTOP) for longer than nginx's read timeout.

That the checker can fail at all is shown on synthetic histories in tests/unit/test_check_logic.py.
"""

from __future__ import annotations

import pytest

from loadtest import mesh as meshlib
from loadtest import procs
from tests.e2e.checker import run_check

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(procs.nginx_binary() is None, reason="nginx is not installed"),
]


def test_a_healthy_mesh_passes(running_mesh: meshlib.Mesh) -> None:
    result = run_check("--url", running_mesh.plan.url, "--duration", "4s", "--writers", "6")
    assert result.returncode == 0
    assert "VERDICT: PASS (0 violations: none)" in result.stdout
    assert "3 nodes read identical" in result.stdout


def test_a_node_killed_and_restarted_midway_loses_nothing() -> None:
    result = run_check("--duration", "7s", "--writers", "6", "--kill-restart", "--down", "1s")
    assert result.returncode == 0
    assert "killed with SIGKILL" in result.stdout
    assert "is ready again" in result.stdout
    assert "VERDICT: PASS (0 violations: none)" in result.stdout


def test_a_node_frozen_midway_loses_nothing() -> None:
    # Many keys, so that a write the frozen node applied late would survive to the end and show.
    result = run_check(
        "--duration", "13s", "--writers", "6", "--keys", "1000", "--pause", "--down", "7s"
    )
    assert result.returncode == 0
    assert "frozen with SIGSTOP" in result.stdout
    assert "VERDICT: PASS (0 violations: none)" in result.stdout


def test_kill_restart_needs_a_mesh_of_its_own() -> None:
    result = run_check("--url", "http://127.0.0.1:1", "--kill-restart")
    assert result.returncode == 2
    assert "--kill-restart and --pause need a mesh of our own" in result.stderr
