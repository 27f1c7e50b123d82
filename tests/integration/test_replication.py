"""Replication, anti-entropy and snapshots between in-process nodes over real loopback HTTP.

Peers are wired by hand (`replicator.peer_up`), so these tests exercise the data plane alone;
membership has tests of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cluster.app import Node, build_app
from cluster.config import Config
from cluster.replication import repair
from tests.integration.inproc import Running

Member = Running  # a whole in-process node (tests.integration.inproc)


MakeMesh = Callable[..., Awaitable[list[Member]]]


@pytest.fixture
async def make_mesh() -> AsyncIterator[MakeMesh]:
    started: list[Member] = []

    async def make(n: int, wire: bool = True, **overrides: object) -> list[Member]:
        members = []
        for i in range(n):
            cfg = Config.for_tests(name=f"n{i}", antientropy_interval=3600.0, **overrides)
            node = Node(cfg)
            client = TestClient(TestServer(build_app(node)))
            await client.start_server()
            members.append(Member(node, client))
        started.extend(members)
        if wire:
            for a in members:
                for b in members:
                    if a is not b:
                        a.node.replicator.peer_up(b.name, b.address)
        return members

    yield make
    for m in started:
        await m.client.close()


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    """Poll a condition on the nodes' state (no event to wait on: it changes inside the store)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling state that has no event of its own
            await asyncio.sleep(0.01)


def value(m: Member, key: str) -> str | None:
    e = m.node.store.get(key, m.node.clock.wall())
    return e.value if e is not None else None


async def test_sync_write_reaches_every_peer_before_the_answer(make_mesh: MakeMesh) -> None:
    a, b, c = await make_mesh(3)
    resp = await a.client.put("/keys/k", json={"value": "v1"})
    assert resp.status == 200
    assert resp.headers["X-Replicas"] == "3/3"
    assert value(b, "k") == "v1"
    assert value(c, "k") == "v1"


async def test_every_kind_of_write_replicates(make_mesh: MakeMesh) -> None:
    a, b = await make_mesh(2)
    await a.client.put("/keys", json={"x": "1", "y": "2", "z": "3"})
    await a.client.put("/keys/t", json={"value": "ttl", "ttl": 100})
    await a.client.delete("/keys/y")
    assert (value(b, "x"), value(b, "y"), value(b, "z")) == ("1", None, "3")
    t = b.node.store.entry("t")
    assert t is not None
    assert t.expires is not None
    batch = b.node.store.entry("x")
    assert batch is not None
    assert batch.ts == b.node.store.entry("z").ts
    await a.client.delete("/keys")
    assert len(b.node.store) == 0
    assert b.node.store.clear_version == a.node.store.clear_version


async def test_conflicting_writes_converge_to_the_greatest_version(make_mesh: MakeMesh) -> None:
    a, b = await make_mesh(2, wire=False)
    await a.client.put("/keys/k", json={"value": "from-a"})
    await b.client.put("/keys/k", json={"value": "from-b"})
    a.node.replicator.peer_up(b.name, b.address)
    b.node.replicator.peer_up(a.name, a.address)
    await a.node.lifecycle.repair_once()
    ea, eb = a.node.store.entry("k"), b.node.store.entry("k")
    assert ea is not None
    assert eb is not None
    assert (ea.ts, ea.node, ea.value) == (eb.ts, eb.node, eb.value)
    assert a.node.store.digests() == b.node.store.digests()


async def test_async_mode_answers_before_the_peers(make_mesh: MakeMesh) -> None:
    a, b = await make_mesh(2, write_mode="async")
    resp = await a.client.get("/set", params={"k": "k", "v": "v"})
    assert resp.headers["X-Replicas"] == "1/2"
    await eventually(lambda: value(b, "k") == "v")


async def test_unreachable_peer_gets_hints_when_it_comes_back(make_mesh: MakeMesh) -> None:
    (a,) = await make_mesh(1, replication_timeout=0.2)
    # A peer that does not listen yet: writes time out, stay queued as hints.
    b_node = Node(Config.for_tests(name="late", antientropy_interval=3600.0))
    b_server = TestServer(build_app(b_node))
    await b_server.start_server()
    port = b_server.port
    await b_server.close()
    a.node.replicator.peer_up("late", f"127.0.0.1:{port}")
    resp = await a.client.put("/keys/k", json={"value": "v"})
    assert resp.headers["X-Replicas"] == "1/2"
    assert a.node.replicator.links["late"].state.queued_mutations == 1
    b_server = TestServer(build_app(b_node), port=port)
    await b_server.start_server()
    try:
        await eventually(lambda: b_node.store.get("k", b_node.clock.wall()) is not None)
    finally:
        await b_server.close()


async def test_anti_entropy_repairs_writes_replication_missed(make_mesh: MakeMesh) -> None:
    a, b = await make_mesh(2)
    # Writes straight into a's store never went through replication.
    ts = a.node.hlc.now()
    for i in range(500):
        a.node.store.apply(f"miss-{i}", f"v{i}", ts, a.name)
    ts = b.node.hlc.now()
    b.node.store.apply("only-b", "b", ts, b.name)
    result = await a.node.lifecycle.repair_once()
    assert result is not None
    assert result.complete
    assert result.sent == 500
    assert result.applied == 1
    assert value(b, "miss-499") == "v499"
    assert value(a, "only-b") == "b"
    assert a.node.store.digests() == b.node.store.digests()
    again = await a.node.lifecycle.repair_once()
    assert again is not None
    assert again.differing == 0


async def test_snapshot_streams_everything_including_tombstones(make_mesh: MakeMesh) -> None:
    a, b = await make_mesh(2, wire=False)
    await a.client.put("/keys", json={f"k{i:05d}": str(i) for i in range(12_000)})
    await a.client.delete("/keys/k00007")
    got = await repair.pull_snapshot(b.node.store, b.node.hlc, b.node.peers, a.address, page=5_000)
    assert got == 12_000  # 11,999 values and one tombstone
    assert len(b.node.store) == 11_999
    assert b.node.store.entry("k00007") is not None  # the tombstone came too
    assert a.node.store.digests() == b.node.store.digests()


async def test_cluster_key_refuses_unsigned_replication(make_mesh: MakeMesh) -> None:
    a, b = await make_mesh(2, cluster_key="secret", replication_timeout=0.3)
    resp = await a.client.put("/keys/ok", json={"value": "signed"})
    assert resp.headers["X-Replicas"] == "2/2"
    stranger = Node(Config.for_tests(name="stranger", cluster_key="other"))
    await stranger.client.start()
    try:
        stranger.replicator.peer_up(a.name, a.address)
        acked, expected = await stranger.replicator.replicate(stranger.kv.set("evil", "x"))
        assert (acked, expected) == (1, 2)
        with pytest.raises(Exception, match="401"):
            await repair.repair_with(stranger.store, stranger.hlc, stranger.peers, a.address)
    finally:
        await stranger.replicator.close()
        await stranger.client.close()
    assert value(a, "evil") is None
    assert a.node.peer_service.rejected_unauthenticated >= 2
    assert value(b, "ok") == "signed"


async def test_malformed_replication_is_refused_and_changes_nothing(make_mesh: MakeMesh) -> None:
    (a,) = await make_mesh(1)
    for body in [b"", b"{", b"[]", b'{"v": 1}', b'{"v":1,"from":"x","stable":0,"batches":[[1]]}']:
        resp = await a.client.post("/internal/replicate", data=body)
        assert resp.status == 400
        assert (await resp.json())["code"] == "INVALID_BODY"
    assert len(a.node.store) == 0


async def test_a_repaired_transaction_appears_whole(make_mesh: MakeMesh) -> None:
    a, b = await make_mesh(2, wire=False)
    # A committed transaction whose replication batch was lost: one timestamp, many buckets.
    a.node.kv.write_many((f"txn-{i}", "v") for i in range(3000))
    seen: set[int] = set()
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            seen.add(sum(1 for i in range(0, 3000, 7) if value(b, f"txn-{i}") == "v"))
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    b.node.replicator.peer_up(a.name, a.address)
    result = await b.node.lifecycle.repair_once()
    done.set()
    await task
    assert result is not None
    assert result.applied == 3000
    assert seen <= {0, len(range(0, 3000, 7))}  # all or nothing, never part


async def test_anti_entropy_publishes_stable_timestamps_for_purging(make_mesh: MakeMesh) -> None:
    a, b = await make_mesh(2)
    await a.client.put("/keys/k", json={"value": "v"})
    await a.client.delete("/keys/k")
    # b never wrote anything, so only anti-entropy tells a how far b is stable.
    await a.node.lifecycle.repair_once()
    await b.node.lifecycle.repair_once()
    await a.client.put("/keys/later", json={"value": "x"})  # moves the stable point past the delete
    await b.node.lifecycle.repair_once()
    await a.node.lifecycle.repair_once()
    assert a.node.lifecycle.purge_watermark() > a.node.store.entry("k").ts
    assert a.node.store.purge_tombstones(a.node.lifecycle.purge_watermark()) == 1


async def test_a_failing_peer_does_not_stall_every_sync_write(make_mesh: MakeMesh) -> None:
    (a,) = await make_mesh(1, replication_timeout=5.0)
    server = TestServer(build_app(Node(Config.for_tests(name="gone"))))
    await server.start_server()
    port = server.port
    await server.close()  # a crashed peer: connections are refused
    a.node.replicator.peer_up("gone", f"127.0.0.1:{port}")
    first = asyncio.create_task(a.node.replicator.replicate(a.node.kv.set("k1", "v")))
    await eventually(lambda: a.node.replicator.links["gone"].state.failures > 0)
    # Once its link fails, later writes queue a hint for it without waiting the timeout.
    assert await asyncio.wait_for(a.node.replicator.replicate(a.node.kv.set("k2", "v")), 2.0) == (
        1,
        2,
    )
    assert a.node.replicator.links["gone"].state.queued_mutations == 2
    first.cancel()


async def test_a_new_peer_holds_nothing_of_ours_until_a_repair_confirms_it(
    make_mesh: MakeMesh,
) -> None:
    # Regression (found by the 1M-key join benchmark): a joiner's new link counted as holding all
    # our earlier writes, so stable points (and the purge floor) jumped past what the joiner had
    # not streamed yet, and it refused the rest of its snapshot as stale.
    a, b = await make_mesh(2, wire=False)
    await a.client.put("/keys/k", json={"value": "v"})
    a.node.replicator.peer_up(b.name, b.address)
    assert a.node.replicator.stable() == 0
    result = await a.node.lifecycle.repair_once()
    assert result is not None
    assert result.complete
    assert a.node.replicator.stable() >= a.node.store.entry("k").ts
