"""The disk copy (--data-dir) on real files: torn tails, damage, compaction.

The journal is driven as a node drives it (a store whose sink it is, on an event loop); the files
are then copied while the database is still open, as a crash would leave them.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.core.store import Store
from cluster.storage import disk
from cluster.storage.journal import Journal

WAL = disk.DB_NAME + "-wal"


def state(store: Store) -> dict[str, tuple[str | None, int, str, float | None]]:
    return {k: (e.value, e.ts, e.node, e.expires) for k, e in store.stored_items()}


def open_journal(directory: Path, page_size: int = 4096) -> tuple[Store, Journal]:
    store = Store()
    conn = disk.connect(directory, "always", page_size=page_size)
    conn.execute("PRAGMA wal_autocheckpoint=0")  # keep every commit in the log, as a crash finds it
    journal = Journal(conn, "always", "n1", directory)
    store.sink = journal
    journal.start()
    return store, journal


def names(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir()]


def crash_copy(source: Path, target: Path, wal_bytes: int | None = None) -> None:
    """The database and its log as they are on disk now (the log cut at `wal_bytes`)."""
    target.mkdir(parents=True)
    shutil.copy(source / disk.DB_NAME, target / disk.DB_NAME)
    data = (source / WAL).read_bytes()
    (target / WAL).write_bytes(data if wal_bytes is None else data[:wal_bytes])


async def test_a_torn_tail_is_cut_at_the_last_whole_commit_at_every_byte_offset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = tmp_path / "live"
    store, journal = open_journal(live, page_size=512)  # small pages: every offset is cheap
    for i in range(20):
        store.apply(f"k{i}", f"v{i}", 100 + i, "n1")
    store.apply("k3", None, 200, "n1")
    await journal.synced()
    before = state(store)
    whole = (live / WAL).stat().st_size
    store.apply("last", "write", 300, "n1")
    await journal.synced()
    after = (live / WAL).stat().st_size
    assert after > whole
    copies = tmp_path / "copies"
    for cut in range(whole, after + 1):
        target = copies / str(cut)
        crash_copy(live, target, cut)
        caplog.clear()
        restored = Store()
        with caplog.at_level(logging.WARNING, logger="cluster.storage.disk"):
            disk.load(target, "always", restored).close()
        if cut == after:
            assert state(restored) == {**before, "last": ("write", 300, "n1", None)}
            assert not caplog.records
            continue
        assert state(restored) == before, f"cut at byte {cut}"
        torn = [r.getMessage() for r in caplog.records if "torn tail" in r.getMessage()]
        if cut == whole:
            assert torn == [], f"nothing was torn at byte {cut}"
        else:
            assert len(torn) == 1, f"cut at byte {cut}"
            assert f"at byte offset {whole}" in torn[0]
            assert str(target / WAL) in torn[0]
        shutil.rmtree(target)
    await journal.close()


async def _filled(directory: Path, count: int) -> None:
    store, journal = open_journal(directory)
    for i in range(count):
        store.apply(f"key{i:06d}", "x" * 100, 1000 + i, "n1")
    await journal.close()  # a clean close: the log is checkpointed into the database


async def test_damage_in_the_middle_is_refused_naming_the_file_and_offset(tmp_path: Path) -> None:
    await _filled(tmp_path, 3000)
    db = tmp_path / disk.DB_NAME
    size = db.stat().st_size
    page = 4096
    middle = (size // page // 2) * page
    with db.open("r+b") as f:
        f.seek(middle)
        f.write(b"\xa5" * page)
    with pytest.raises(disk.DamagedData) as refused:
        disk.load(tmp_path, "always", Store())
    message = str(refused.value)
    assert str(db) in message
    assert f"at byte offset {middle} (page {middle // page + 1}" in message
    assert "--repair-data" in message


async def test_repair_moves_a_damaged_copy_aside_and_starts_empty(tmp_path: Path) -> None:
    await _filled(tmp_path, 3000)
    db = tmp_path / disk.DB_NAME
    with db.open("r+b") as f:
        f.seek(db.stat().st_size // 2 // 4096 * 4096)
        f.write(b"\x00\xff" * 2048)
    store = Store()
    conn = disk.load(tmp_path, "always", store, repair=True)
    assert len(store) == 0
    assert any(name.startswith(disk.DB_NAME + ".damaged-") for name in names(tmp_path))
    assert conn.execute("SELECT count(*) FROM entries").fetchone() == (0,)
    conn.close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / disk.DB_NAME).write_bytes(b"certainly not SQLite " * 500)
    with pytest.raises(disk.DamagedData, match=r"kvmesh\.db"):
        disk.load(tmp_path, "always", Store())


# A random history of writes, deletes, clears and purges: the disk copy, restored, is exactly
# the store's state, one row per stored key (overwrites and deletes leave nothing behind).
KEYS = st.sampled_from([f"k{i}" for i in range(12)])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, st.text(max_size=5), st.none() | st.floats(1e9, 2e9)),
        st.tuples(st.just("del"), KEYS),
        st.tuples(st.just("clear")),
        st.tuples(st.just("purge")),
    ),
    max_size=60,
)


async def _history(directory: Path, ops: list[tuple[object, ...]]) -> Store:
    store, journal = open_journal(directory)
    ts = 1000
    for op in ops:
        ts += 1
        node = "n1" if ts % 3 else "n2"
        if op[0] == "put":
            _, key, value, expires = op
            store.apply(str(key), str(value), ts, node, expires)  # type: ignore[arg-type]
        elif op[0] == "del":
            store.apply(str(op[1]), None, ts, node)
        elif op[0] == "clear":
            store.apply_clear(ts, node)
        else:
            store.purge_tombstones(ts - 5)
        if ts % 7 == 0:
            await journal.synced()  # commits of every size
    await journal.close()
    return store


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_the_disk_copy_restores_exactly_the_store_and_holds_only_its_live_rows(
    ops: list[tuple[object, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        store = asyncio.run(_history(directory, ops))
        restored = Store()
        conn = disk.load(directory, "always", restored)
        try:
            assert state(restored) == state(store)
            assert restored.clear_version == store.clear_version
            assert restored.purged_below == store.purged_below
            assert restored.purged_max == store.purged_max
            assert restored.digests() == store.digests()
            rows = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
            assert rows == len(state(store))
        finally:
            conn.close()


async def test_writes_of_one_loop_turn_share_one_commit(tmp_path: Path) -> None:
    store, journal = open_journal(tmp_path)
    for i in range(500):
        store.apply(f"k{i}", "v", 10 + i, "n1")
    await journal.synced()
    assert journal.commits == 1
    await journal.close()
    conn = sqlite3.connect(tmp_path / disk.DB_NAME)
    assert conn.execute("SELECT count(*) FROM entries").fetchone() == (500,)
    conn.close()


async def test_a_commit_that_fails_for_any_reason_refuses_writes_and_never_hangs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cluster.errors import StorageUnavailable

    store, journal = open_journal(tmp_path)
    real = journal._write
    broken = True

    def write(changes: list[tuple[object, ...]]) -> None:
        if broken:
            raise RuntimeError("a bug in the journal")
        real(changes)  # type: ignore[arg-type]

    monkeypatch.setattr(journal, "_write", write)
    store.apply("k", "v", 10, "n1")
    with pytest.raises(StorageUnavailable, match="a bug in the journal"):
        await asyncio.wait_for(journal.synced(), 5)
    with pytest.raises(StorageUnavailable):
        journal.check_writable()
    broken = False  # the next attempt succeeds: writes are taken again, nothing was skipped

    async def recovered() -> None:
        while journal.failure is not None:  # noqa: ASYNC110 - set by the disk thread, no event
            await asyncio.sleep(0.05)

    await asyncio.wait_for(recovered(), 5)
    await journal.close()
    restored = Store()
    disk.load(tmp_path, "always", restored).close()
    assert state(restored) == {"k": ("v", 10, "n1", None)}
