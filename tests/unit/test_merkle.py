"""Anti-entropy by hash-tree descent (cluster/replication/merkle.py, repair.repair_with).

Two stores, a peer transport that hands each request to the peer's answers in the same process
(the code under test is the real requester and the real answers; only the wire is skipped), and
checks that a round moves exactly the differing entries, both ways, that a transaction landing
on the peer in the middle of a round arrives whole, and that no body a peer may send does more
than raise DecodeError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.core.clock import FakeClock
from cluster.core.digests import LEAF_LEVEL, leaf_of
from cluster.core.hlc import HybridClock
from cluster.core.store import Mutation, Store
from cluster.errors import DecodeError
from cluster.replication import antientropy, merkle
from cluster.replication.repair import RepairResult, repair_with

NOW = 1_700_000_000.0


class Replica:
    def __init__(self, name: str, clock: FakeClock) -> None:
        self.name = name
        self.store = Store()
        self.hlc = HybridClock(clock.wall)

    def write(self, key: str, value: str | None) -> int:
        ts = self.hlc.now()
        self.store.apply(key, value, ts, self.name)
        return ts


class Wire:
    """Requests to `peer`, answered by the same functions the peer service calls; `before`
    runs just before a given path is answered (a write landing in the middle of a round)."""

    def __init__(self, peer: Replica) -> None:
        self.peer = peer
        self.paths: list[str] = []
        self.before: dict[str, Callable[[], None]] = {}

    async def request(
        self, method: str, address: str, path: str, body: bytes = b"", within: float = 5.0
    ) -> bytes:
        route = urlsplit(path).path
        self.paths.append(route)
        if route in self.before:
            self.before.pop(route)()
        store, hlc = self.peer.store, self.peer.hlc
        if route == antientropy.DIGESTS_PATH:
            return antientropy.digests_reply(store)
        if route == merkle.DESCEND_PATH:
            return merkle.descend_reply(store, body)
        if route == merkle.RECONCILE_PATH:
            return merkle.reconcile_reply(store, hlc, body)
        assert route == merkle.GIVE_PATH
        return merkle.give_reply(store, hlc, body)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


def twins(clock: FakeClock, keys: int) -> tuple[Replica, Replica]:
    a, b = Replica("a", clock), Replica("b", clock)
    for i in range(keys):
        ts = a.hlc.now()
        for r in (a, b):
            r.store.apply(f"key-{i:06d}", "v" * 100, ts, "a")
    return a, b


def repair(a: Replica, wire: Wire) -> RepairResult:
    return asyncio.run(repair_with(a.store, a.hlc, wire, "b"))


def test_equal_replicas_cost_one_request(clock: FakeClock) -> None:
    a, b = twins(clock, 2_000)
    wire = Wire(b)
    result = repair(a, wire)
    assert (result.differing, result.sent, result.received) == (0, 0, 0)
    assert wire.paths == [antientropy.DIGESTS_PATH]


def test_a_round_moves_exactly_the_differing_entries_both_ways(clock: FakeClock) -> None:
    a, b = twins(clock, 20_000)
    only_a = [f"new-a-{i}" for i in range(30)]
    only_b = [f"new-b-{i}" for i in range(20)]
    for key in only_a:
        a.write(key, "x")
    for key in only_b:
        b.write(key, "y")
    a.write("key-000001", "newer on a")
    b.write("key-000002", "newer on b")
    a.write("key-000003", None)  # a delete travels as a tombstone
    wire = Wire(b)
    result = repair(a, wire)
    assert result.complete
    assert result.sent == len(only_a) + 2
    assert result.received == len(only_b) + 1
    assert result.applied == result.received
    touched = {leaf_of(k) for k in [*only_a, *only_b, "key-000001", "key-000002", "key-000003"]}
    assert result.differing == len(touched)
    assert a.store.tree()[0] == b.store.tree()[0]
    assert b.store.get("key-000001", NOW).value == "newer on a"  # type: ignore[union-attr]
    assert a.store.get("key-000002", NOW).value == "newer on b"  # type: ignore[union-attr]
    assert b.store.get("key-000003", NOW) is None
    assert wire.paths.count(merkle.DESCEND_PATH) == LEAF_LEVEL
    assert repair(a, Wire(b)).differing == 0


def test_the_bytes_follow_the_difference_not_the_data_set(clock: FakeClock) -> None:
    small, large = twins(clock, 2_000), twins(clock, 40_000)
    cost = []
    for a, _ in (small, large):
        for i in range(10):
            a.write(f"diverged-{i}", "d" * 100)
    for a, b in (small, large):
        result = repair(a, Wire(b))
        assert result.sent == 10
        cost.append(result.bytes)
    # Twenty times the keys, the same ten differing entries: at most a few hundred bytes more.
    assert cost[1] < cost[0] * 1.5


def test_equal_timestamps_from_two_writers_resolve_by_the_merge(clock: FakeClock) -> None:
    a, b = twins(clock, 100)
    ts = a.hlc.now()
    a.store.apply("tie", "from-a", ts, "a")
    b.store.apply("tie", "from-b", ts, "b")
    repair(a, Wire(b))
    assert a.store.entry("tie").node == b.store.entry("tie").node == "b"  # type: ignore[union-attr]


def test_a_transaction_landing_on_the_peer_mid_round_arrives_whole(clock: FakeClock) -> None:
    """Leaves judged equal before the transaction landed are not in the descent's result; the
    peer sends every leaf changed since the round began, so all its keys come together."""
    a, b = twins(clock, 5_000)
    a.write("unrelated", "starts the descent")
    keys = [f"txn-{i}" for i in range(40)]

    def land() -> None:
        ts = b.hlc.now()
        b.store.apply_many(Mutation(k, "t", ts, "b") for k in keys)

    wire = Wire(b)
    wire.before[merkle.RECONCILE_PATH] = land
    repair(a, wire)
    assert all(a.store.get(k, NOW) is not None for k in keys)


def test_a_transaction_landing_here_mid_round_goes_whole(clock: FakeClock) -> None:
    a, b = twins(clock, 5_000)
    b.write("unrelated", "starts the descent")
    keys = [f"txn-{i}" for i in range(40)]

    def land() -> None:  # on the requester, while its last descend request is out
        ts = a.hlc.now()
        a.store.apply_many(Mutation(k, "t", ts, "a") for k in keys)

    wire = Wire(b)
    original = wire.request
    calls = 0

    async def request(
        method: str, address: str, path: str, body: bytes = b"", within: float = 5.0
    ) -> bytes:
        nonlocal calls
        calls += 1
        if path == merkle.DESCEND_PATH and calls == LEAF_LEVEL + 1:
            land()
        return await original(method, address, path, body, within)

    wire.request = request  # type: ignore[method-assign]
    repair(a, wire)
    assert all(b.store.get(k, NOW) is not None for k in keys)


def test_a_clear_travels_with_the_round(clock: FakeClock) -> None:
    a, b = twins(clock, 1_000)
    ts = a.hlc.now()
    a.store.apply_clear(ts, "a")
    clock.advance(1.0)  # b's clock has handed out fewer timestamps: move past a's clear
    b.write("after-the-clear", "kept")
    repair(a, Wire(b))
    assert b.store.clear_version == a.store.clear_version
    assert len(b.store) == len(a.store) == 1


@given(st.binary(max_size=200))
def test_no_descend_body_does_more_than_raise_decode_error(body: bytes) -> None:
    store = Store()
    try:
        reply = merkle.descend_reply(store, body)
    except DecodeError:
        return
    assert len(reply) == (len(body) - 1) // 36


@given(st.binary(max_size=300))
def test_no_reconcile_or_give_body_changes_anything_unless_it_decodes(body: bytes) -> None:
    clock = FakeClock(NOW)
    replica = Replica("b", clock)
    replica.write("k", "v")
    before = replica.store.tree()[0][:]
    for answer in (merkle.reconcile_reply, merkle.give_reply):
        try:
            answer(replica.store, replica.hlc, body)
        except DecodeError:
            assert replica.store.tree()[0] == before
            assert replica.store.clear_version == (0, "")


def test_bad_bodies_are_refused_with_the_reason() -> None:
    store = Store()
    with pytest.raises(DecodeError, match="level"):
        merkle.descend_reply(store, bytes([LEAF_LEVEL]) + bytes(36))
    with pytest.raises(DecodeError, match="not on level"):
        merkle.descend_reply(store, bytes([0]) + (5).to_bytes(4, "little") + bytes(32))
    header = orjson.dumps({"since": 0, "clear": [0, ""]})
    truncated = len(header).to_bytes(4, "little") + header + (1).to_bytes(4, "little") + b"\x05\x00"
    with pytest.raises(DecodeError, match="ends inside a leaf"):
        merkle.reconcile_reply(store, HybridClock(FakeClock(NOW).wall), truncated)
    with pytest.raises(DecodeError, match="want"):
        merkle.decode_reconcile({"clear": [0, ""], "entries": [], "want": "***"})


Op = tuple[str, int, str | None, str]  # key, at (ms), value or a delete, writer

ops = st.lists(
    st.tuples(
        st.sampled_from([f"k{i}" for i in range(40)]),
        st.integers(min_value=1, max_value=500),
        st.one_of(st.none(), st.text(max_size=5)),
        st.sampled_from(["a", "b", "c"]),
    ),
    max_size=60,
)


@given(ops, ops, ops)
def test_a_round_makes_two_replicas_equal_to_the_merge_of_both(
    shared: list[Op], only_a: list[Op], only_b: list[Op]
) -> None:
    """Whatever each side holds, one round leaves both with exactly what merging every write
    into one store gives: the tree finds every difference, in both directions."""
    clock = FakeClock(NOW)
    a, b, merged = Replica("a", clock), Replica("b", clock), Replica("m", clock)
    base = int(NOW * 1000) << 16
    # One version is one write everywhere (an HLC never stamps two writes of a node alike): the
    # first value drawn for a (key, ts, writer) is the one every replica gets.
    written: dict[tuple[str, int, str], str | None] = {}
    for replicas, writes in (
        ((a, b, merged), shared),
        ((a, merged), only_a),
        ((b, merged), only_b),
    ):
        for key, at, value, writer in writes:
            value = written.setdefault((key, at, writer), value)
            for r in replicas:
                r.store.apply(key, value, base + (at << 16), writer)
    result = repair(a, Wire(b))
    assert result.complete
    want = sorted((k, e.value, e.ts, e.node) for k, e in merged.store.stored_items())
    for r in (a, b):
        assert sorted((k, e.value, e.ts, e.node) for k, e in r.store.stored_items()) == want
        assert r.store.tree()[0] == merged.store.tree()[0]
