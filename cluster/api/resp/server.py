"""RESP over TCP: the connection (decoding, the session) on the shared ordered, pipelined,
replicating machinery of `cluster.api.ordered`, and its listener.

A malformed request is answered `-ERR Protocol error: ...` and the connection is closed, as Redis
does; any other error keeps it open. Limits: a request of at most `max_request` bytes, an idle
client closed after `idle_timeout`, reading paused while a client does not read its replies.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

from cluster.api.listener import Listener, listen
from cluster.api.metrics import Metrics
from cluster.api.ordered import OrderedConnection
from cluster.api.ports import Writes
from cluster.api.reply import Reply
from cluster.api.resp import codec
from cluster.api.resp.commands import Context, Mesh
from cluster.api.resp.session import RespSession
from cluster.core.kv import KV
from cluster.errors import KVError

logger = logging.getLogger(__name__)

Item = list[bytes] | codec.ProtocolError


@dataclass(frozen=True, slots=True)
class RespOptions:
    eager: bool  # async write mode: replication is not awaited before the reply
    password: str | None
    max_request: int
    idle_timeout: float


class RespConnection(OrderedConnection[Item]):
    kind = "RESP client"

    def __init__(self, server: RespServer) -> None:
        super().__init__(server)
        self.decoder = codec.RequestDecoder(server.options.max_request)
        self.session = RespSession(server.context, next(server.ids))
        server.context.clients += 1

    def decode(self, data: bytes) -> list[Item]:
        return self.decoder.feed(data)

    def decode_eof(self) -> list[Item]:
        return []

    def execute(self, item: Item) -> Reply:
        return self.session.execute(item)

    def reset(self) -> None:
        self.session.reset()
        self.server_context().clients -= 1

    def server_context(self) -> Context:
        server = self.server
        assert isinstance(server, RespServer)
        return server.context

    def error_line(self, exc: KVError) -> bytes:
        return codec.error(f"ERR {exc.message}")


class RespServer(Listener[RespConnection]):
    kind = "RESP protocol"

    def __init__(
        self, name: str, kv: KV, writes: Writes, mesh: Mesh, metrics: Metrics, options: RespOptions
    ) -> None:
        super().__init__(
            name,
            kv,
            writes,
            metrics,
            eager=options.eager,
            idle_timeout=options.idle_timeout,
            commands=metrics.resp_commands,
        )
        self.options = options
        self.context = Context(name, kv, mesh, options.password, kv.clock.wall())
        self.ids = itertools.count(1)

    def connection(self) -> RespConnection:
        return RespConnection(self)


async def start_resp_server(server: RespServer, host: str, port: int) -> RespServer:
    """Listen for RESP clients on host:port (0: any free port); returns the server."""
    return await listen(server, host, port)
