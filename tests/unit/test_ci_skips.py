"""Under CI=true a skipping test fails (tests/conftest.py); without it a skip stays a skip.

Each test runs a small inner pytest session (pytester) with this suite's conftest loaded as a
plugin and the project's strict settings (`--strict-markers`, warnings as errors), over tests that
skip in every way pytest allows: in the test body, by a `skipif` marker, in a fixture, at module
import, plus the two allowed escapes (the `ci_may_skip` marker, the "not applicable: " prefix)
and an xfail, which is not a skip.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INNER_INI = """
[pytest]
addopts = -ra --strict-markers -p tests.conftest
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
markers =
    ci_may_skip(reason): the test may skip even under CI=true
"""

SKIPS = """
import pytest


@pytest.fixture
def tool() -> None:
    pytest.skip("docker-compose is not installed")


def test_body_skip() -> None:
    pytest.skip("nginx is not installed")


@pytest.mark.skipif(True, reason="wrk is not installed")
def test_marker_skip() -> None:
    pass


def test_fixture_skip(tool: None) -> None:
    pass


def test_runs() -> None:
    pass
"""

ALLOWED = """
import pytest


@pytest.mark.ci_may_skip("the platform, not a tool")
def test_marked_skip() -> None:
    pytest.skip("POSIX sockets only")


def test_prefixed_skip() -> None:
    pytest.skip("not applicable: POSIX sockets only")


@pytest.mark.xfail(reason="a known bug", strict=True)
def test_xfail() -> None:
    raise AssertionError("the bug")
"""

MODULE_SKIP = """
import pytest

pytest.importorskip("kvmesh_no_such_module")


def test_never_collected() -> None:
    pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_skips=SKIPS, test_allowed=ALLOWED)
    return pytester


def test_under_ci_every_skip_for_a_missing_tool_fails(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = inner.runpytest("test_skips.py")
    # A skip in the body fails the test; one in setup (marker, fixture) is a setup error.
    result.assert_outcomes(passed=1, failed=1, errors=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    for reason in ("nginx", "wrk", "docker-compose"):
        result.stdout.fnmatch_lines(
            [f"*CI=true: a test may not skip for a missing tool: {reason} is not installed*"]
        )


def test_without_ci_a_skip_stays_a_skip(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = inner.runpytest("test_skips.py")
    result.assert_outcomes(passed=1, skipped=3)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.no_fnmatch_line("*CI=true*")


@pytest.mark.parametrize("value", ["false", "", "0"])
def test_ci_other_than_true_changes_nothing(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    inner.runpytest("test_skips.py").assert_outcomes(passed=1, skipped=3)


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_allowed_skips_and_xfail_stay_under_ci(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    result = inner.runpytest("test_allowed.py")
    result.assert_outcomes(skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_module_level_skip_is_a_collection_error_under_ci(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner.makepyfile(test_module_skip=MODULE_SKIP)
    monkeypatch.setenv("CI", "true")
    result = inner.runpytest("test_module_skip.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*CI=true: a test may not skip for a missing tool: could not import*"]
    )
    monkeypatch.delenv("CI")
    inner.runpytest("test_module_skip.py").assert_outcomes(skipped=1)
