"""The simulation's own parts, tested on their own: the virtual-time loop and the in-memory
transports (cluster/net/simnet.py)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cluster.core.ports import PeerError
from cluster.errors import Unavailable
from cluster.net import auth
from cluster.net.memory import Link, MemoryNetwork
from cluster.net.peer_service import PeerRequest
from cluster.net.simnet import SimNet
from tests.sim.loop import Deadlock, LoopClock, VirtualLoop


def virtual(main: Callable[[], Awaitable[Any]]) -> Any:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_virtual_time_jumps_to_the_next_timer() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        await asyncio.sleep(3600)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.sleep(100)
        return loop.time(), time.perf_counter() - started

    now, real = virtual(main)
    assert now == pytest.approx(3605)
    assert real < 1.0


def test_a_world_with_nothing_to_do_is_a_deadlock() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(Deadlock):
        virtual(main)


def make_net(loss: float = 0.0, seed: int = 1) -> tuple[SimNet, MemoryNetwork[bytes]]:
    loop = asyncio.get_running_loop()
    network: MemoryNetwork[bytes] = MemoryNetwork(
        LoopClock(loop), random.Random(seed), Link(loss, 0.01, 0.0)
    )
    return SimNet(network), network


def test_datagrams_arrive_after_the_delay_unless_partitioned() -> None:
    async def main() -> list[tuple[float, bytes, str]]:
        net, network = make_net()
        got: list[tuple[float, bytes, str]] = []
        loop = asyncio.get_running_loop()
        net.attach("b:1", lambda data, src: got.append((loop.time(), data, src)), _echo)
        net.datagrams("a:1").send("b:1", b"one")
        network.partition(["a:1"], ["b:1"])
        net.datagrams("a:1").send("b:1", b"lost")
        network.heal()
        net.datagrams("a:1").send("b:1", b"two")
        await asyncio.sleep(1)
        return got

    got = virtual(main)
    assert [(round(t, 3), d, s) for t, d, s in got] == [
        (0.01, b"one", "a:1"),
        (0.01, b"two", "a:1"),
    ]


def _echo(request: PeerRequest) -> bytes:
    if request.path == "/joining":
        raise Unavailable("joining")
    if request.path == "/bug":
        raise RuntimeError("a bug")
    return request.body


def test_requests_answer_fail_and_time_out_as_over_tcp() -> None:
    async def main() -> list[object]:
        net, network = make_net()
        net.attach("b:1", lambda data, src: None, _echo)
        peers = net.peers("a:1", None, lambda: 0.0)
        out: list[object] = [await peers.request("POST", "b:1", "/echo", b"hi")]
        for path in ("/joining", "/bug"):
            try:
                await peers.request("GET", "b:1", path)
            except PeerError as exc:
                out.append(exc.status)
        try:
            await peers.request("GET", "c:1", "/echo")  # nobody there: refused at once
        except PeerError:
            out.append(("refused", round(asyncio.get_running_loop().time(), 2)))
        network.partition(["a:1"], ["b:1"])
        start = asyncio.get_running_loop().time()
        try:
            await peers.request("GET", "b:1", "/echo", within=2.0)
        except PeerError:
            out.append(("timed out after", round(asyncio.get_running_loop().time() - start, 2)))
        out.append(len(net.bugs))
        return out

    assert virtual(main) == [b"hi", 503, 500, ("refused", 0.05), ("timed out after", 2.0), 1]


def test_requests_are_signed_as_over_http() -> None:
    seen: list[PeerRequest] = []

    def handler(request: PeerRequest) -> bytes:
        seen.append(request)
        return b""

    async def main() -> None:
        net, _ = make_net()
        net.attach("b:1", lambda data, src: None, handler)
        await net.peers("a:1", "k3y", lambda: 1_700_000_000.0).request("POST", "b:1", "/x", b"body")

    virtual(main)
    (request,) = seen
    assert auth.valid(
        "k3y", "POST", "/x", b"body", request.signature, request.sent_ms, 1_700_000_000.0
    )
