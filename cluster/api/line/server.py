"""The line protocol's IO: the asyncio protocol of one connection, and the listening server.

Ordering. Replies leave in request order so clients may pipeline. While nothing is pending a
connection runs every command synchronously inside `data_received` and answers the whole chunk
with one `write`. A write (PUT, DEL, COMMIT) is applied to the store at its place in the order,
then its batch must go through `await writes.replicate(batch)` (in sync mode that waits for the
peers) before its Ok is sent: the connection starts one drain task for it, and every command that
arrives meanwhile is queued behind it (reads included: a read behind a pending write waits for
it). The drain task then runs the queue in order, awaiting each write's replication, and ends
when the queue is empty; the connection is back on the synchronous path. A burst of pipelined
commands therefore costs one task, however many writes it holds, and a `replicate` that does not
suspend (a mesh of one) costs a plain call inside it. In async write mode, where replication only
queues the batch, the connection runs `replicate` inline up to its first suspension and needs no
task at all unless it does suspend (measured: about 5 us less per unpipelined write).

Atomicity on this node. `Session.execute` never awaits, so the GETs of one chunk that a connection
runs synchronously see either all of a COMMIT or none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Final, cast

from cluster.api.line.framer import LineFramer
from cluster.api.line.grammar import OK, Command, error_reply, parse_line
from cluster.api.line.session import Session
from cluster.api.metrics import Metrics
from cluster.api.ports import Writes
from cluster.core.kv import KV, Batch
from cluster.errors import BadRequest, Internal, KVError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LineOptions:
    """The protocol's limits (from Config) and whether writes are acknowledged once local."""

    eager: bool  # async write mode: replication is not awaited before the Ok
    txn_max_writes: int
    max_line: int
    idle_timeout: float


# Parsed commands a connection may hold behind a pending write before it stops reading.
BACKLOG_MAX: Final = 4096


class _Resume:
    """Awaits the rest of a coroutine whose first step already ran (and yielded `first`).

    The delegation of `yield from` (PEP 380), written out because the first value was taken
    outside: the awaiting task receives `first`, and every later value, exception or
    cancellation passes through to the coroutine unchanged.
    """

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class LineConnection(asyncio.Protocol):
    """One client connection: framing, in-order execution, replication, flow control."""

    def __init__(self, server: LineServer) -> None:
        options = server.options
        self.server = server
        self.writes = server.writes
        self.metrics = server.metrics
        # Async write mode acknowledges once applied here: replication need not be awaited.
        self.eager = options.eager
        self.name = server.name
        self.session = Session(server.kv, options.txn_max_writes)
        self.max_line = options.max_line
        self.framer = LineFramer(options.max_line)
        self.idle_timeout = options.idle_timeout
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.backlog: deque[Command | KVError] = deque()  # waiting behind `task`
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
        self.stopping = False  # the server is closing: read no further commands

    # --- asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, hence the cast).
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.last_read = self.loop.time()
        self.idle_handle = self.loop.call_later(self.idle_timeout, self._check_idle)
        self.server.attach(self)
        logger.debug("node=%s line client %s connected", self.name, self.peer)

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        lines, too_long = self.framer.feed(data)
        if lines or too_long:
            try:
                self._handle(lines, too_long)
            except Exception:
                self._internal_error()

    def eof_received(self) -> bool:
        """The client finished sending: run what it sent (an unterminated last line too),
        send every reply, then close. Keeps the write side open until then."""
        self.eof = True
        last = self.framer.rest()
        if last is not None:
            try:
                self._handle([last], False)
            except Exception:
                self._internal_error()
        if self.task is None:
            self._close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.session.in_transaction:
            logger.debug(
                "node=%s line client %s left: transaction rolled back", self.name, self.peer
            )
        self.session.rollback()
        self.backlog.clear()
        self.out.clear()
        self.framer.reset()
        for handle in (self.idle_handle, self.flush_handle):
            if handle is not None:
                handle.cancel()
        self.idle_handle = self.flush_handle = None
        self.server.detach(self)
        logger.debug("node=%s line client %s disconnected (%s)", self.name, self.peer, exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    # --- execution -------------------------------------------------------------------------------

    def _handle(self, lines: list[bytes], too_long: bool) -> None:
        """Run complete lines in order (then the over-long error, if flagged): synchronously
        until a write needs replicating, then queued behind it for the drain task."""
        max_line = self.max_line
        session = self.session
        out = self.out
        backlog = self.backlog
        for line in lines:
            parsed = parse_line(line) if len(line) <= max_line else self._too_long()
            if self.task is not None:
                backlog.append(parsed)
                continue
            reply = session.execute(parsed)
            batch = reply.batch
            if batch is not None:
                if not self.writes.has_peers():
                    out.append(OK)  # a mesh of one: applied here is everywhere
                    self.n_ok += 1
                    continue
                if not self.eager:
                    self.task = self.loop.create_task(self._drain(batch))
                    continue
                rest = self._replicate_now(batch)
                if rest is not None:  # it suspended after all: finish it in order, in a task
                    self.task = self.loop.create_task(self._drain(batch, rest))
                continue
            out.append(reply.line)
            if reply.ok:
                self.n_ok += 1
            else:
                self.n_error += 1
        if too_long:
            if self.task is not None:
                backlog.append(self._too_long())
            else:
                reply = session.execute(self._too_long())
                self._emit(reply.ok, reply.line)
        if out:
            self._flush()
        if len(backlog) >= BACKLOG_MAX:
            self._update_reading()

    def _too_long(self) -> KVError:
        return BadRequest(
            f"the line is longer than {self.max_line} bytes; skipped to the next newline",
            "INVALID_PARAMETER",
        )

    def _internal_error(self) -> None:
        """A bug while serving this client: log it, answer an Error, close the connection."""
        logger.exception("node=%s line client %s: internal error", self.name, self.peer)
        self.metrics.internal_errors.inc()
        self._emit(False, error_reply(Internal("internal error; see the node's log")))
        self._close()

    def _replicate_now(self, batch: Batch) -> _Resume | None:
        """Async write mode: run `replicate` up to its first suspension, here and now.

        In async mode replication only queues the batch for the peers, so the coroutine
        finishes in this first step and the Ok joins the replies of this chunk: no task, no
        extra loop turn. Should it suspend after all, the rest is returned to be awaited in
        order by the drain task. (Not done in sync mode: code that waits for peers may rely on
        running inside a task, as `asyncio.timeout` does.)
        """
        coro = self.writes.replicate(batch)
        try:
            first = coro.send(None)
        except StopIteration:
            self.out.append(OK)
            self.n_ok += 1
            return None
        except Exception:
            self._replication_failed(batch)
            return None
        return _Resume(coro, first)

    async def _drain(self, batch: Batch, started: _Resume | None = None) -> None:
        """Replicate a write, send its Ok, then run the queue behind it in the same way.

        Only writes start or continue this loop, and a write's reply is always Ok (a refused
        write has no batch), unless replication itself fails. `started` is the rest of a first
        replication that `_replicate_now` began.
        """
        session = self.session
        backlog = self.backlog
        out = self.out
        replicate = self.writes.replicate
        try:
            while True:
                if out and self.flush_handle is None:
                    # Sent on the next loop turn: at once if replication suspends, else together
                    # with the replies that follow (the task's last step flushes them first).
                    self.flush_handle = self.loop.call_soon(self._flush_soon)
                try:
                    if started is not None:
                        await started
                        started = None
                    else:
                        await replicate(batch)
                except Exception:
                    self._replication_failed(batch)
                else:
                    out.append(OK)
                    self.n_ok += 1
                next_batch = None
                while backlog and not self.closed:
                    reply = session.execute(backlog.popleft())
                    next_batch = reply.batch
                    if next_batch is not None:
                        break
                    self._emit(reply.ok, reply.line)
                if next_batch is None or self.closed:
                    break
                batch = next_batch
        except Exception:
            self._internal_error()
        finally:
            self.task = None
            if self.flush_handle is not None:
                self.flush_handle.cancel()
                self.flush_handle = None
            self._flush()
            self._update_reading()
            if self.eof:
                self._close()

    def _replication_failed(self, batch: Batch) -> None:
        """The write is applied here but replication raised: a bug; the client gets an Error."""
        logger.exception(
            "node=%s line client %s: replication of ts=%d failed", self.name, self.peer, batch.ts
        )
        self.metrics.internal_errors.inc()
        self._emit(False, error_reply(Internal("replication failed; see the node's log")))

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
            "node=%s line client %s idle for %gs: closing", self.name, self.peer, self.idle_timeout
        )
        self._emit(
            False,
            error_reply(
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


class LineServer:
    """The listening socket and its connections; `close` stops both."""

    def __init__(
        self, name: str, kv: KV, writes: Writes, metrics: Metrics, options: LineOptions
    ) -> None:
        self.name = name
        self.kv = kv
        self.writes = writes
        self.metrics = metrics
        self.options = options
        self.server: asyncio.Server | None = None
        self.connections: set[LineConnection] = set()
        # Drain tasks whose connection went away while its write was replicating: the write is
        # already applied here, so replication runs to the end; held here so it is not lost.
        self.orphans: set[asyncio.Task[None]] = set()
        self.all_closed = asyncio.Event()
        self.all_closed.set()
        # Children of the command counter, resolved once: `labels()` is a locked dict lookup.
        self.ok = metrics.line_commands.labels("ok")
        self.error = metrics.line_commands.labels("error")

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        if self.server is None or not self.server.sockets:
            raise RuntimeError("the line server is not listening")
        return int(self.server.sockets[0].getsockname()[1])

    def attach(self, conn: LineConnection) -> None:
        self.connections.add(conn)
        self.all_closed.clear()

    def detach(self, conn: LineConnection) -> None:
        self.connections.discard(conn)
        if conn.task is not None and not conn.task.done():
            self.orphans.add(conn.task)
            conn.task.add_done_callback(self.orphans.discard)
        if not self.connections:
            self.all_closed.set()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        # A deep accept queue: hundreds of clients connecting at once must not hit SYN retries.
        self.server = await loop.create_server(
            lambda: LineConnection(self), host, port, reuse_address=True, backlog=1024
        )

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
        logger.info("node=%s line protocol server closed", self.name)


async def start_line_server(server: LineServer, host: str, port: int) -> LineServer:
    """Listen for line-protocol clients on host:port (0: any free port); returns the server."""
    await server.start(host, port)
    logger.info("node=%s serving the line protocol on %s:%d", server.name, host, server.port)
    return server
