"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from loadtest import procs
from tests.integration.inproc import Start, started_nodes


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start whole in-process nodes by name (`await start("a", **config_overrides)`); they are
    stopped afterwards."""
    async for make in started_nodes():
        yield make


@pytest.fixture(scope="session")
def postgres() -> Iterator[procs.Postgres]:
    """A private PostgreSQL server for the session (initdb into a temporary directory, its own
    port; stopped and removed afterwards)."""
    if procs.postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed (make install-system installs it)")
    pg = procs.start_postgres()
    try:
        yield pg
    finally:
        procs.remove_postgres(pg)
