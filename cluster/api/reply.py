"""What executing one command of a pipelined protocol produced (the line protocol, RESP). Pure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

from cluster.core.kv import Batch


class Reply(NamedTuple):
    """The bytes to send and, for a write, the batch to replicate before sending them.

    `close`: close the connection once this reply is written (RESP's QUIT, a protocol error).
    `pending`: the reply is not known yet (database mode: the database answers it); the
    connection awaits this in order and sends what it returns instead; `read`, for a plain read
    of one key, lets the connection read a run of them in one statement.
    """

    ok: bool
    line: bytes
    batch: Batch | None = None
    close: bool = False
    pending: Callable[[], Awaitable[Reply]] | None = None
    read: str | None = None  # database mode: the key this pending reply reads (see read_many)
