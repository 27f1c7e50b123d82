"""Shared fixtures: a fake clock, a node built on it, and an aiohttp test client on its app.

Kept general on purpose: other test files build on these (override `config` in a module or use
`make_node` / `make_client` for a node with different options).

Two suite-wide rules live here as well:

- Hypothesis profiles. `ci` (the default) is derandomized: the same examples on every run.
  `HYPOTHESIS_PROFILE=explore` searches afresh on every run with `HYPOTHESIS_MAX_EXAMPLES`
  (default 2000) examples for every property test, replacing the tests' own `max_examples` caps
  (`make explore`, `EXAMPLES=...` to change the count).
- No skips in CI. With `CI=true` (or `CI=1`) in the environment, a test that skips fails
  instead, with "CI=true: a test may not skip for a missing tool: <reason>": a machine without
  nginx, nft, docker-compose... would otherwise pass without running the e2e and fault suites
  (`make install-system` installs every tool they need). A skip raised in the test itself is
  reported as failed, one raised in setup (a `skipif` marker, a fixture) as an error, one raised
  while importing a module (`pytest.importorskip`, a module-level skip) as a collection error.
  xfail is not a skip and is left alone. A skip that is not about a missing tool (the platform,
  say) stays a skip when it is explicitly allowed, either way:

  - the test (or its module, through `pytestmark`) carries
    `@pytest.mark.ci_may_skip("why this skip is not about a missing tool")`;
  - the skip reason starts with "not applicable: ", e.g.
    `pytest.skip("not applicable: POSIX sockets only")` (the only way for a module-level skip).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import is_hypothesis_test, settings

from cluster.app import Node, build_app
from cluster.config import Config
from cluster.core.clock import FakeClock

# The signature of pytest-aiohttp's `aiohttp_client` fixture, as far as these fixtures use it.
AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]
MakeNode = Callable[..., Node]
MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]

# Hypothesis runs the same examples on every run ("tests are deterministic") and writes no example
# database into the work tree; HYPOTHESIS_PROFILE=explore searches afresh each run instead, with
# HYPOTHESIS_MAX_EXAMPLES examples for every property test (see pytest_collection_modifyitems).
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
EXPLORE_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "2000"))
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile(
    "explore", derandomize=False, database=None, print_blob=True, max_examples=EXPLORE_EXAMPLES
)
settings.load_profile(HYPOTHESIS_PROFILE)

# Under CI=true a skip fails the run unless the test carries this marker or the reason starts with
# this prefix (see the module docstring).
CI_MAY_SKIP_MARKER = "ci_may_skip"
CI_MAY_SKIP_PREFIX = "not applicable: "
CI_SKIP_MESSAGE = "CI=true: a test may not skip for a missing tool: {reason}"
CI_SKIP_HINT = (
    "(`make install-system` installs every tool the suite needs; a skip that is not about a "
    f"missing tool needs @pytest.mark.{CI_MAY_SKIP_MARKER}(...) or a reason starting "
    f"{CI_MAY_SKIP_PREFIX!r}: see tests/conftest.py)"
)


def in_ci() -> bool:
    """Whether CI=true (or CI=1) is set; read at every report, so tests can change it."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason given to a skip, without pytest's "Skipped: " prefix."""
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skip report into a failure whose message names the skip's reason."""
    reason = skip_reason(report)
    if reason.startswith(CI_MAY_SKIP_PREFIX):
        return
    report.outcome = "failed"
    report.longrepr = CI_SKIP_MESSAGE.format(reason=reason) + "\n" + CI_SKIP_HINT


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")  # an xfail is reported as skipped too
        and in_ci()
        and item.get_closest_marker(CI_MAY_SKIP_MARKER) is None
    ):
        fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if report.skipped and in_ci():
        fail_skip(report)
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under the explore profile every property test runs EXPLORE_EXAMPLES examples, its own
    `@settings(max_examples=...)` cap (there for CI's time) included."""
    if HYPOTHESIS_PROFILE != "explore":
        return
    for item in items:
        if isinstance(item, pytest.Function) and is_hypothesis_test(item.obj):
            # Where @given and @settings keep a test's settings (Hypothesis's pytest plugin
            # adjusts them the same way); read when the test runs.
            test = getattr(item.obj, "__func__", item.obj)
            own = test._hypothesis_internal_use_settings
            test._hypothesis_internal_use_settings = settings(own, max_examples=EXPLORE_EXAMPLES)


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
