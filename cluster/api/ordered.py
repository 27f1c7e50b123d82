"""Pipelined request/reply connections, in order, with replication: what the line protocol and
RESP share.

Ordering. Replies leave in request order so clients may pipeline. While nothing is pending a
connection runs every command synchronously inside `data_received` and answers the whole chunk
with one `write`. A write is applied to the store at its place in the order, then its batch must
go through `await writes.replicate(batch)` (in sync mode that waits for the peers) before its
reply is sent: the connection starts one drain task for it, and every command that arrives
meanwhile is queued behind it (reads included: a read behind a pending write waits for it). The
drain task then runs the queue in order, awaiting each write's replication, and ends when the
queue is empty; the connection is back on the synchronous path. A burst of pipelined commands
therefore costs one task, however many writes it holds, and a `replicate` that does not suspend
(a mesh of one) costs a plain call inside it. In async write mode, where replication only queues
the batch, the connection runs `replicate` inline up to its first suspension and needs no task
at all unless it does suspend (measured: about 5 us less per unpipelined write).

Atomicity on this node. `execute` never awaits, so a transaction's writes land between two
commands of any other connection, and the reads of one chunk that a connection runs
synchronously see either all of a transaction or none of it.

Flow control: a connection stops reading while its client does not drain its replies or while
BACKLOG_MAX commands wait behind a write; an idle client is closed after `idle_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections import deque
from typing import Any, Final, Generic, Protocol, TypeVar, cast

from cluster.api.coro import Resume
from cluster.api.metrics import Metrics
from cluster.api.ports import Writes
from cluster.api.reply import Reply
from cluster.core.kv import Batch
from cluster.errors import BadRequest, Internal, KVError

logger = logging.getLogger(__name__)

Item = TypeVar("Item")

# Parsed commands a connection may hold behind a pending write before it stops reading.
BACKLOG_MAX: Final = 4096


class Host(Protocol):
    """What a connection needs of the server that accepted it (cluster.api.listener.Listener)."""

    name: str
    writes: Writes
    metrics: Metrics
    eager: bool
    idle_timeout: float
    ok: Any  # the command counter's children, by outcome
    error: Any

    def attach(self, conn: Any) -> None: ...

    def detach(self, conn: Any) -> None: ...


class OrderedConnection(asyncio.Protocol, Generic[Item]):
    """One client connection: in-order execution, replication, flow control.

    A protocol supplies the decoding (`decode`, `decode_eof`: bytes to items, each a parsed
    command or the error to answer), the execution (`execute`: an item to a Reply, never
    awaiting), `reset` (the connection went away: drop its transaction) and `error_line`.
    """

    kind = "client"  # how log lines name this protocol's clients

    def __init__(self, server: Host) -> None:
        self.server = server
        self.writes = server.writes
        self.metrics = server.metrics
        # Async write mode acknowledges once applied here: replication need not be awaited.
        self.eager = server.eager
        self.name = server.name
        self.idle_timeout = server.idle_timeout
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.backlog: deque[Item] = deque()  # waiting behind `task`
        self.task: asyncio.Task[None] | None = None  # the drain task, while a write is pending
        self.out: list[bytes] = []  # replies not yet handed to the transport
        self.n_ok = 0  # replies in `out`, for the metrics
        self.n_error = 0
        self.flush_handle: asyncio.Handle | None = None
        self.idle_handle: asyncio.TimerHandle | None = None
        self.last_read = 0.0
        self.write_paused = False
        self.read_paused = False
        self.eof = False
        self.closed = False
        self.closing = False  # a reply asked to close: run nothing more
        self.stopping = False  # the server is closing: read no further commands

    # --- what a protocol supplies ----------------------------------------------------------------

    @abstractmethod
    def decode(self, data: bytes) -> list[Item]:
        """The complete items in `data` (with what earlier chunks left unfinished)."""

    @abstractmethod
    def decode_eof(self) -> list[Item]:
        """The client stopped sending: what its unfinished input still makes."""

    @abstractmethod
    def execute(self, item: Item) -> Reply:
        """Run one item: no await, no IO."""

    @abstractmethod
    def reset(self) -> None:
        """The connection went away: drop its open transaction, its buffers."""

    @abstractmethod
    def error_line(self, exc: KVError) -> bytes:
        """The protocol's error reply for `exc`."""

    # --- asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, hence the cast).
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.last_read = self.loop.time()
        self.idle_handle = self.loop.call_later(self.idle_timeout, self._check_idle)
        self.server.attach(self)
        logger.debug("node=%s %s %s connected", self.name, self.kind, self.peer)

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        try:
            items = self.decode(data)
            if items:
                self._handle(items)
        except Exception:
            self._internal_error()

    def eof_received(self) -> bool:
        """The client finished sending: run what it sent (an unfinished last command too),
        send every reply, then close. Keeps the write side open until then."""
        self.eof = True
        try:
            items = self.decode_eof()
            if items:
                self._handle(items)
        except Exception:
            self._internal_error()
        if self.task is None:
            self._close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reset()
        self.backlog.clear()
        self.out.clear()
        for handle in (self.idle_handle, self.flush_handle):
            if handle is not None:
                handle.cancel()
        self.idle_handle = self.flush_handle = None
        self.server.detach(self)
        logger.debug("node=%s %s %s disconnected (%s)", self.name, self.kind, self.peer, exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    # --- execution -------------------------------------------------------------------------------

    def _handle(self, items: list[Item]) -> None:
        """Run items in order: synchronously until a write needs replicating, then queued
        behind it for the drain task."""
        out = self.out
        backlog = self.backlog
        execute = self.execute
        for item in items:
            if self.task is not None or self.closing:
                backlog.append(item)
                continue
            reply = execute(item)
            if reply.pending is not None:  # the database answers it: in order, in the task
                self.task = self.loop.create_task(self._drain(reply))
                continue
            batch = reply.batch
            if batch is not None:
                if not self.writes.has_peers():
                    self._emit(reply.ok, reply.line)  # a mesh of one: applied here is everywhere
                    continue
                if not self.eager:
                    self.task = self.loop.create_task(self._drain(reply))
                    continue
                rest = self._replicate_now(reply)
                if rest is not None:  # it suspended after all: finish it in order, in a task
                    self.task = self.loop.create_task(self._drain(reply, rest))
                continue
            out.append(reply.line)
            if reply.ok:
                self.n_ok += 1
            else:
                self.n_error += 1
            if reply.close:
                self.closing = True
        if out:
            self._flush()
        if self.closing and self.task is None:
            self._close()
        elif len(backlog) >= BACKLOG_MAX:
            self._update_reading()

    def _internal_error(self) -> None:
        """A bug while serving this client: log it, answer an Error, close the connection."""
        logger.exception("node=%s %s %s: internal error", self.name, self.kind, self.peer)
        self.metrics.internal_errors.inc()
        self._emit(False, self.error_line(Internal("internal error; see the node's log")))
        self._close()

    def _replicate_now(self, reply: Reply) -> Resume | None:
        """Async write mode: run `replicate` up to its first suspension, here and now.

        In async mode replication only queues the batch for the peers, so the coroutine
        finishes in this first step and the Ok joins the replies of this chunk: no task, no
        extra loop turn. Should it suspend after all, the rest is returned to be awaited in
        order by the drain task. (Not done in sync mode: code that waits for peers may rely on
        running inside a task, as `asyncio.timeout` does.)
        """
        assert reply.batch is not None
        coro = self.writes.replicate(reply.batch)
        try:
            first = coro.send(None)
        except StopIteration:
            self._emit(reply.ok, reply.line)
            return None
        except KVError as exc:  # the disk copy refused it (STORAGE_UNAVAILABLE)
            self._emit(False, self.error_line(exc))
            return None
        except Exception:
            self._replication_failed(reply.batch)
            return None
        return Resume(coro, first)

    async def _drain(self, reply: Reply, started: Resume | None = None) -> None:
        """Replicate a write, send its reply, then run the queue behind it in the same way.

        Only writes start or continue this loop; a write's reply is sent once it replicated,
        unless replication itself fails. `started` is the rest of a first replication that
        `_replicate_now` began.
        """
        backlog = self.backlog
        out = self.out
        replicate = self.writes.replicate
        execute = self.execute
        try:
            while True:
                if out and self.flush_handle is None:
                    # Sent on the next loop turn: at once if replication suspends, else together
                    # with the replies that follow (the task's last step flushes them first).
                    self.flush_handle = self.loop.call_soon(self._flush_soon)
                batch = reply.batch
                carried: Reply | None = None
                try:
                    if reply.read is not None:
                        reply, carried = await self._read_group(reply)
                    elif reply.pending is not None:
                        reply = await reply.pending()
                    elif started is not None:
                        await started
                        started = None
                    else:
                        assert batch is not None
                        await replicate(batch)
                except KVError as exc:  # the disk or the database refused it
                    self._emit(False, self.error_line(exc))
                except Exception:
                    self._replication_failed(batch)
                else:
                    self._emit(reply.ok, reply.line)
                    self.closing = self.closing or reply.close
                next_write = None
                while (carried is not None or backlog) and not self.closed and not self.closing:
                    if carried is not None:  # the first reply after a group of reads
                        done, carried = carried, None
                    else:
                        done = execute(backlog.popleft())
                    if done.batch is not None or done.pending is not None:
                        next_write = done
                        break
                    self._emit(done.ok, done.line)
                    self.closing = done.close
                if next_write is None or self.closed:
                    break
                reply = next_write
        except Exception:
            self._internal_error()
        finally:
            self.task = None
            if self.flush_handle is not None:
                self.flush_handle.cancel()
                self.flush_handle = None
            self._flush()
            self._update_reading()
            if self.eof or self.closing:
                self._close()

    async def _read_group(self, first: Reply) -> tuple[Reply, Reply | None]:
        """Database mode: the reads queued one after another are read in one statement, as the
        memory store answers one chunk's reads in one step, so that none of them sees part of a
        transaction committed meanwhile. Emits every reply of the group but the last, which it
        returns, with the first reply after the group that is not a read (to run next)."""
        group = [first]
        after = None
        while self.backlog and not self.closed and not self.closing:
            done = self.execute(self.backlog.popleft())
            if done.read is None:
                after = done
                break
            group.append(done)
        replies = await self.read_many(group)
        for r in replies[:-1]:
            self._emit(r.ok, r.line)
        return replies[-1], after

    async def read_many(self, group: list[Reply]) -> list[Reply]:
        """The replies of a group of reads (`Reply.read`); a protocol that can read them in one
        statement overrides this."""
        replies = []
        for r in group:
            assert r.pending is not None  # a read's reply is always pending
            replies.append(await r.pending())
        return replies

    def _replication_failed(self, batch: Batch | None) -> None:
        """Replication (or a database's answer) raised: a bug; the client gets an Error."""
        logger.exception(
            "node=%s %s %s: replication of ts=%s failed",
            self.name,
            self.kind,
            self.peer,
            batch.ts if batch is not None else "-",
        )
        self.metrics.internal_errors.inc()
        self._emit(False, self.error_line(Internal("replication failed; see the node's log")))

    def _emit(self, ok: bool, line: bytes) -> None:
        self.out.append(line)
        if ok:
            self.n_ok += 1
        else:
            self.n_error += 1

    def _flush_soon(self) -> None:
        self.flush_handle = None
        self._flush()

    def _flush(self) -> None:
        """Hand the pending replies to the transport in one write, and count them."""
        out = self.out
        if not out:
            return
        server = self.server
        if self.n_ok:
            server.ok.inc(self.n_ok)
            self.n_ok = 0
        if self.n_error:
            server.error.inc(self.n_error)
            self.n_error = 0
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    # --- flow control and lifetime ---------------------------------------------------------------

    def _update_reading(self) -> None:
        """Read while the client drains its replies and the queue behind a write is short."""
        transport = self.transport
        if transport is None or self.closed:
            return
        pause = self.write_paused or self.stopping or len(self.backlog) >= BACKLOG_MAX
        if pause and not self.read_paused:
            self.read_paused = True
            transport.pause_reading()
        elif not pause and self.read_paused:
            self.read_paused = False
            transport.resume_reading()

    def stop_reading(self) -> None:
        """The server is shutting down: take no new commands; those already read still run."""
        self.stopping = True
        self._update_reading()

    def _check_idle(self) -> None:
        self.idle_handle = None
        if self.closed:
            return
        now = self.loop.time()
        remaining = self.last_read + self.idle_timeout - now
        if remaining > 0 or self.task is not None:
            # Heard from recently, or the client waits on us (a pending write): not idle.
            self.idle_handle = self.loop.call_later(
                remaining if remaining > 0 else self.idle_timeout, self._check_idle
            )
            return
        logger.info(
            "node=%s %s %s idle for %gs: closing",
            self.name,
            self.kind,
            self.peer,
            self.idle_timeout,
        )
        self._emit(
            False,
            self.error_line(
                BadRequest(
                    f"no command for {self.idle_timeout:g} seconds; closing the connection",
                    "INVALID_PARAMETER",
                )
            ),
        )
        self._flush()
        self._close()

    def _close(self) -> None:
        """Close after the pending replies are written (the transport flushes its buffer)."""
        self._flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
