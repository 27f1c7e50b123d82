"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest import mesh as meshlib
from tests.e2e.meshes import mesh_of


@pytest.fixture
def running_mesh(tmp_path: Path) -> Iterator[meshlib.Mesh]:
    """Three node.py processes behind nginx (HTTP, line protocol, RESP), all on free loopback
    ports, as `make run` starts them; stopped by PID afterwards."""
    with mesh_of(meshlib.free_plan(3), tmp_path) as m:
        yield m
