"""HTTP requests from this node to its peers (replication, snapshots, anti-entropy).

One aiohttp ClientSession with keep-alive connections per peer, so replication reuses a
connection instead of opening one per batch. Every request is signed when a cluster key is set.
Failures of any kind (refused, timeout, non-200) raise `PeerError`: callers retry or give up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from cluster.net import auth

logger = logging.getLogger(__name__)


class PeerError(Exception):
    """A request to a peer failed (network, timeout or a non-200 answer: `status`)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PeerClient:
    def __init__(
        self, node: str, cluster_key: str | None, wall: Callable[[], float] | None = None
    ) -> None:
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
        if self.cluster_key is not None:
            sent_ms = int(self._wall() * 1000) if self._wall is not None else 0
            headers[auth.TIME_HEADER] = str(sent_ms)
            headers[auth.HEADER] = auth.signature(self.cluster_key, method, path, body, sent_ms)
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
