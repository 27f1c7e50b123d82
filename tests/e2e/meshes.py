"""Meshes of node.py processes behind nginx, as the e2e tests start them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from loadtest import mesh as meshlib


@contextlib.contextmanager
def mesh_of(plan: meshlib.Plan, run_dir: Path) -> Iterator[meshlib.Mesh]:
    """The plan's nodes and nginx, started and serving; stopped by PID afterwards."""
    m = meshlib.Mesh(plan, run_dir, quiet=True)
    try:
        m.start_nodes()
        m.wait_nodes()
        m.start_nginx()
        m.wait_nginx()
        yield m
    finally:
        m.stop()
