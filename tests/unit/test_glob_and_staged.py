"""Two pure pieces RESP stands on: Redis globs (KEYS, SCAN MATCH) and staged write sets."""

from __future__ import annotations

import pytest

from cluster.config import Config
from cluster.core.clock import FakeClock
from cluster.core.hlc import HybridClock
from cluster.core.kv import KV, Limits
from cluster.core.patterns import compile_glob
from cluster.core.store import Store


@pytest.mark.parametrize(
    ("glob", "key", "matches"),
    [
        ("h?llo", "hello", True),
        ("h?llo", "hllo", False),
        ("h*llo", "heeeello", True),
        ("h*llo", "hllo", True),
        ("h[ae]llo", "hallo", True),
        ("h[ae]llo", "hillo", False),
        ("h[^e]llo", "hallo", True),
        ("h[^e]llo", "hello", False),
        ("h[a-b]llo", "hbllo", True),
        ("h[b-a]llo", "hbllo", True),  # a reversed range, as Redis reads it
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("user:*", "user:1", True),
        ("user:*", "usr:1", False),
        ("*", "", True),
        ("[", "[", True),  # no closing bracket: a literal, as Redis does
        ("*a*a*a*a*a*b", "a" * 200, False),  # linear, no backtracking blow-up
    ],
)
def test_redis_globs(glob: str, key: str, matches: bool) -> None:
    assert compile_glob(glob).matches(key) is matches


def test_a_glob_keeps_its_literal_prefix_for_the_scan() -> None:
    assert compile_glob("user:*").prefix == "user:"
    assert compile_glob("*x").prefix == ""
    assert compile_glob("a\\*b").prefix == "a"


@pytest.fixture
def kv() -> KV:
    clock = FakeClock()
    config = Config.for_tests()
    return KV(Store(), HybridClock(clock.wall), clock, "n1", Limits(config.max_key_length))


def test_staged_writes_are_read_back_and_committed_as_one_batch(kv: KV) -> None:
    kv.set("a", "old")
    staged = kv.stage()
    assert staged.get("a") == ("old", None)
    staged.put("a", "new", expires=kv.clock.wall() + 10)
    staged.put("b", "x")
    staged.delete("b")
    assert staged.get("a") == ("new", kv.clock.wall() + 10)
    assert staged.get("b") is None
    assert kv.get("a").value == "old"  # nothing applied before the commit
    batch = staged.commit()
    assert batch is not None
    assert {m.key for m in batch.mutations} == {"a", "b"}
    assert len({m.ts for m in batch.mutations}) == 1
    assert kv.get("a").value == "new"
    assert kv.get("b") is None
    assert staged.commit() is None  # nothing staged since


def test_a_staged_write_that_expired_reads_as_absent(kv: KV) -> None:
    staged = kv.stage()
    staged.put("t", "v", expires=kv.clock.wall() + 1)
    assert staged.get("t") is not None
    kv.clock.advance(2)  # type: ignore[attr-defined]
    assert staged.get("t") is None
