"""One connection's transaction state and the execution of commands against `KV`: no IO, no await
(in database mode the database's answer comes as a pending reply the connection awaits).

`execute` returns the reply and, for a write, the `Batch` the IO layer must replicate before it
sends the reply. The transaction rules are redis `multi.c`'s: START cannot nest, COMMIT/ROLLBACK
need an open transaction, COMMIT applies the queue with one `KV.write_many` call (one HLC
timestamp, no await between the writes), and a command rejected inside a transaction dooms it
(COMMIT then answers an Error and applies nothing, as EXECABORT).

Atomicity on this node: `execute` never awaits, so a COMMIT's writes land between two commands of
any other connection.
"""

from __future__ import annotations

from typing import Final

from cluster.api.data import Data
from cluster.api.line.grammar import OK, Command, error_reply, ok_result
from cluster.api.reply import Reply
from cluster.core.kv import KV
from cluster.errors import BadRequest, KVError, NotFound


class TransactionStateError(BadRequest):
    """START inside a transaction, or COMMIT/ROLLBACK outside one.

    Unlike other rejected commands it leaves an open transaction usable (redis: a nested MULTI
    is refused without flagging the transaction).
    """


_OK_REPLY: Final = Reply(True, OK)


class Session:
    """One connection's transaction state; executes commands against KV. No IO, no await.

    Outside a transaction PUT and DEL apply at once. Inside one they are buffered in `txn`
    (key -> value, None for a delete; the last write of a key wins), GET answers from that buffer
    first, COMMIT applies it with one `write_many` and ROLLBACK drops it. A transaction that is
    doomed (`failed` is the reason) keeps its place until COMMIT (an Error, nothing applied) or
    ROLLBACK, so that the writes a client pipelined after the failure are not applied one by one.
    """

    __slots__ = ("failed", "kv", "max_writes", "remote", "txn", "writes")

    def __init__(self, kv: KV, max_writes: int, remote: Data | None = None) -> None:
        self.kv = kv
        self.max_writes = max_writes
        # Database mode: reads and writes go to the database, each answered by a pending reply
        # (see `Reply.pending`); the transaction buffer stays here, a COMMIT is one statement.
        self.remote = remote
        self.txn: dict[str, str | None] | None = None
        self.writes = 0  # PUT/DEL commands buffered in the open transaction
        self.failed: str | None = None

    @property
    def in_transaction(self) -> bool:
        return self.txn is not None

    def execute(self, cmd: Command | KVError) -> Reply:
        """Run one parsed line; returns the reply (and the batch to replicate, for a write)."""
        try:
            if isinstance(cmd, KVError):
                raise cmd
            return self._run(cmd)
        except KVError as exc:
            # A command refused inside a transaction dooms it; a plain outcome (no such key) or
            # a misplaced START does not.
            if (
                self.txn is not None
                and self.failed is None
                and not isinstance(exc, NotFound | TransactionStateError)
            ):
                self._doom(f"a command in it failed: {exc.message}")
            return Reply(False, error_reply(exc))

    def _run(self, cmd: Command) -> Reply:
        op = cmd.op
        kv = self.kv
        if op == "GET":
            key = kv.check_key(cmd.key)
            txn = self.txn
            if txn is not None and key in txn:
                value = txn[key]
                if value is None:
                    raise NotFound(f"no such key: {key}")
                return Reply(True, ok_result(value))
            if self.remote is not None:
                remote = self.remote
                return Reply(True, b"", pending=lambda: _remote_get(remote, key), read=key)
            entry = kv.get(key)
            if entry is None or entry.value is None:
                raise NotFound(f"no such key: {key}")
            return Reply(True, ok_result(entry.value))
        if op == "PUT":
            key = kv.check_key(cmd.key)
            value = kv.check_value(cmd.value)
            if self.txn is not None:
                return self._buffer(key, value)
            if self.remote is not None:
                return _remote_write(self.remote, [(key, value)])
            return Reply(True, OK, kv.set(key, value))
        if op == "DEL":
            key = kv.check_key(cmd.key)
            if self.txn is not None:
                return self._buffer(key, None)
            if self.remote is not None:
                return _remote_write(self.remote, [(key, None)])
            return Reply(True, OK, kv.delete(key))  # no batch when the key was missing
        if op == "START":
            if self.txn is not None:
                raise TransactionStateError("a transaction is already open: START cannot nest")
            self.txn, self.writes, self.failed = {}, 0, None
            return _OK_REPLY
        if op == "COMMIT":
            txn, failed = self._end("COMMIT")
            if failed is not None:
                raise BadRequest(f"the transaction was aborted ({failed}); nothing was applied")
            if not txn:
                return _OK_REPLY
            if self.remote is not None:
                return _remote_write(self.remote, list(txn.items()))
            return Reply(True, OK, kv.write_many(txn.items()))
        # ROLLBACK
        self._end("ROLLBACK")
        return _OK_REPLY

    def _buffer(self, key: str, value: str | None) -> Reply:
        txn = self.txn
        assert txn is not None  # callers check; this narrows the type
        if self.failed is not None:
            raise BadRequest(
                f"the transaction was aborted ({self.failed}); send ROLLBACK or COMMIT to end it"
            )
        if self.writes >= self.max_writes:
            self._doom(f"more than {self.max_writes} writes")
            raise BadRequest(
                f"a transaction may buffer at most {self.max_writes} writes; it was aborted "
                "and its writes discarded"
            )
        self.writes += 1
        txn[key] = value
        return _OK_REPLY

    def _doom(self, reason: str) -> None:
        """Mark the open transaction failed and free what it buffered."""
        self.failed = reason
        self.txn = {}

    def _end(self, op: str) -> tuple[dict[str, str | None], str | None]:
        txn = self.txn
        if txn is None:
            raise TransactionStateError(f"{op} without START: no transaction is open")
        failed = self.failed
        self.txn, self.writes, self.failed = None, 0, None
        return txn, failed

    def rollback(self) -> None:
        """Drop any open transaction (the connection went away)."""
        self.txn, self.writes, self.failed = None, 0, None


async def _remote_get(data: Data, key: str) -> Reply:
    entry = await data.get(key)
    if entry is None or entry.value is None:
        raise NotFound(f"no such key: {key}")
    return Reply(True, ok_result(entry.value))


def _remote_write(data: Data, ops: list[tuple[str, str | None]]) -> Reply:
    """A write the database applies (DEL of a missing key writes a tombstone there: still Ok)."""

    async def write() -> Reply:
        await data.write_many(ops)
        return _OK_REPLY

    return Reply(True, b"", pending=write)


async def read_many(data: Data, keys: list[str]) -> list[Reply]:
    """GETs of a run of keys, read in one statement (see OrderedConnection.read_many)."""
    found = await data.get_many(keys)
    return [
        Reply(True, ok_result(found[k].value or ""))
        if k in found
        else Reply(False, error_reply(NotFound(f"no such key: {k}")))
        for k in keys
    ]
