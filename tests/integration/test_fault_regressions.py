"""Regressions for what the fault suite (loadtest/faults) found, at the lowest level that shows it.

Two in-process nodes over real loopback HTTP, each on a FakeClock, wired by hand
(`replicator.peer_up`), as in test_replication.py. The product now passes them
(they were xfail(strict=True) until it was fixed).

Found by `python -m loadtest.faults` (scenarios skew and skew-beyond):

1. A peer that refuses a replicated batch because its timestamp is further ahead than the maximum
   clock offset still answers 200, and the sender counts the batch as applied: the client gets
   `X-Replicas: 2/2` for a write the peer does not hold.
2. The same false acknowledgement advances the sender's `acked_upto`, so its stable timestamp (the
   tombstone purge watermark) passes a delete the peer never applied. The tombstone is purged,
   and anti-entropy then brings back the older value the peer still holds: a deleted key
   resurrects. With two clocks each 400 ms off true time in opposite directions (800 ms apart,
   more than the 500 ms allowed), this happened within a 25-second run.
3. With --cluster-key, a replication body captured on the wire can be replayed: it carries no
   time or nonce, so it is accepted any time later. Once the tombstone of a deleted key is purged,
   replaying the old write resurrects it (the issue asks replayed bodies to be dropped and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cluster.app import Node, build_app
from cluster.config import Config
from cluster.core.clock import FakeClock
from cluster.core.kv import Batch
from cluster.core.ports import PeerError
from cluster.core.store import Mutation
from cluster.errors import DecodeError
from cluster.membership.messages import Alive
from cluster.net import auth
from cluster.replication import repair
from cluster.replication import wire as replication
from tests.integration.inproc import Running

T0 = 1_800_000_000.0


@dataclass
class Member(Running):
    clock: FakeClock

    def value(self, key: str) -> str | None:
        entry = self.node.store.get(key, self.clock.wall())
        return entry.value if entry is not None else None


MakeMember = Callable[..., Awaitable[Member]]


@pytest.fixture
async def make_member() -> AsyncIterator[MakeMember]:
    started: list[Member] = []

    async def make(name: str, wall: float, **overrides: object) -> Member:
        clock = FakeClock(wall)
        cfg = Config.for_tests(
            name=name, antientropy_interval=3600.0, tombstone_interval=3600.0, **overrides
        )
        node = Node(cfg, clock=clock)
        client = TestClient(TestServer(build_app(node)))
        await client.start_server()
        member = Member(node, client, clock)
        started.append(member)
        return member

    yield make
    for m in started:
        await m.client.close()


def wire(*members: Member) -> None:
    for a in members:
        for b in members:
            if a is not b:
                a.node.replicator.peer_up(b.name, b.address)


def advance(seconds: float, *members: Member) -> None:
    for m in members:
        m.clock.advance(seconds)


async def test_a_write_refused_for_clock_skew_is_not_acknowledged_as_replicated(
    make_member: MakeMember,
) -> None:
    a = await make_member("a", T0 + 2.0)  # two seconds ahead; the maximum offset is 0.5 s
    b = await make_member("b", T0)
    wire(a, b)
    resp = await a.client.put("/keys/k", json={"value": "v"})
    assert resp.status == 200
    assert b.node.replicator.refused_batches == 1  # b refused it, as the contract says
    held = b.value("k") == "v"
    assert resp.headers["X-Replicas"] == ("2/2" if held else "1/2")


async def test_a_delete_refused_for_skew_must_not_let_the_key_resurrect(
    make_member: MakeMember,
) -> None:
    a = await make_member("a", T0 + 0.4)  # +400 ms
    b = await make_member("b", T0 - 0.4)  # -400 ms: 800 ms apart, more than the 500 ms allowed
    wire(a, b)
    assert (await b.client.put("/keys/k", json={"value": "old"})).status == 200
    assert a.value("k") == "old"  # b is behind: a accepts b's writes
    resp = await a.client.delete("/keys/k")
    assert resp.status == 200  # acknowledged (as "2/2": see the test above)
    assert b.value("k") == "old"  # b refused the delete: 800 ms ahead of b's clock
    # Time passes; b keeps writing (its replication requests publish its stable timestamp).
    advance(1.0, a, b)
    assert (await b.client.put("/keys/other", json={"value": "x"})).status == 200
    a.node.store.purge_tombstones(a.node.lifecycle.purge_watermark())
    await a.node.lifecycle.repair_once()  # anti-entropy between the two
    await b.node.lifecycle.repair_once()
    assert a.value("k") is None, "the deleted key came back on the node that deleted it"
    assert b.value("k") is None


async def test_a_replayed_replication_body_cannot_resurrect_a_purged_delete(
    make_member: MakeMember,
) -> None:
    a = await make_member("a", T0, cluster_key="k3y")
    # What a peer sent earlier, captured on the wire (signed: the attacker cannot forge it).
    old_ts = a.node.hlc.now()
    body = replication.encode_batches(
        "b", 0, [Batch(old_ts, "b", (Mutation("k", "old", old_ts, "b"),))]
    )
    sent_ms = int(a.clock.wall() * 1000)
    headers = {
        auth.HEADER: auth.signature("k3y", "POST", replication.REPLICATE_PATH, body, sent_ms),
        auth.TIME_HEADER: str(sent_ms),
    }
    assert (
        await a.client.post(replication.REPLICATE_PATH, data=body, headers=headers)
    ).status == 200
    assert a.value("k") == "old"
    assert (await a.client.delete("/keys/k")).status == 200
    advance(1.0, a)
    assert (await a.client.put("/keys/later", json={"value": "x"})).status == 200
    assert a.node.store.purge_tombstones(a.node.lifecycle.purge_watermark()) == 1
    # Inside the replay window the signature is valid, but the write is older than the purged
    # tombstone: the store refuses it and counts it.
    replay = await a.client.post(replication.REPLICATE_PATH, data=body, headers=headers)
    assert replay.status == 200
    assert a.value("k") is None, "a replayed body brought a deleted key back"
    assert a.node.store.refused_stale == 1
    # Past the window the signed time itself is refused, and counted.
    advance(auth.REPLAY_WINDOW + 1, a)
    before = a.node.peer_service.rejected_unauthenticated
    late = await a.client.post(replication.REPLICATE_PATH, data=body, headers=headers)
    assert late.status == 401
    assert a.node.peer_service.rejected_unauthenticated == before + 1
    assert a.value("k") is None


async def test_a_peer_answering_garbage_fails_one_anti_entropy_round_not_all(
    make_member: MakeMember,
) -> None:
    a = await make_member("a", T0)
    # Something that is not a kvmesh node at a member's address (a reused address, a proxy's
    # error page): 200 with HTML on every route.
    impostor = web.Application()
    impostor.router.add_route("*", "/{tail:.*}", _html)
    server = TestServer(impostor)
    await server.start_server()
    try:
        a.node.replicator.peer_up("b", f"127.0.0.1:{server.port}")
        result = await a.node.lifecycle.repair_once()  # must count a failed round, not raise
        assert result is None
        assert a.node.lifecycle.repair_failures == 1
    finally:
        await a.node.replicator.close()
        await server.close()


async def _html(request: web.Request) -> web.Response:
    return web.Response(text="<html>It works!</html>", content_type="text/html")


async def test_a_snapshot_from_a_peer_answering_garbage_is_a_peer_failure(
    make_member: MakeMember,
) -> None:
    a = await make_member("a", T0)
    impostor = web.Application()
    impostor.router.add_route("*", "/{tail:.*}", _html)
    server = TestServer(impostor)
    await server.start_server()
    try:
        with pytest.raises((PeerError, DecodeError)):
            await repair.pull_snapshot(
                a.node.store, a.node.hlc, a.node.peers, f"127.0.0.1:{server.port}"
            )
    finally:
        await server.close()


def knows(member: Member, name: str, address: str) -> None:
    """Make `member`'s gossip see `name` alive at `address` (as a received Alive would)."""
    msg = Alive(name, address, 1)
    member.node.gossip.membership.handle(address, msg, member.clock.monotonic())


async def test_a_joiner_does_not_become_ready_from_a_peer_that_is_still_syncing(
    make_member: MakeMember,
) -> None:
    a = await make_member("a", T0)
    for i in range(3):
        assert (await a.client.put(f"/keys/k{i}", json={"value": str(i)})).status == 200
    r = await make_member("r", T0)  # restarted a moment ago: one page of a's data so far
    r.node.lifecycle.ready = False
    entry = a.node.store.entry("k0")
    assert entry is not None
    r.node.store.apply("k0", entry.value, entry.ts, entry.node)
    j = await make_member("j", T0)  # restarted too; its gossip found r first
    knows(j, "r", r.address)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(j.node.lifecycle.sync(), 1.0)
    assert not j.node.lifecycle.ready or j.value("k2") == "2", "j serves with a third of the data"


async def test_a_joiner_whose_snapshots_all_fail_does_not_serve(make_member: MakeMember) -> None:
    broken = web.Application()
    broken.router.add_route("*", "/{tail:.*}", _unavailable)
    server = TestServer(broken)
    await server.start_server()
    try:
        j = await make_member("j", T0)
        knows(j, "peer", f"127.0.0.1:{server.port}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(j.node.lifecycle.sync(), 1.0)
        assert not j.node.lifecycle.ready, "j serves clients although it streamed no snapshot"
    finally:
        await server.close()


async def _unavailable(request: web.Request) -> web.Response:
    return web.json_response({"error": "overloaded", "code": "INTERNAL"}, status=500)
