"""Whole in-process nodes (membership, replication, HTTP) on loopback ports picked by the OS,
driven through their HTTP routes as an operator would; the `start` fixture is in conftest.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from cluster.app import Node, build_app
from cluster.config import Config


@dataclass
class Running:
    node: Node
    client: TestClient[Any, Any]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client.port}"

    @property
    def name(self) -> str:
        return self.node.config.name

    async def get(self, path: str) -> tuple[int, Any]:
        resp = await self.client.get(path)
        return resp.status, await resp.json()

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.post(path, json=body)
        return resp.status, await resp.json()

    async def states(self) -> dict[str, str]:
        _, body = await self.get("/cluster/members")
        return {m["name"]: m["state"] for m in body["members"]}


Start = Callable[..., Awaitable[Running]]


async def started_nodes() -> AsyncIterator[Start]:
    started: list[Running] = []

    async def make(name: str, **overrides: Any) -> Running:
        node = Node(Config.for_tests(name=name, **overrides))
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(node)))
        await client.start_server()
        await node.start_mesh(client.port)
        running = Running(node, client)
        started.append(running)
        return running

    yield make
    for r in started:
        await r.node.stop_mesh(leave=False)
        await r.client.close()


async def until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll an asynchronous condition (HTTP views have no event to wait on) with a deadline."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - an HTTP view has no event to wait on
            await asyncio.sleep(0.02)
