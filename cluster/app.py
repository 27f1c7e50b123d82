"""Composition root: builds a node from a Config and runs it.

Everything with a side effect (the clock, the random generator, later the transport) is created
here and passed down, so tests can build a node with a FakeClock and a seeded Random. Background
loops (TTL reclamation, tombstone purge) and the line-protocol server start and stop with the
aiohttp application through its cleanup_ctx.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from cluster.clock import Clock, SystemClock
from cluster.compat import CompatApi
from cluster.config import Config
from cluster.hlc import HybridClock
from cluster.http_api import HttpApi
from cluster.kv import KV, Batch, Limits
from cluster.metrics import Metrics
from cluster.store import Store

logger = logging.getLogger(__name__)

NODE_KEY: web.AppKey[Node] = web.AppKey("node")


class Node:
    """One node's state and services, wired together; no sockets of its own."""

    def __init__(
        self, config: Config, clock: Clock | None = None, rng: random.Random | None = None
    ):
        self.config = config.validate()
        self.clock: Clock = clock if clock is not None else SystemClock(config.clock_offset)
        self.rng = rng if rng is not None else random.Random(config.seed)
        self.store = Store()
        self.hlc = HybridClock(self.clock.wall, config.max_clock_offset)
        self.kv = KV(
            self.store,
            self.hlc,
            self.clock,
            self.config.name,
            Limits(config.max_key_length, config.max_value_length, config.max_ttl),
        )
        self.metrics = Metrics(self.gauges)
        self.api = HttpApi(self)
        self.compat = CompatApi(self, self.api)

    def alive_members(self) -> int:
        """Members currently alive, this node included (a mesh of one until joined)."""
        return 1

    async def replicate(self, batch: Batch) -> tuple[int, int]:
        """Send a local write to the peers; returns (nodes that applied it, nodes expected).

        A mesh of one has no peers: the write is complete once applied here.
        """
        return 1, 1

    def gauges(self) -> dict[str, tuple[str, float]]:
        stats = self.store.stats()
        return {
            "store_keys": ("stored keys that are not tombstones", stats.keys),
            "store_tombstones": ("tombstones awaiting purge", stats.tombstones),
            "store_expiring": ("entries with a pending TTL", stats.expiring),
            "membership_alive_members": ("members alive, self included", self.alive_members()),
            "hlc_last_wall_ms": ("physical part of the last HLC timestamp", self.hlc.last >> 16),
        }

    # --- background loops ------------------------------------------------------------------------

    async def expire_loop(self) -> None:
        """Reclaim expired entries in small bounded rounds (never stalls requests)."""
        while True:
            await asyncio.sleep(self.config.expire_interval)
            self.reclaim_expired()

    def reclaim_expired(self) -> int:
        """One bounded round of TTL reclamation; the loop's next round continues a backlog."""
        return self.store.reclaim_expired(self.clock.wall(), budget=5000)

    async def tombstone_loop(self) -> None:
        """Purge tombstones every member has seen. A mesh of one has seen its own writes."""
        while True:
            await asyncio.sleep(self.config.tombstone_interval)
            self.store.purge_tombstones(self.purge_watermark())

    def purge_watermark(self) -> int:
        return self.hlc.last

    async def background(self, app: web.Application) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(self.expire_loop(), name="expire"),
            asyncio.create_task(self.tombstone_loop(), name="tombstones"),
        ]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def build_app(node: Node) -> web.Application:
    app = web.Application(
        client_max_size=node.config.max_body_bytes, middlewares=[node.api.middleware]
    )
    app[NODE_KEY] = node
    app.add_routes(node.api.routes())
    app.add_routes(node.compat.routes())
    app.cleanup_ctx.append(node.background)
    return app


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Run a node until SIGTERM/SIGINT (or `stop` is set), then shut down cleanly."""
    node = Node(config)
    app = build_app(node)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, node.config.host, node.config.port, reuse_address=True)
    await site.start()
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info(
        "node=%s serving HTTP on %s:%d (write mode %s)",
        node.config.name,
        node.config.host,
        node.config.port,
        node.config.write_mode,
    )
    try:
        await stop.wait()
        logger.info("node=%s shutting down", node.config.name)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
