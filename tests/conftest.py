"""Shared fixtures: a fake clock, a node built on it, and an aiohttp test client on its app.

Kept general on purpose: other test files build on these (override `config` in a module or use
`make_node` / `make_client` for a node with different options).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import settings

from cluster.app import Node, build_app
from cluster.config import Config
from cluster.core.clock import FakeClock

# The signature of pytest-aiohttp's `aiohttp_client` fixture, as far as these fixtures use it.
AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]
MakeNode = Callable[..., Node]
MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]

# Hypothesis runs the same examples on every run ("tests are deterministic") and writes no example
# database into the work tree; HYPOTHESIS_PROFILE=explore searches afresh each run instead.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def fake_clock() -> FakeClock:
    """Wall and monotonic time that move only with `advance` (or `set_wall`)."""
    return FakeClock()


@pytest.fixture
def config() -> Config:
    """The node's configuration; override this fixture in a module for other options."""
    return Config.for_tests()


@pytest.fixture
def node(config: Config, fake_clock: FakeClock) -> Node:
    return Node(config, clock=fake_clock)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, node: Node) -> TestClient[Any, Any]:
    """A client of `node`'s app served by a real aiohttp test server on a loopback port."""
    return await aiohttp_client(build_app(node))


@pytest.fixture
def make_node(fake_clock: FakeClock) -> MakeNode:
    """Build another node on the shared fake clock: `make_node(max_body_bytes=1024)`."""

    def make(**overrides: Any) -> Node:
        return Node(Config.for_tests(**overrides), clock=fake_clock)

    return make


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient) -> MakeClient:
    """A test client for any node: `await make_client(make_node(...))`."""

    async def make(node: Node) -> TestClient[Any, Any]:
        return await aiohttp_client(build_app(node))

    return make
