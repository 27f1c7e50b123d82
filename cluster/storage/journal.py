"""Every change the store keeps goes to disk on a thread of its own, in group commits.

The store calls the journal (its `ChangeSink`) in the same step as each change, on the event
loop's thread; the journal only appends the change to a list. Once per loop turn that list is
handed to the disk thread, which writes everything handed to it so far in one SQLite transaction
and commits: one commit (and, with `--fsync always`, one fsync) for every write of that turn, and
of the turns that came while it was busy. The event loop never waits on the disk; a request waits,
in `synced()`, only for the commit that holds its own changes.

What must stay true:
- `synced()` returns only once every change recorded before it is committed (with `always`: on
  disk); a write is acknowledged, to a client or to a peer, only after it.
- Changes are written in the order the store made them; a failed commit is rolled back and the
  same changes are tried again, first, until the disk takes them: nothing is skipped.
- While the disk fails, `failure` says why: writes are refused with STORAGE_UNAVAILABLE before
  they change anything (`check_writable`), reads go on, and the node recovers by itself.

`--fsync`, as Redis's `appendfsync`: `always` fsyncs every commit; `everysec` commits without
fsync and checkpoints (which fsyncs) once a second; `no` leaves flushing to the OS. In every mode
a write is acknowledged after its commit, so killing the process loses nothing acknowledged; a
power cut loses at most the last second with `everysec`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from cluster.errors import StorageUnavailable

logger = logging.getLogger(__name__)

RETRY_INTERVAL = 0.5  # seconds between attempts while the disk fails
CHECKPOINT_INTERVAL = 1.0  # everysec: a checkpoint (and so an fsync) at most this often

# A change is a tuple; its length says which: 5 a put, 3 a clear, 4 a drop, 2 a mark.
_CLEAR = "clear"
_DROP = "drop"

UPSERT = "INSERT OR REPLACE INTO entries (k, v, ts, node, expires) VALUES (?, ?, ?, ?, ?)"
SET_META = "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)"


class Journal:
    """The store's sink to disk: records changes, commits them in groups on a thread."""

    def __init__(self, conn: sqlite3.Connection, fsync: str, name: str, path: Path) -> None:
        self.conn = conn
        self.fsync = fsync
        self.name = name
        self.path = path
        self.failure: str | None = None  # why the disk refuses writes, while it does
        self._pending: list[tuple[Any, ...]] = []
        self._recorded = 0  # changes recorded (loop thread)
        self._durable = 0  # changes committed (read on the loop thread)
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        # Handed to the disk thread: lists of changes and the count they bring the total to.
        self._cond = threading.Condition()
        self._queue: list[tuple[list[tuple[Any, ...]], int]] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self.commits = 0
        self.failed_commits = 0

    # --- the store's sink (loop thread) -------------------------------------------------------

    def put(self, key: str, value: str | None, ts: int, node: str, expires: float | None) -> None:
        self._record((key, value, ts, node, expires))

    def clear(self, ts: int, node: str) -> None:
        self._record((_CLEAR, ts, node))

    def dropped(self, keys: list[str], purged_below: int, purged_max: int) -> None:
        self._record((_DROP, keys, purged_below, purged_max))

    def mark(self, name: str, value: int | str) -> None:
        """Keep a named figure beside the data (the `covered` point, the node's name)."""
        self._record((name, value))

    def _record(self, change: tuple[Any, ...]) -> None:
        self._pending.append(change)
        self._recorded += 1
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._hand_off)

    def _hand_off(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        changes, self._pending = self._pending, []
        with self._cond:
            self._queue.append((changes, self._recorded))
            self._cond.notify()

    # --- what writers wait for (loop thread) --------------------------------------------------

    def check_writable(self) -> None:
        """Raise StorageUnavailable while the disk refuses writes (before anything changes)."""
        if self.failure is not None:
            raise StorageUnavailable(self.failure)

    @property
    def waits(self) -> bool:
        """Whether writers must wait for the journal (with changes not yet committed)."""
        return self._durable < self._recorded

    async def synced(self) -> None:
        """Until every change recorded so far is committed; StorageUnavailable if the commit
        holding them failed (they stay queued and are written when the disk recovers)."""
        target = self._recorded
        if self._durable >= target:
            return
        if self.failure is not None:
            raise StorageUnavailable(self.failure)
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future

    def _committed(self, upto: int) -> None:
        self._durable = max(self._durable, upto)
        if self.failure is not None:
            logger.warning("node=%s the disk takes writes again: %s", self.name, self.path)
            self.failure = None
        while self._waiters and self._waiters[0][0] <= self._durable:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)

    def _failed(self, reason: str) -> None:
        if self.failure is None:
            logger.error("node=%s the disk refuses writes (%s): %s", self.name, self.path, reason)
        self.failure = f"the disk copy cannot be written ({reason}); reads go on"
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(StorageUnavailable(self.failure))

    # --- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the disk thread; changes recorded before now are handed over at once."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"journal-{self.name}", daemon=True)
        self._thread.start()
        if self._pending:
            self._scheduled = True
            self._loop.call_soon(self._hand_off)

    async def close(self) -> None:
        """Write what is recorded, stop the thread, close the database."""
        self._hand_off()
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    # --- the disk thread ---------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        carried: list[tuple[Any, ...]] = []  # changes of a failed commit, tried again first
        upto = 0
        last_checkpoint = time.monotonic()
        dirty = False
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    timeout = CHECKPOINT_INTERVAL if dirty else None
                    if carried:
                        timeout = RETRY_INTERVAL
                    self._cond.wait(timeout)
                batches, self._queue = self._queue, []
                closing = self._closing
            for changes, count in batches:
                carried.extend(changes)
                upto = count
            if carried:
                try:
                    self._write(carried)
                except Exception as exc:  # the disk (sqlite3.Error), or a bug: never hang writers
                    self.failed_commits += 1
                    if not isinstance(exc, sqlite3.Error):
                        logger.exception("node=%s journal commit failed", self.name)
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                    loop.call_soon_threadsafe(self._failed, str(exc) or type(exc).__name__)
                    if closing:
                        logger.error(
                            "node=%s %d changes not written at exit", self.name, len(carried)
                        )
                        return
                    time.sleep(RETRY_INTERVAL)
                    continue
                carried = []
                dirty = True
                self.commits += 1
                loop.call_soon_threadsafe(self._committed, upto)
            if dirty and self.fsync == "everysec":
                now = time.monotonic()
                if now - last_checkpoint >= CHECKPOINT_INTERVAL or closing:
                    self._checkpoint()
                    last_checkpoint, dirty = now, False
            if closing:
                return

    def _checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # a busy or failing checkpoint is retried later
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _write(self, changes: list[tuple[Any, ...]]) -> None:
        """One transaction for every change, in order; runs of puts go in one executemany."""
        conn = self.conn
        conn.execute("BEGIN")
        run: list[tuple[Any, ...]] = []
        for change in changes:
            if len(change) == 5:
                run.append(change)
                continue
            if run:
                conn.executemany(UPSERT, run)
                run = []
            if len(change) == 3:  # a clear: every entry at or below (ts, node) goes
                _, ts, node = change
                conn.execute(
                    "DELETE FROM entries WHERE ts < ? OR (ts = ? AND node <= ?)", (ts, ts, node)
                )
                conn.executemany(SET_META, [("clear_ts", ts), ("clear_node", node)])
            elif len(change) == 4:
                _, keys, below, highest = change
                conn.executemany("DELETE FROM entries WHERE k = ?", [(k,) for k in keys])
                conn.executemany(SET_META, [("purged_below", below), ("purged_max", highest)])
            else:
                conn.execute(SET_META, change)
        if run:
            conn.executemany(UPSERT, run)
        conn.execute("COMMIT")
