"""The line protocol's IO: its connection (framing, parsing, the session) on the shared ordered,
pipelined machinery of `cluster.api.ordered`, and its listener.

Malformed input never closes the connection: a line longer than `max_line` is answered where it
stands in the order and skipped up to the next newline, so memory stays bounded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cluster.api.data import Data
from cluster.api.line.framer import LineFramer
from cluster.api.line.grammar import Command, error_reply, parse_line
from cluster.api.line.session import Session, read_many
from cluster.api.listener import Listener, listen
from cluster.api.metrics import Metrics
from cluster.api.ordered import OrderedConnection
from cluster.api.ports import Writes
from cluster.api.reply import Reply
from cluster.core.kv import KV
from cluster.errors import BadRequest, KVError

logger = logging.getLogger(__name__)

Item = Command | KVError


@dataclass(frozen=True, slots=True)
class LineOptions:
    """The protocol's limits (from Config) and whether writes are acknowledged once local."""

    eager: bool  # async write mode: replication is not awaited before the Ok
    txn_max_writes: int
    max_line: int
    idle_timeout: float


class LineConnection(OrderedConnection[Item]):
    """One line-protocol client: lines in, JSON lines out, in order."""

    kind = "line client"

    def __init__(self, server: LineServer) -> None:
        super().__init__(server)
        self.max_line = server.options.max_line
        self.framer = LineFramer(self.max_line)
        self.session = Session(server.kv, server.options.txn_max_writes, server.remote)

    def decode(self, data: bytes) -> list[Item]:
        lines, too_long = self.framer.feed(data)
        max_line = self.max_line
        items: list[Item] = [
            parse_line(line) if len(line) <= max_line else self._too_long() for line in lines
        ]
        if too_long:
            items.append(self._too_long())
        return items

    def decode_eof(self) -> list[Item]:
        last = self.framer.rest()
        return [] if last is None else self.decode(last + b"\n")

    def execute(self, item: Item) -> Reply:
        return self.session.execute(item)

    def reset(self) -> None:
        if self.session.in_transaction:
            logger.debug(
                "node=%s %s %s left: transaction rolled back", self.name, self.kind, self.peer
            )
        self.session.rollback()
        self.framer.reset()

    async def read_many(self, group: list[Reply]) -> list[Reply]:
        remote = self.session.remote
        if remote is None:
            return await super().read_many(group)
        try:
            return await read_many(remote, [r.read or "" for r in group])
        except KVError as exc:  # the database is away: each read answers the error
            return [Reply(False, self.error_line(exc))] * len(group)

    def error_line(self, exc: KVError) -> bytes:
        return error_reply(exc)

    def _too_long(self) -> KVError:
        return BadRequest(
            f"the line is longer than {self.max_line} bytes; skipped to the next newline",
            "INVALID_PARAMETER",
        )


class LineServer(Listener[LineConnection]):
    kind = "line protocol"

    def __init__(
        self,
        name: str,
        kv: KV,
        writes: Writes,
        metrics: Metrics,
        options: LineOptions,
        remote: Data | None = None,
    ) -> None:
        super().__init__(
            name,
            kv,
            writes,
            metrics,
            eager=options.eager,
            idle_timeout=options.idle_timeout,
            commands=metrics.line_commands,
        )
        self.options = options
        self.remote = remote  # database mode: where commands read and write

    def connection(self) -> LineConnection:
        return LineConnection(self)


async def start_line_server(server: LineServer, host: str, port: int) -> LineServer:
    """Listen for line-protocol clients on host:port (0: any free port); returns the server."""
    return await listen(server, host, port)
