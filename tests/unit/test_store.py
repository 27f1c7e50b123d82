"""The versioned store: LWW merge, tombstones, the range tombstone of clear, TTL, scans."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.core.digests import bucket_of
from cluster.core.patterns import compile_pattern
from cluster.core.store import ZERO, Mutation, Store, Version

NOW = 1_700_000_000.0
FAR = 10**9  # a limit larger than any test's key count

# A stored state, comparable between stores: every entry (tombstones included) and the clear.
State = tuple[list[Mutation], Version]


def state(store: Store) -> State:
    check_invariants(store)
    entries, nxt = store.mutations(None, FAR)
    assert nxt is None
    return entries, store.clear_version


def check_invariants(store: Store) -> None:
    """The invariants the module docstring states."""
    data = dict(store.stored_items())
    assert store._count == len(data)
    assert all(bucket_of(k) == i for i, bucket in enumerate(store._buckets) for k in bucket)
    assert not set(store._keys) & store._fresh  # each key in one of them
    assert set(store._keys) | store._fresh == set(data)
    assert list(store._keys) == sorted(store._keys)
    assert list(store._index()) == sorted(data)
    assert store._tombstones == {k for k, e in data.items() if e.value is None}
    clear = store.clear_version
    assert all((e.ts, e.node) > clear for e in data.values())


def live(store: Store, now: float = NOW) -> dict[str, str]:
    return {k: e.value for k, e in store.iter_live(now) if e.value is not None}


def put(store: Store, key: str, value: str | None, ts: int, node: str = "n1", **kw: float) -> bool:
    return store.apply(key, value, ts, node, kw.get("expires"))


# --- LWW merge ----------------------------------------------------------------------------------


def test_a_newer_write_replaces_an_older_one() -> None:
    store = Store()
    assert put(store, "k", "old", 10)
    assert put(store, "k", "new", 20)
    assert store.get("k", NOW).value == "new"  # type: ignore[union-attr]


def test_an_older_write_arriving_late_loses() -> None:
    store = Store()
    assert put(store, "k", "new", 20)
    assert not put(store, "k", "old", 10)
    entry = store.get("k", NOW)
    assert entry is not None
    assert (entry.value, entry.version) == ("new", (20, "n1"))


def test_equal_timestamps_are_ordered_by_node_name() -> None:
    a, b = Store(), Store()
    put(a, "k", "from-a", 10, "node-a")
    put(a, "k", "from-b", 10, "node-b")
    put(b, "k", "from-b", 10, "node-b")
    put(b, "k", "from-a", 10, "node-a")
    assert state(a) == state(b)
    assert a.get("k", NOW).value == "from-b"  # type: ignore[union-attr]


def test_the_same_write_twice_is_a_no_op() -> None:
    store = Store()
    assert put(store, "k", "v", 10)
    before = state(store)
    assert not put(store, "k", "v", 10)
    assert state(store) == before


def test_apply_many_counts_the_writes_that_won() -> None:
    store = Store()
    put(store, "b", "newer", 50)
    batch = [
        Mutation("a", "1", 20, "n1"),
        Mutation("b", "2", 20, "n1"),  # loses to the newer "b"
        Mutation("c", None, 20, "n1"),
    ]
    assert store.apply_many(batch) == 2
    assert live(store) == {"a": "1", "b": "newer"}


# Mutations whose content is a function of their version: one node never issues the same
# timestamp for two different writes, so (key, ts, node) identifies one write.
_keys = st.sampled_from(["a", "b", "c", "ab"])
_nodes = st.sampled_from(["n1", "n2", "n3"])
_ts = st.integers(min_value=1, max_value=12)
_writes = st.dictionaries(
    st.tuples(_keys, _ts, _nodes),
    st.tuples(
        st.one_of(st.none(), st.text("xyz", max_size=2)),
        st.one_of(st.none(), st.sampled_from([NOW - 1, NOW + 5])),
    ),
    max_size=25,
).map(
    lambda d: [
        Mutation(k, v, ts, n, exp if v is not None else None) for (k, ts, n), (v, exp) in d.items()
    ]
)
_clears = st.lists(st.tuples(_ts, _nodes), max_size=3)

Op = Mutation | tuple[int, str]


def run(ops: Iterable[Op]) -> Store:
    store = Store()
    for op in ops:
        if isinstance(op, Mutation):
            store.apply(op.key, op.value, op.ts, op.node, op.expires)
        else:
            store.apply_clear(*op)
    return store


def expected_state(writes: list[Mutation], clears: list[tuple[int, str]]) -> State:
    """The LWW result, computed without the store: per key the highest version above the
    highest clear."""
    clear = max(clears, default=ZERO)
    best: dict[str, Mutation] = {}
    for m in writes:
        if (m.ts, m.node) <= clear:
            continue
        old = best.get(m.key)
        if old is None or (m.ts, m.node) > (old.ts, old.node):
            best[m.key] = m
    return [best[k] for k in sorted(best)], clear


@settings(max_examples=200, deadline=None)
@given(data=st.data(), writes=_writes, clears=_clears)
def test_merge_is_order_independent(
    data: st.DataObject, writes: list[Mutation], clears: list[tuple[int, str]]
) -> None:
    ops: list[Op] = [*writes, *clears]
    shuffled = data.draw(st.permutations(ops))
    assert state(run(shuffled)) == state(run(ops)) == expected_state(writes, clears)


@given(data=st.data(), writes=_writes, clears=_clears)
def test_merge_is_idempotent(
    data: st.DataObject, writes: list[Mutation], clears: list[tuple[int, str]]
) -> None:
    ops: list[Op] = [*writes, *clears]
    twice = data.draw(st.permutations(ops + ops))
    assert state(run(twice)) == state(run(ops))


@given(first=_writes, second=_writes)
def test_merge_is_commutative(first: list[Mutation], second: list[Mutation]) -> None:
    # Two replicas' streams, applied either way round (writes of equal version dropped, as two
    # nodes never produce different writes with the same version).
    versions = {(m.key, m.ts, m.node) for m in first}
    second = [m for m in second if (m.key, m.ts, m.node) not in versions]
    assert state(run(first + second)) == state(run(second + first))


# --- tombstones ---------------------------------------------------------------------------------


def test_a_tombstone_beats_older_writes() -> None:
    store = Store()
    put(store, "k", "v", 10)
    assert put(store, "k", None, 20)
    assert store.get("k", NOW) is None
    assert not put(store, "k", "late", 15)  # an older write replicated late does not resurrect
    assert store.get("k", NOW) is None
    tomb = store.entry("k")
    assert tomb is not None
    assert (tomb.value, tomb.version) == (None, (20, "n1"))
    assert len(store) == 0
    assert store.stats().tombstones == 1


def test_a_tombstone_loses_to_a_newer_write() -> None:
    store = Store()
    put(store, "k", None, 20)
    assert put(store, "k", "back", 30)
    assert store.get("k", NOW).value == "back"  # type: ignore[union-attr]
    assert store.stats().tombstones == 0
    assert len(store) == 1


def test_a_delete_that_arrives_before_its_write_still_wins() -> None:
    store = Store()
    assert put(store, "k", None, 20)  # the delete is kept although there is nothing to delete
    assert not put(store, "k", "v", 10)
    assert store.get("k", NOW) is None


# --- clear: a range tombstone -----------------------------------------------------------------


def test_clear_drops_everything_at_or_below_it() -> None:
    store = Store()
    put(store, "a", "1", 10)
    put(store, "b", None, 11)
    put(store, "c", "3", 20, "n1")
    assert store.apply_clear(20, "n1")
    assert live(store) == {}
    assert state(store) == ([], (20, "n1"))
    assert store.stats().clear_ts == 20


def test_clear_keeps_newer_writes() -> None:
    store = Store()
    put(store, "old", "1", 10)
    put(store, "same-ts-higher-node", "2", 20, "n2")
    put(store, "newer", "3", 30)
    assert store.apply_clear(20, "n1")
    assert live(store) == {"newer": "3", "same-ts-higher-node": "2"}


def test_writes_at_or_below_a_clear_are_refused_afterwards() -> None:
    store = Store()
    store.apply_clear(20, "n2")
    assert not put(store, "a", "older", 10)
    assert not put(store, "b", "same-version", 20, "n2")
    assert not put(store, "c", "same-ts-lower-node", 20, "n1")
    assert not put(store, "d", None, 5)  # tombstones below the clear are not kept either
    assert put(store, "e", "same-ts-higher-node", 20, "n3")
    assert put(store, "f", "newer", 21, "n1")
    assert live(store) == {"e": "same-ts-higher-node", "f": "newer"}
    assert store.stats().tombstones == 0


def test_an_older_clear_is_a_no_op() -> None:
    store = Store()
    store.apply_clear(20, "n1")
    put(store, "k", "v", 30)
    before = state(store)
    assert not store.apply_clear(15, "n1")
    assert not store.apply_clear(20, "n1")
    assert state(store) == before


def test_clear_resets_expiry_tracking() -> None:
    store = Store()
    put(store, "gone", "1", 10, expires=NOW + 1)
    put(store, "kept", "2", 30, expires=NOW + 1)
    store.apply_clear(20, "n1")
    assert store.reclaim_expired(NOW + 2) == 1  # only the survivor is reclaimed
    assert store.entry("gone") is None
    assert store.entry("kept").value is None  # type: ignore[union-attr]


# --- TTL --------------------------------------------------------------------------------------


def test_an_entry_is_invisible_from_its_expiry_time_on() -> None:
    store = Store()
    put(store, "k", "v", 10, expires=NOW + 5)
    assert store.get("k", NOW + 4.999) is not None
    assert store.get("k", NOW + 5) is None  # lazily, with no reclamation run
    assert store.get("k", NOW + 50) is None
    assert live(store, NOW + 5) == {}
    assert store.scan(None, 10, NOW + 5) == ([], None)
    assert store.entry("k").value == "v"  # type: ignore[union-attr]  # still stored


def test_rewriting_a_key_without_ttl_removes_its_expiry() -> None:
    store = Store()
    put(store, "k", "v", 10, expires=NOW + 5)
    put(store, "k", "forever", 20)
    assert store.get("k", NOW + 100).value == "forever"  # type: ignore[union-attr]
    assert store.reclaim_expired(NOW + 100) == 0  # the old heap item is stale and skipped
    assert store.get("k", NOW + 100) is not None


def test_reclaim_turns_expired_entries_into_tombstones_of_the_same_version() -> None:
    store = Store()
    put(store, "k", "v", 10, "n2", expires=NOW + 5)
    put(store, "other", "w", 11, expires=NOW + 60)
    assert store.reclaim_expired(NOW + 4) == 0
    assert store.reclaim_expired(NOW + 5) == 1
    tomb = store.entry("k")
    assert tomb is not None
    assert (tomb.value, tomb.version, tomb.expires) == (None, (10, "n2"), None)
    assert store.stats().tombstones == 1
    assert live(store, NOW + 5) == {"other": "w"}
    check_invariants(store)
    # An older write arriving late still loses; a newer one wins.
    assert not put(store, "k", "late", 9)
    assert not put(store, "k", "same version", 10, "n2")
    assert store.get("k", NOW + 5) is None
    assert put(store, "k", "newer", 12)
    assert store.get("k", NOW + 5).value == "newer"  # type: ignore[union-attr]


def test_reclaim_is_bounded_and_takes_the_earliest_first() -> None:
    store = Store()
    for i in range(10):
        put(store, f"k{i}", "v", 10 + i, expires=NOW + 10 - i)  # k9 expires first
    assert store.reclaim_expired(NOW + 100, budget=3) == 3
    assert {k for k in store._tombstones} == {"k9", "k8", "k7"}
    assert store.reclaim_expired(NOW + 100, budget=100) == 7
    assert store.reclaim_expired(NOW + 100) == 0
    assert len(store) == 0


def test_reclaim_skips_entries_deleted_or_rewritten_since() -> None:
    store = Store()
    put(store, "deleted", "v", 10, expires=NOW + 1)
    put(store, "deleted", None, 11)
    put(store, "extended", "v", 10, expires=NOW + 1)
    put(store, "extended", "v2", 11, expires=NOW + 100)
    assert store.reclaim_expired(NOW + 2) == 0
    assert store.get("extended", NOW + 2).value == "v2"  # type: ignore[union-attr]
    assert store.reclaim_expired(NOW + 100) == 1


# --- purging tombstones -----------------------------------------------------------------------


def test_purge_forgets_tombstones_older_than_the_watermark() -> None:
    store = Store()
    put(store, "a", None, 10)
    put(store, "b", None, 20)
    put(store, "c", None, 30)
    put(store, "live", "v", 5)
    assert store.purge_tombstones(watermark=20) == 1
    assert store.entry("a") is None
    assert store.entry("b") is not None  # not strictly older than the watermark
    assert store.purge_tombstones(watermark=31) == 2
    assert state(store) == ([Mutation("live", "v", 5, "n1")], ZERO)
    assert store.stats().tombstones == 0
    assert store.purge_tombstones(watermark=10**6) == 0  # live entries are never purged


def test_purge_is_bounded() -> None:
    store = Store()
    for i in range(10):
        put(store, f"k{i}", None, 10)
    assert store.purge_tombstones(watermark=11, budget=4) == 4
    assert store.stats().tombstones == 6
    check_invariants(store)


def test_purged_reclaimed_entries_leave_no_trace() -> None:
    store = Store()
    put(store, "k", "v", 10, expires=NOW + 1)
    store.reclaim_expired(NOW + 1)
    assert store.purge_tombstones(watermark=11) == 1
    assert state(store) == ([], ZERO)


# --- scans ------------------------------------------------------------------------------------


def fill(store: Store, keys: Iterable[str], ts: int = 1) -> None:
    for k in keys:
        put(store, k, f"v-{k}", ts)


def scan_all(
    store: Store, limit: int, pattern: str | None = None, budget: int = 10_000
) -> tuple[list[str], int]:
    compiled = compile_pattern(pattern) if pattern is not None else None
    out: list[str] = []
    after: str | None = None
    calls = 0
    while True:
        page, after = store.scan(after, limit, NOW, compiled, budget)
        calls += 1
        assert len(page) <= limit
        out.extend(k for k, _ in page)
        if after is None:
            return out, calls


def test_scan_returns_live_pairs_in_key_order() -> None:
    store = Store()
    fill(store, ["b", "a", "d", "c"])
    put(store, "c", None, 2)
    put(store, "e", "x", 2, expires=NOW - 1)
    page, after = store.scan(None, 10, NOW)
    assert [(k, e.value) for k, e in page] == [("a", "v-a"), ("b", "v-b"), ("d", "v-d")]
    assert after is None


def test_scan_pages_resume_after_the_last_key() -> None:
    store = Store()
    fill(store, "abcde")
    page, after = store.scan(None, 2, NOW)
    assert ([k for k, _ in page], after) == (["a", "b"], "b")
    page, after = store.scan(after, 2, NOW)
    assert ([k for k, _ in page], after) == (["c", "d"], "d")
    page, after = store.scan(after, 2, NOW)
    assert ([k for k, _ in page], after) == (["e"], None)


def test_scan_of_an_empty_store() -> None:
    assert Store().scan(None, 10, NOW) == ([], None)
    assert Store().scan("x", 10, NOW) == ([], None)


def test_scan_with_a_literal_prefix_jumps_to_it_and_stops_after_it() -> None:
    store = Store()
    fill(store, ["a1", "user:1", "user:2", "user:3", "users", "z"])
    assert scan_all(store, 10, "user:*")[0] == ["user:1", "user:2", "user:3"]
    # Only the prefix range (and the first key past it) is examined.
    page, after = store.scan(None, 10, NOW, compile_pattern("user:*"), budget=4)
    assert ([k for k, _ in page], after) == (["user:1", "user:2", "user:3"], None)
    # A cursor before the prefix range starts at the range; one past it ends the scan.
    assert [k for k, _ in store.scan("a", 10, NOW, compile_pattern("user:*"))[0]] == [
        "user:1",
        "user:2",
        "user:3",
    ]
    assert store.scan("user:2", 10, NOW, compile_pattern("user:*"))[0][0][0] == "user:3"
    assert store.scan("zz", 10, NOW, compile_pattern("user:*")) == ([], None)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", ["abc", "abd", "bc", "world", "wod", "word"]),
        ("ab?", ["abc", "abd"]),
        ("*c", ["abc", "bc"]),
        ("wo$d", ["wod", "word", "world"]),
        ("?", []),
        ("nothing*", []),
    ],
)
def test_scan_with_a_pattern(pattern: str, expected: list[str]) -> None:
    store = Store()
    fill(store, ["abc", "abd", "bc", "world", "wod", "word"])
    for limit in (1, 2, 100):
        assert scan_all(store, limit, pattern)[0] == sorted(expected)


def test_a_scan_examines_at_most_its_budget() -> None:
    store = Store()
    for i in range(100):
        put(store, f"t{i:03}", None, 1)  # a long run of tombstones
    fill(store, ["u1", "u2"])
    page, after = store.scan(None, 10, NOW, budget=30)
    assert (page, after) == ([], "t029")  # nothing found yet, but the cursor moved on
    keys, calls = scan_all(store, 10, budget=30)
    assert keys == ["u1", "u2"]
    assert calls == 4  # ceil(102 / 30)


def test_a_budget_limited_scan_with_a_pattern_still_finds_everything() -> None:
    store = Store()
    fill(store, [f"k{i:03}" for i in range(200)])
    keys, calls = scan_all(store, 5, "k??7", budget=16)
    assert keys == [f"k{i:03}" for i in range(200) if i % 10 == 7]
    assert calls >= 200 // 16


def test_iter_live_spans_many_pages() -> None:
    store = Store()
    keys = [f"k{i:05}" for i in range(2500)]
    fill(store, keys)
    assert list(live(store)) == keys


def test_mutations_pages_through_every_stored_entry() -> None:
    store = Store()
    fill(store, "abcde")
    put(store, "c", None, 2)
    first, nxt = store.mutations(None, 3)
    assert [m.key for m in first] == ["a", "b", "c"]
    assert first[2] == Mutation("c", None, 2, "n1")
    rest, nxt = store.mutations(nxt, 3)
    assert ([m.key for m in rest], nxt) == (["d", "e"], None)


_scan_keys = st.text("abc", min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(
    stable=st.sets(_scan_keys, max_size=20),
    churn=st.lists(
        st.lists(st.tuples(st.sampled_from(["write", "delete"]), _scan_keys), max_size=6),
        max_size=30,
    ),
    limit=st.integers(min_value=1, max_value=5),
    budget=st.integers(min_value=1, max_value=8),
    pattern=st.sampled_from([None, "*", "a*", "b?", "*c", "?a*", "ab"]),
)
def test_a_key_present_for_the_whole_scan_appears_exactly_once(
    stable: set[str],
    churn: list[list[tuple[str, str]]],
    limit: int,
    budget: int,
    pattern: str | None,
) -> None:
    """Other keys are inserted, deleted and stable ones rewritten between pages."""
    store = Store()
    fill(store, stable)
    compiled = compile_pattern(pattern) if pattern is not None else None
    ts = 2
    seen: list[str] = []
    after: str | None = None
    for step in range(10_000):
        page, after = store.scan(after, limit, NOW, compiled, budget)
        assert len(page) <= limit
        for key, entry in page:
            assert entry.value is not None
            assert compiled is None or compiled.matches(key)
        seen.extend(k for k, _ in page)
        if after is None:
            break
        for op, key in churn[step] if step < len(churn) else ():
            ts += 1
            if key in stable:
                put(store, key, f"v{ts}", ts)  # rewritten, but present throughout
            elif op == "delete":
                put(store, key, None, ts)
            else:
                put(store, key, f"v{ts}", ts)
    else:
        pytest.fail("the scan did not end")
    assert seen == sorted(set(seen))  # in order, no key twice
    matching = {k for k in stable if compiled is None or compiled.matches(k)}
    assert matching <= set(seen)
