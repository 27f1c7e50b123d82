"""Gossip on real loopback sockets: UDP datagrams, HTTP push/pull, the for_tests parameters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp.test_utils import TestClient, TestServer

from cluster.app import Node as KVNode
from cluster.app import build_app
from cluster.config import Config
from cluster.membership.messages import Ack, PushPull, encode_packet
from cluster.membership.swim import ALIVE, DEAD, LEFT, SUSPECT, MemberEvent
from cluster.net.gossip import PUSH_PULL_ROUTE, Gossip

PARAMS = Config.for_tests().gossip_params()


@dataclass
class Node:
    """A whole node on loopback (HTTP for push/pull, UDP for datagrams), watched for its
    membership events."""

    node: KVNode
    client: TestClient[Any, Any]
    events: list[MemberEvent] = field(default_factory=list)

    @property
    def gossip(self) -> Gossip:
        return self.node.gossip

    @property
    def name(self) -> str:
        return self.gossip.name

    @property
    def address(self) -> str:
        return self.gossip.address

    def state_of(self, name: str) -> str | None:
        for m in self.gossip.members():
            if m.name == name:
                return m.state
        return None

    async def stop(self) -> None:
        await self.node.stop_mesh(leave=False)
        await self.client.close()


Start = Callable[..., Awaitable[Node]]


class Nodes:
    """Starts nodes on loopback and stops them all at the end."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    async def close(self) -> None:
        for node in self.nodes:
            await node.stop()

    async def start(self, name: str, key: str | None = None, seed: int = 1) -> Node:
        # HTTP first (port 0), then UDP on the same number, as the composition root does.
        for _ in range(5):
            kv_node = KVNode(Config.for_tests(name=name, cluster_key=key, seed=seed))
            client: TestClient[Any, Any] = TestClient(TestServer(build_app(kv_node)))
            await client.start_server()
            try:
                await kv_node.start_mesh(client.port)
            except OSError:  # that UDP port is taken: try another TCP port
                await client.close()
                continue
            node = Node(kv_node, client)
            kv_node.gossip.add_listener(node.events.append)
            self.nodes.append(node)
            return node
        raise RuntimeError("no free port pair")


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    nodes = Nodes()
    yield nodes.start
    await nodes.close()


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> float:
    """Seconds until `predicate()` held; fails the test after `within` seconds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not predicate():
        if loop.time() - started > within:
            raise AssertionError(f"not true within {within} s")  # an Exception: uvloop-safe
        await asyncio.sleep(0.01)
    return loop.time() - started


async def exchanges_and_rounds(nodes: list[Node], pushpulls: int = 2, datagrams: int = 10) -> None:
    """Wait until, from now on, every one of `nodes` took part in `pushpulls` full state exchanges
    (asked or served) and received `datagrams` datagrams (pings, acks, gossip): a positive witness
    that whatever could still change their views had its chance to arrive."""

    def totals(node: Node) -> tuple[int, int]:
        c = node.gossip.counters()
        exchanged = c["gossip_push_pull_ok"] + c["gossip_push_pull_served"]
        return exchanged, c["gossip_datagrams_received"]

    before = {node.name: totals(node) for node in nodes}

    def done() -> bool:
        for node in nodes:
            (pp, dg), (pp0, dg0) = totals(node), before[node.name]
            if pp < pp0 + pushpulls or dg < dg0 + datagrams:
                return False
        return True

    await eventually(done, within=10.0)


async def mesh(start: Start, n: int = 3, key: str | None = None) -> list[Node]:
    nodes = [await start(f"n{i}", key=key, seed=i) for i in range(n)]
    for node in nodes[1:]:
        assert await node.gossip.join([nodes[0].address], timeout=2.0)
    await eventually(
        lambda: all(a.state_of(b.name) == ALIVE for a in nodes for b in nodes if a is not b)
    )
    return nodes


async def test_three_nodes_join_and_see_each_other(start: Start) -> None:
    a, b, c = await mesh(start)
    assert [m.name for m in a.gossip.alive_peers()] == ["n1", "n2"]
    assert {m.as_dict()["state"] for m in c.gossip.members()} == {ALIVE}
    assert any(e.name == "n2" and e.new_state == ALIVE for e in a.events)
    assert a.gossip.counters()["gossip_datagrams_received"] > 0
    assert b.gossip.counters()["gossip_push_pull_ok"] >= 1


async def test_a_stopped_node_is_seen_not_alive_then_dead(start: Start) -> None:
    a, b, c = await mesh(start)
    await c.stop()  # no leave: a crash as far as the others can tell
    # How fast is a product figure, measured where wall-clock time is not shared with a busy
    # machine: the simulation (test_the_for_tests_preset_detects_within_a_second_or_two) and
    # `make bench` (failure detection); here only that it is detected, within the deadline.
    await eventually(lambda: {a.state_of("n2"), b.state_of("n2")} <= {SUSPECT, DEAD})
    await eventually(lambda: a.state_of("n2") == DEAD and b.state_of("n2") == DEAD)
    assert a.state_of("n1") == ALIVE


async def test_leave_is_seen_as_left_and_a_rejoin_comes_back(start: Start) -> None:
    a, b, c = await mesh(start)
    await c.gossip.leave()
    await eventually(lambda: a.state_of("n2") == LEFT and b.state_of("n2") == LEFT)
    assert [m.name for m in c.gossip.members()] == ["n2"]
    # The survivors probe each other and exchange full state a few times: had anything refuted
    # the leave or declared n2 dead, it would have reached both of them by then.
    await exchanges_and_rounds([a, b])
    assert a.state_of("n2") == LEFT  # no refutation, no death
    assert b.state_of("n2") == LEFT
    assert await c.gossip.join([b.address], timeout=2.0)
    await eventually(lambda: a.state_of("n2") == ALIVE and c.state_of("n0") == ALIVE)


async def test_remove_puts_a_member_out_everywhere(start: Start) -> None:
    a, b, c = await mesh(start)
    assert not a.gossip.remove("nobody")
    assert a.gossip.remove("n2")
    await eventually(lambda: b.state_of("n2") == LEFT and c.gossip.membership.left)
    await exchanges_and_rounds([a, b])  # a and b gossip on: the removal must stick
    assert a.state_of("n2") == LEFT
    assert b.state_of("n2") == LEFT


async def test_a_node_with_another_key_never_becomes_a_member(start: Start) -> None:
    nodes = await mesh(start, key="the mesh key")
    a, b, _ = nodes
    stranger = await start("stranger", key="another key", seed=9)
    assert not await stranger.gossip.join([a.address], timeout=1.0)
    keyless = await start("keyless", key=None, seed=10)
    assert not await keyless.gossip.join([b.address], timeout=1.0)
    assert a.gossip.counters()["gossip_push_pull_refused"] >= 1
    assert b.gossip.counters()["gossip_push_pull_refused"] >= 1

    # A refused join teaches an intruder nothing, so it would never send a datagram: give each
    # one the mesh's addresses (as if it had them from its configuration), one at a time, and
    # wait until every mesh node refused several of its datagrams and it saw no one answer.
    async def intrude(intruder: Node) -> None:
        before = {node.name: node.gossip.counters()["gossip_dropped_auth"] for node in nodes}

        def refused_by_all(at_least: int) -> bool:
            return all(
                node.gossip.counters()["gossip_dropped_auth"] >= before[node.name] + at_least
                for node in nodes
            )

        now = intruder.gossip.clock.monotonic()
        intruder.gossip.membership.merge_state(a.gossip.membership.local_state(), now)
        await eventually(lambda: refused_by_all(3), within=10.0)
        await eventually(lambda: intruder.gossip.alive_peers() == [], within=10.0)
        await intruder.stop()  # the next intruder's datagrams are the only ones refused

    await intrude(stranger)
    await intrude(keyless)
    for node in nodes:
        assert {m.name: m.state for m in node.gossip.members()} == dict.fromkeys(
            ("n0", "n1", "n2"), ALIVE
        )


async def test_the_push_pull_route_refuses_bad_bodies(start: Start) -> None:
    keyed = await start("keyed", key="k")
    plain = await start("plain")
    request = PushPull("x", "127.0.0.1:1", False, False, ())
    async with aiohttp.ClientSession() as session:

        async def post(node: Node, body: bytes) -> int:
            url = f"http://{node.address}{PUSH_PULL_ROUTE}"
            async with session.post(url, data=body) as resp:
                await resp.read()
                return resp.status

        assert await post(keyed, encode_packet([request], None, 0)) == 401
        assert await post(keyed, encode_packet([request], "wrong", 0)) == 401
        assert await post(plain, b"garbage") == 400
        assert await post(plain, encode_packet([Ack(1, "x")], None, 0)) == 400
        assert await post(plain, encode_packet([request], None, 0)) == 200
    assert keyed.gossip.counters()["gossip_dropped_auth"] == 2


async def test_async_listeners_run_and_failing_listeners_are_contained(start: Start) -> None:
    a = await start("n0")
    seen: list[str] = []

    async def slow(event: MemberEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.name)

    def broken(event: MemberEvent) -> None:
        raise RuntimeError("a bug in someone else's listener")

    a.gossip.add_listener(broken)
    a.gossip.add_listener(slow)
    b = await start("n1", seed=2)
    assert await b.gossip.join([a.address], timeout=2.0)
    await eventually(lambda: "n1" in seen)


def test_on_uvloop() -> None:
    # node.py runs on uvloop, whose UDP transport is not an asyncio.DatagramTransport subclass.
    async def scenario() -> None:
        nodes = Nodes()
        try:
            a, b, c = await mesh(nodes.start)
            await exchanges_and_rounds([a, b, c], pushpulls=0)  # probes and acks over UDP
            for node in (a, b, c):
                assert [m.state for m in node.gossip.members()] == [ALIVE] * 3
            await c.stop()
            nodes.nodes.remove(c)
            await eventually(lambda: a.state_of("n2") == DEAD and b.state_of("n2") == DEAD)
            await b.gossip.leave()
            await eventually(lambda: a.state_of("n1") == LEFT)
        finally:
            await nodes.close()

    uvloop.run(scenario())
