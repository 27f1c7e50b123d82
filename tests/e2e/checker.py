"""The consistency checker (`python -m loadtest.check`) as the e2e tests run it."""

from __future__ import annotations

import subprocess
import sys

from loadtest import procs


def run_check(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the checker with `args` (its output printed for the test's report)."""
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.check", "--converge-timeout", "20s", *args],
        cwd=procs.ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    print(result.stdout, result.stderr)
    return result
