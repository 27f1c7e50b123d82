"""The line protocol: one command a line over TCP, one JSON reply a line, in request order.

Three layers, from pure to IO:

- `parse_line(bytes) -> Command | KVError`: the grammar, with no state and no IO. It never raises;
  a malformed line comes back as the error to answer with.
- `Session`: one connection's transaction state and the execution of commands against `KV`, with
  no IO and no await. `execute` returns the reply and, for a write, the `Batch` the IO layer must
  replicate before it sends the reply. The transaction rules are redis `multi.c`'s: START cannot
  nest, COMMIT/ROLLBACK need an open transaction, COMMIT applies the queue with one
  `KV.write_many` call (one HLC timestamp, no await between the writes), and a command rejected
  inside a transaction dooms it (COMMIT then answers an Error and applies nothing, as EXECABORT).
- `LineConnection` (an `asyncio.Protocol`) and `LineServer`: framing, ordering, replication,
  back-pressure and timeouts.

Ordering. Replies leave in request order so clients may pipeline. While nothing is pending a
connection runs every command synchronously inside `data_received` and answers the whole chunk
with one `write`. A write (PUT, DEL, COMMIT) is applied to the store at its place in the order,
then its batch must go through `await node.replicate(batch)` (in sync mode that waits for the
peers) before its Ok is sent: the connection starts one drain task for it, and every command that
arrives meanwhile is queued behind it (reads included: a read behind a pending write waits for
it). The drain task then runs the queue in order, awaiting each write's replication, and ends
when the queue is empty; the connection is back on the synchronous path. A burst of pipelined
commands therefore costs one task, however many writes it holds, and a `replicate` that does not
suspend (a mesh of one) costs a plain call inside it. In async write mode, where replication only
queues the batch, the connection runs `replicate` inline up to its first suspension and needs no
task at all unless it does suspend (measured: about 5 us less per unpipelined write).

Atomicity on this node. `Session.execute` never awaits, so a COMMIT's writes land between two
commands of any other connection, and the GETs of one chunk that a connection runs synchronously
see either all of a COMMIT or none of it.

Errors. `error_reply` is the one place a `KVError` becomes a line; malformed input never closes
the connection: a line longer than `line_max_bytes` is answered when the limit is crossed and
the rest of it is skipped up to the next newline, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, cast

import orjson

from cluster.core.kv import KV, Batch
from cluster.errors import BadRequest, Internal, KVError, NotFound

if TYPE_CHECKING:
    from cluster.app import Node

logger = logging.getLogger(__name__)

Op = Literal["PUT", "GET", "DEL", "START", "COMMIT", "ROLLBACK"]


class Command(NamedTuple):
    """One parsed line. `key` and `value` are "" where the command takes none."""

    op: Op
    key: str = ""
    value: str = ""


_OPS: Final[dict[str, Op]] = {
    "PUT": "PUT",
    "GET": "GET",
    "DEL": "DEL",
    "START": "START",
    "COMMIT": "COMMIT",
    "ROLLBACK": "ROLLBACK",
}
_BARE: Final[dict[Op, Command]] = {
    "START": Command("START"),
    "COMMIT": Command("COMMIT"),
    "ROLLBACK": Command("ROLLBACK"),
}
_COMMANDS = "PUT key value, GET key, DEL key, START, COMMIT or ROLLBACK"


def _clip(text: str, limit: int = 40) -> str:
    """A bounded quote of client input for an error message (lines may be a MiB long)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_line(line: bytes) -> Command | KVError:
    """Parse one line (without its newline) into a Command, or the error to answer it with.

    Pure and total: never raises. Fields are separated by runs of spaces; surrounding spaces and
    a trailing CR are ignored; the command name is case-insensitive (ASCII only, so that Unicode
    case folding cannot turn another word into a command). PUT's value is the rest of the line
    after the key, surrounding spaces trimmed, and may contain spaces. Keys and values are not
    checked against the limits here: `Session` does that with `KV.check_key` / `check_value`.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRequest(
            f"the line is not valid UTF-8 (bad byte at offset {exc.start})", "INVALID_PARAMETER"
        )
    text = text.strip(" \r")
    if not text:
        return BadRequest(f"empty line: expected {_COMMANDS}", "INVALID_PARAMETER")
    head, _, rest = text.partition(" ")
    op = _OPS.get(head)
    if op is None and head.isascii():
        op = _OPS.get(head.upper())
    if op is None:
        return BadRequest(
            f"unknown command {_clip(head)}: expected {_COMMANDS}", "INVALID_PARAMETER"
        )
    rest = rest.lstrip(" ")
    if op == "PUT":
        key, _, value = rest.partition(" ")
        if not key:
            return BadRequest("PUT needs a key and a value: PUT key value", "MISSING_KEY_PARAM")
        value = value.lstrip(" ")
        if not value:
            return BadRequest(
                "PUT needs a value after the key: PUT key value", "MISSING_VALUE_PARAM"
            )
        return Command("PUT", key, value)
    if op == "GET" or op == "DEL":
        if not rest:
            return BadRequest(f"{op} needs a key: {op} key", "MISSING_KEY_PARAM")
        if " " in rest:
            return BadRequest(
                f"{op} takes one key (keys cannot contain spaces): {op} key", "INVALID_PARAMETER"
            )
        return Command(op, rest)
    if rest:
        return BadRequest(f"{op} takes no arguments", "INVALID_PARAMETER")
    return _BARE[op]


# --- replies -------------------------------------------------------------------------------------

OK: Final = b'{"status":"Ok"}\n'


def ok_result(value: str) -> bytes:
    return b'{"status":"Ok","result":' + orjson.dumps(value) + b"}\n"


def error_reply(exc: KVError) -> bytes:
    """The one place a KVError becomes a line: its human message, as HTTP shows it."""
    return orjson.dumps({"status": "Error", "mesg": exc.message}) + b"\n"


class TransactionStateError(BadRequest):
    """START inside a transaction, or COMMIT/ROLLBACK outside one.

    Unlike other rejected commands it leaves an open transaction usable (redis: a nested MULTI
    is refused without flagging the transaction).
    """


class Reply(NamedTuple):
    """What one command produced: the line to send and, for a write, the batch to replicate
    before sending it."""

    ok: bool
    line: bytes
    batch: Batch | None = None


_OK_REPLY: Final = Reply(True, OK)


class Session:
    """One connection's transaction state; executes commands against KV. No IO, no await.

    Outside a transaction PUT and DEL apply at once. Inside one they are buffered in `txn`
    (key -> value, None for a delete; the last write of a key wins), GET answers from that buffer
    first, COMMIT applies it with one `write_many` and ROLLBACK drops it. A transaction that is
    doomed (`failed` is the reason) keeps its place until COMMIT (an Error, nothing applied) or
    ROLLBACK, so that the writes a client pipelined after the failure are not applied one by one.
    """

    __slots__ = ("failed", "kv", "max_writes", "txn", "writes")

    def __init__(self, kv: KV, max_writes: int) -> None:
        self.kv = kv
        self.max_writes = max_writes
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
            entry = kv.get(key)
            if entry is None or entry.value is None:
                raise NotFound(f"no such key: {key}")
            return Reply(True, ok_result(entry.value))
        if op == "PUT":
            key = kv.check_key(cmd.key)
            value = kv.check_value(cmd.value)
            if self.txn is not None:
                return self._buffer(key, value)
            return Reply(True, OK, kv.set(key, value))
        if op == "DEL":
            key = kv.check_key(cmd.key)
            if self.txn is not None:
                return self._buffer(key, None)
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


# --- IO: the asyncio protocol and the server -----------------------------------------------------

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
        node = server.node
        self.server = server
        self.node = node
        # Async write mode acknowledges once applied here: replication need not be awaited.
        self.eager = node.config.write_mode == "async"
        self.name = node.config.name
        self.session = Session(node.kv, node.config.txn_max_writes)
        self.max_line = node.config.line_max_bytes
        self.idle_timeout = node.config.line_idle_timeout
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.partial = bytearray()  # an unfinished line, at most max_line bytes
        self.discarding = False  # skipping the rest of an over-long line
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
        lines, too_long = self._frame(data)
        if lines or too_long:
            try:
                self._handle(lines, too_long)
            except Exception:
                self._internal_error()

    def eof_received(self) -> bool:
        """The client finished sending: run what it sent (an unterminated last line too),
        send every reply, then close. Keeps the write side open until then."""
        self.eof = True
        if self.partial and not self.discarding:
            last = bytes(self.partial)
            self.partial.clear()
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
        self.partial = bytearray()
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

    # --- framing ---------------------------------------------------------------------------------

    def _frame(self, data: bytes) -> tuple[list[bytes], bool]:
        """The complete lines in `data` after any held partial line; keeps the unfinished rest.

        The flag says the unfinished rest passed the limit: it is answered after these lines,
        where it stands in the order, and skipped up to the next newline, so at most `max_line`
        bytes are ever held. (A complete line over the limit is caught by its length.)
        """
        if self.discarding:
            nl = data.find(b"\n")
            if nl < 0:
                return [], False
            self.discarding = False
            data = data[nl + 1 :]
        if self.partial:
            nl = data.find(b"\n")
            if nl < 0:
                self.partial += data
                if len(self.partial) > self.max_line:
                    self.partial = bytearray()
                    self.discarding = True
                    return [], True
                return [], False
            first = bytes(self.partial) + data[:nl]
            self.partial.clear()
            lines = data[nl + 1 :].split(b"\n")
            lines.insert(0, first)
        else:
            lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            if len(tail) > self.max_line:
                self.discarding = True
                return lines, True
            self.partial += tail
        return lines, False

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
                if not self.node.has_peers():
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
        self.node.metrics.internal_errors.inc()
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
        coro = self.node.replicate(batch)
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
        replicate = self.node.replicate
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
        self.node.metrics.internal_errors.inc()
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

    def __init__(self, node: Node) -> None:
        self.node = node
        self.server: asyncio.Server | None = None
        self.connections: set[LineConnection] = set()
        # Drain tasks whose connection went away while its write was replicating: the write is
        # already applied here, so replication runs to the end; held here so it is not lost.
        self.orphans: set[asyncio.Task[None]] = set()
        self.all_closed = asyncio.Event()
        self.all_closed.set()
        # Children of the command counter, resolved once: `labels()` is a locked dict lookup.
        self.ok = node.metrics.line_commands.labels("ok")
        self.error = node.metrics.line_commands.labels("error")

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
        logger.info("node=%s line protocol server closed", self.node.config.name)


async def start_line_server(node: Node, host: str, port: int) -> LineServer:
    """Listen for line-protocol clients on host:port (0: any free port); returns the server."""
    line = LineServer(node)
    await line.start(host, port)
    logger.info("node=%s serving the line protocol on %s:%d", node.config.name, host, line.port)
    return line
