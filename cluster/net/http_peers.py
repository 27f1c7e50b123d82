"""The peer transport over HTTP: requests from this node to its peers (replication, snapshots,
anti-entropy, gossip push/pull), implementing `cluster.core.ports.PeerTransport`.

One aiohttp ClientSession with keep-alive connections per peer, so replication reuses a
connection instead of opening one per batch. Every request is signed when a cluster key is set.
Failures of any kind (refused, timeout, non-200) raise `PeerError`: callers retry or give up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from cluster.core.ports import PeerError
from cluster.net import auth

logger = logging.getLogger(__name__)


class PeerClient:
    def __init__(self, node: str, cluster_key: str | None, wall: Callable[[], float]) -> None:
        self.node = node
        self.cluster_key = cluster_key
        self._wall = wall
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=8, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, address: str, path: str, body: bytes = b"", within: float = 5.0
    ) -> bytes:
        """Send one request to the peer at `address` ("host:port"); the reply body on 200."""
        session = self._session
        if session is None:
            raise PeerError("peer client is not started")
        headers = {"Content-Type": "application/json", "X-KV-Node": self.node}
        headers |= auth.stamp(self.cluster_key, method, path, body, self._wall())
        url = f"http://{address}{path}"
        try:
            async with (
                asyncio.timeout(within),
                session.request(method, url, data=body, headers=headers) as resp,
            ):
                data = await resp.read()
                if resp.status != 200:
                    raise PeerError(
                        f"{method} {url} answered {resp.status}: {data[:200]!r}", resp.status
                    )
                return data
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerError(f"{method} {url} failed: {exc!r}") from exc
