"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.inproc import Start, started_nodes


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start whole in-process nodes by name (`await start("a", **config_overrides)`); they are
    stopped afterwards."""
    async for make in started_nodes():
        yield make
