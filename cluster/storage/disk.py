"""A node's replica on local disk: one SQLite database in WAL mode. Blocking; the journal's thread
(`cluster.storage.journal`) is the only one that writes it, and the node reads it once, at start.

Why SQLite rather than a log of our own: it is in the standard library and kept by people who do
nothing else; its write-ahead log already frames every page with a checksum and a salt, cuts a
torn tail at the last whole commit, and checkpoints the log into the database. The table holds
one row per stored key (the newest version, tombstones included), so overwrites and deletes
compact by themselves: the file is the live state plus SQLite's free pages, which it reuses.

What is kept: every entry of the store (value or tombstone, version, absolute expiry), the range
tombstone of the last `clear`, and the purge marks (`purged_below`, `purged_max`) plus `covered`,
the point up to which this node is known to hold every peer's writes (see Lifecycle.sync).

Damage is reported, never hidden:
- a torn tail of the write-ahead log (a crash in the middle of a commit) is cut by SQLite at the
  last whole commit; `open_disk` finds the frames it cut and logs them with their offset;
- damage anywhere else makes `load` raise `DamagedData` naming the file and the byte offset of
  the first bad page; with `repair=True` the damaged files are moved aside and the node starts
  empty, to be filled again from its peers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cluster.core.store import Mutation, Store
from cluster.storage.pages import first_bad_page

logger = logging.getLogger(__name__)

DB_NAME = "kvmesh.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    k TEXT PRIMARY KEY, v TEXT, ts INTEGER NOT NULL, node TEXT NOT NULL, expires REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""
SYNCHRONOUS = {"always": "FULL", "everysec": "NORMAL", "no": "OFF"}
WAL_HEADER = 32
FRAME_HEADER = 24


class DamagedData(Exception):
    """The database is damaged somewhere other than a torn log tail."""


@dataclass(frozen=True, slots=True)
class Marks:
    """What the disk copy says beside its entries."""

    clear: tuple[int, str] = (0, "")
    purged_below: int = 0
    purged_max: int = 0
    covered: int = 0
    node: str = ""


def connect(directory: Path, fsync: str, page_size: int = 4096) -> sqlite3.Connection:
    """Open (or create) the database in `directory`, in WAL mode with the fsync policy."""
    directory.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(directory / DB_NAME, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA page_size={int(page_size)}")  # only takes effect on a new file
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={SYNCHRONOUS[fsync]}")
    conn.executescript(SCHEMA)
    return conn


def torn_tail(wal: Path, valid_frames: int) -> tuple[int, int] | None:
    """(offset, bytes) of what follows the last whole commit in the write-ahead log and
    belongs to it (same salt: not a leftover of an earlier generation), or None.

    SQLite ignores such a tail on recovery; this only finds it, to say so.
    """
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < WAL_HEADER:
        return (0, len(data)) if data else None
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    frame = FRAME_HEADER + page_size
    end = WAL_HEADER + valid_frames * frame
    if len(data) <= end:
        return None
    rest = data[end:]
    if len(rest) >= FRAME_HEADER and rest[8:16] != salts:
        return None  # frames of an earlier generation of the log, not a torn write
    return end, len(rest)


def marks_of(conn: sqlite3.Connection) -> Marks:
    """What the disk copy says beside its entries (Marks() for a new one)."""
    meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
    return Marks(
        (int(meta.get("clear_ts", 0)), str(meta.get("clear_node", ""))),
        int(meta.get("purged_below", 0)),
        int(meta.get("purged_max", 0)),
        int(meta.get("covered", 0)),
        str(meta.get("node", "")),
    )


def _rows(conn: sqlite3.Connection) -> Iterator[Mutation]:
    """Every row as (key, value, ts, node, expires), in key order (the primary key's order):
    the store builds its sorted index in one pass. The cursor's own tuples, not Mutations: a
    million of them would cost a third of a second more."""
    rows: Iterator[Mutation] = conn.execute("SELECT k, v, ts, node, expires FROM entries")
    return rows


def _damage(path: Path, exc: Exception) -> DamagedData:
    """Name the first bad page and its byte offset (SQLite's own check does not always)."""
    where = "(no damaged b-tree page found: an overflow page, or the log)"
    with contextlib.suppress(OSError):
        bad = first_bad_page(path)
        if bad is not None:
            page, offset, what = bad
            where = f"at byte offset {offset} (page {page}: {what})"
    return DamagedData(
        f"{path} is damaged {where}: {exc}. Start the node with --repair-data to move the "
        "damaged files aside and fill the replica again from its peers"
    )


def load(directory: Path, fsync: str, store: Store, repair: bool = False) -> sqlite3.Connection:
    """Open the disk copy and restore it into the (empty) store; the open connection.

    DamagedData if it is damaged beyond a torn log tail, unless `repair`: then the damaged
    files are moved aside (renamed with a `.damaged-<time>` suffix) and the store stays empty.
    """
    path = directory / DB_NAME
    wal = directory / (DB_NAME + "-wal")
    conn: sqlite3.Connection | None = None
    try:
        conn = connect(directory, fsync)
        marks = marks_of(conn)
        started = time.monotonic()
        count = store.restore(_rows(conn), marks.clear, marks.purged_below, marks.purged_max)
        busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.DatabaseError as exc:
        damaged = _damage(path, exc)
        if conn is not None:
            conn.close()
        if not repair:
            raise damaged from None
        logger.error("%s", damaged)
        return _move_aside(directory, fsync, store)
    tail = torn_tail(wal, frames) if not busy else None
    if tail is not None:
        logger.warning(
            "%s: cut a torn tail of %d bytes at byte offset %d (a commit the crash interrupted; "
            "it was never acknowledged)",
            wal,
            tail[1],
            tail[0],
        )
    logger.info("restored %d entries from %s in %.2fs", count, path, time.monotonic() - started)
    return conn


def _move_aside(directory: Path, fsync: str, store: Store) -> sqlite3.Connection:
    suffix = f".damaged-{int(time.time())}"
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
        f = directory / name
        if f.exists():
            f.rename(directory / (name + suffix))
            logger.warning("moved %s aside to %s", f, f.name + suffix)
    store.reset()  # whatever was read before the damage: the peers give it all again
    return connect(directory, fsync)


def file_bytes(directory: Path) -> int:
    """The disk copy's size: the database, its log and its shared-memory index."""
    return sum(
        os.path.getsize(directory / n)
        for n in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm")
        if (directory / n).exists()
    )
