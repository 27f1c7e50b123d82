"""Fixtures that run a test module on both backends: the mesh's memory store and a PostgreSQL
database (a module imports `backend`, `config` and `make_node` from here to opt in)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from cluster.app import Node
from cluster.config import Config
from cluster.core.clock import FakeClock
from tests.conftest import MakeNode


# Every test runs on both backends: the mesh's memory store and a PostgreSQL database.
@pytest.fixture(params=["memory", "postgres"], name="backend")
def on_both_backends(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _store_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The store option: "memory", or the session's PostgreSQL emptied for this test."""
    if backend == "memory":
        return "memory"
    pg = request.getfixturevalue("postgres")
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute("DROP TABLE IF EXISTS kv_entries, kv_clear")
    finally:
        await conn.close()
    return str(pg.url)


@pytest.fixture(name="config")
async def config_on_backend(backend: str, request: pytest.FixtureRequest) -> Config:
    return Config.for_tests(store=await _store_url(backend, request))


@pytest.fixture(name="make_node")
async def make_node_on_backend(
    fake_clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> MakeNode:
    store = await _store_url(backend, request)

    def make(**overrides: Any) -> Node:
        return Node(Config.for_tests(store=store, **overrides), clock=fake_clock)

    return make
