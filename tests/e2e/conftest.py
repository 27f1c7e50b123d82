"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest import mesh as meshlib


@pytest.fixture
def running_mesh(tmp_path: Path) -> Iterator[meshlib.Mesh]:
    """Three node.py processes behind nginx (HTTP, line protocol, RESP), all on free loopback
    ports, as `make run` starts them; stopped by PID afterwards."""
    m = meshlib.Mesh(meshlib.free_plan(3), tmp_path, quiet=True)
    try:
        m.start_nodes()
        m.wait_nodes()
        m.start_nginx()
        m.wait_nginx()
        yield m
    finally:
        m.stop()
