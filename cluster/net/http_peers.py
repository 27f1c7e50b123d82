"""The peer transport over HTTP: requests from this node to its peers (replication, snapshots,
anti-entropy, gossip push/pull), implementing `cluster.core.ports.PeerTransport`.

Why HTTP/1.1 by hand here, when aiohttp serves the other side: replication is the mesh's hot
path (a sync write waits for it), and aiohttp's client spends about 128 us of CPU on one request
to a peer on loopback, where this one spends about a third of that (measured in the same run;
see docs/benchmarks.md). On a 3-node mesh that was a quarter of the coordinator's time. The
subset needed is small and fixed, because the only server is our own (`cluster.api.internal`):
one request at a time on a connection, bodies with a Content-Length both ways, keep-alive.
Anything else in a reply (chunked framing, a malformed head) fails the request.

Connections are kept per peer (a few idle ones at most) and reused. A request on a reused
connection that the peer had closed while idle is retried once on a new one: every node-to-node
request is idempotent (merges and reads). Failures of any kind (refused, timeout, non-200, a
broken reply) raise `PeerError`: callers retry or give up. Every request is signed when a
cluster key is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import cast

from cluster.core.addresses import parse_hostport
from cluster.core.ports import PeerError
from cluster.errors import AddressError
from cluster.net import auth

logger = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024  # a reply's status line and headers
IDLE_PER_PEER = 8


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a peer; `exchange` sends a request and waits for its reply."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.reply: asyncio.Future[tuple[int, bytes]] | None = None
        self.status = 0
        self.head = 0  # the length of the reply's head, once it is in the buffer
        self.length = 0  # its body's
        self.keep = True
        self.used = False  # a reply came on it before: the peer may have closed it since

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep = False
        self._fail(f"the peer closed the connection ({exc!r})" if exc else "connection closed")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.reply is None or self.reply.done():
            self._fail("the peer sent bytes nobody asked for")
            return
        if not self.head:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._fail("the reply's head is too long")
                return
            try:
                self._parse_head(bytes(self.buffer[:end]))
            except ValueError as exc:
                self._fail(f"a malformed reply: {exc}")
                return
            self.head = end + 4
        if len(self.buffer) >= self.head + self.length:
            body = bytes(self.buffer[self.head : self.head + self.length])
            del self.buffer[: self.head + self.length]
            self.head = 0
            self.used = True
            self.reply.set_result((self.status, body))

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        if not version.startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        self.status = int(rest[:3])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise ValueError("chunked replies are not spoken here")
            elif name == b"connection" and value.strip().lower() == b"close":
                self.keep = False
        if length is None or length < 0:
            raise ValueError("no Content-Length")
        self.length = length

    def _fail(self, why: str) -> None:
        self.keep = False
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(PeerError(why))
        self.close()

    def exchange(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.reply = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.reply

    def close(self) -> None:
        self.keep = False
        if self.transport is not None:
            self.transport.close()


class PeerClient:
    def __init__(self, node: str, cluster_key: str | None, wall: Callable[[], float]) -> None:
        self.node = node
        self.cluster_key = cluster_key
        self._wall = wall
        self._idle: dict[str, list[_Connection]] = {}
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def close(self) -> None:
        self._started = False
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    async def request(
        self, method: str, address: str, path: str, body: bytes = b"", within: float = 5.0
    ) -> bytes:
        """Send one request to the peer at `address` ("host:port"); the reply body on 200."""
        if not self._started:
            raise PeerError("peer client is not started")
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: {address}",
            "Content-Type: application/json",
            f"X-KV-Node: {self.node}",
            f"Content-Length: {len(body)}",
        ]
        for name, value in auth.stamp(self.cluster_key, method, path, body, self._wall()).items():
            head.append(f"{name}: {value}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body
        try:
            async with asyncio.timeout(within):
                status, data = await self._send(address, request)
        except TimeoutError:
            raise PeerError(f"{method} {address}{path} timed out after {within} s") from None
        except OSError as exc:
            raise PeerError(f"{method} {address}{path} failed: {exc!r}") from exc
        if status != 200:
            raise PeerError(f"{method} {address}{path} answered {status}: {data[:200]!r}", status)
        return data

    async def _send(self, address: str, request: bytes) -> tuple[int, bytes]:
        idle = self._idle.setdefault(address, [])
        while idle:
            conn = idle.pop()
            if conn.keep:
                try:
                    return await self._on(conn, address, request)
                except PeerError:
                    if conn.used and not conn.buffer:
                        continue  # closed by the peer while idle: try another connection
                    raise
        return await self._on(await self._open(address), address, request)

    async def _open(self, address: str) -> _Connection:
        try:
            host, port = parse_hostport(address)
        except AddressError as exc:
            raise PeerError(str(exc)) from None
        _, conn = await asyncio.get_running_loop().create_connection(_Connection, host, port)
        return conn

    async def _on(self, conn: _Connection, address: str, request: bytes) -> tuple[int, bytes]:
        done = False
        try:
            reply = await conn.exchange(request)
            done = True
            return reply
        finally:
            idle = self._idle.setdefault(address, [])
            if done and conn.keep and self._started and len(idle) < IDLE_PER_PEER:
                idle.append(conn)
            else:  # cancelled or failed mid-request: its state is unknown, never reuse it
                with contextlib.suppress(Exception):
                    conn.close()
