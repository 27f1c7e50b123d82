"""The listening side of the line protocol and RESP: the socket, its connections, closing both.

A `Listener` accepts connections of one protocol (`connection` makes one) and counts their
commands by outcome; `listen` binds it, accepting nothing until `begin_serving` when asked (a
node opens every door in the step it reports ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from typing import Any, Generic, TypeVar

from cluster.api.metrics import Metrics
from cluster.api.ordered import OrderedConnection
from cluster.api.ports import Writes
from cluster.core.kv import KV

logger = logging.getLogger(__name__)

Conn = TypeVar("Conn", bound="OrderedConnection[Any]")
L = TypeVar("L", bound="Listener[Any]")


class Listener(Generic[Conn]):
    """The listening socket and its connections; `close` stops both.

    `connection` makes a protocol's connection; `commands` counts its commands by outcome.
    """

    kind = "server"  # how log lines name it

    def __init__(
        self,
        name: str,
        kv: KV,
        writes: Writes,
        metrics: Metrics,
        *,
        eager: bool,
        idle_timeout: float,
        commands: Any,
    ) -> None:
        self.name = name
        self.kv = kv
        self.writes = writes
        self.metrics = metrics
        self.eager = eager
        self.idle_timeout = idle_timeout
        self.server: asyncio.Server | None = None
        self.connections: set[Conn] = set()
        # Drain tasks whose connection went away while its write was replicating: the write is
        # already applied here, so replication runs to the end; held here so it is not lost.
        self.orphans: set[asyncio.Task[None]] = set()
        self.all_closed = asyncio.Event()
        self.all_closed.set()
        # Children of the command counter, resolved once: `labels()` is a locked dict lookup.
        self.ok = commands.labels("ok")
        self.error = commands.labels("error")

    @abstractmethod
    def connection(self) -> Conn:
        """A new connection of this protocol."""

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        if self.server is None or not self.server.sockets:
            raise RuntimeError(f"the {self.kind} is not listening")
        return int(self.server.sockets[0].getsockname()[1])

    def attach(self, conn: Conn) -> None:
        self.connections.add(conn)
        self.all_closed.clear()

    def detach(self, conn: Conn) -> None:
        self.connections.discard(conn)
        if conn.task is not None and not conn.task.done():
            self.orphans.add(conn.task)
            conn.task.add_done_callback(self.orphans.discard)
        if not self.connections:
            self.all_closed.set()

    async def start(self, host: str, port: int, serving: bool = True) -> None:
        """Bind host:port; with `serving` False, accept nothing until `begin_serving`."""
        loop = asyncio.get_running_loop()
        # A deep accept queue: hundreds of clients connecting at once must not hit SYN retries.
        self.server = await loop.create_server(
            self.connection, host, port, reuse_address=True, backlog=1024, start_serving=serving
        )

    def begin_serving(self) -> None:
        """Listen now, in this very step, with no await.

        So the node can open every door and report itself ready in one step: no client finds a
        door open on a node whose /health still says it is syncing, nor the reverse.
        `Server.start_serving` listens first and then yields once to the loop; the listening is
        all that is needed here, so its coroutine is run to that yield and closed.
        """
        if self.server is None:
            raise RuntimeError(f"the {self.kind} is not bound")
        step = self.server.start_serving()
        try:
            step.send(None)
        except StopIteration:
            pass
        else:
            step.close()
        logger.info("node=%s serving the %s on port %d", self.name, self.kind, self.port)

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening, let pending writes finish replicating (bounded), close clients."""
        if self.server is None:
            return
        self.server.close()
        for conn in self.connections:
            conn.stop_reading()
        pending = [c.task for c in self.connections if c.task is not None] + list(self.orphans)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
        for conn in list(self.connections):
            conn._close()
        try:
            async with asyncio.timeout(grace):
                await self.all_closed.wait()
        except TimeoutError:
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.server.wait_closed()
        self.server = None
        logger.info("node=%s %s closed", self.name, self.kind)


async def listen(server: L, host: str, port: int, serving: bool = True) -> L:
    """Listen on host:port (0: any free port); returns the server. With `serving` False it is
    bound but accepts nothing until `begin_serving`."""
    await server.start(host, port, serving)
    if serving:
        logger.info("node=%s serving the %s on %s:%d", server.name, server.kind, host, server.port)
    return server
