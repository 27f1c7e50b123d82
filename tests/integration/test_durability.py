"""--data-dir on whole in-process nodes over real sockets and real files.

A crash is a copy of the data directory taken while the node runs (what a kill -9 leaves on disk:
every acknowledged write committed, nothing checkpointed); the restarted node starts from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.storage import disk
from tests.integration.inproc import Running, Start, until


def crash_image(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for name in (disk.DB_NAME, disk.DB_NAME + "-wal"):
        if (source / name).exists():
            shutil.copy(source / name, target / name)
    return target


async def put(node: Running, key: str, value: str) -> None:
    resp = await node.client.put(f"/keys/{key}", json={"value": value})
    assert resp.status in (200, 201), await resp.text()


async def delete(node: Running, key: str) -> None:
    resp = await node.client.delete(f"/keys/{key}")
    assert resp.status == 200, await resp.text()


async def value(node: Running, key: str) -> str | None:
    resp = await node.client.get(f"/keys/{key}")
    return (await resp.json())["value"] if resp.status == 200 else None


async def pair(start: Start, tmp_path: Path, **overrides: object) -> tuple[Running, Running]:
    a = await start("a", data_dir=str(tmp_path / "a"), **overrides)
    b = await start("b", data_dir=str(tmp_path / "b"), **overrides)
    status, _ = await b.post("/cluster/join", {"seeds": [a.address]})
    assert status == 200
    return a, b


async def settled(a: Running, b: Running) -> None:
    """b holds what a holds and knows it: its `covered` point passed a's last write."""
    last = a.node.hlc.last

    async def covered() -> bool:
        return b.node.lifecycle.covered >= last and b.node.store.digests() == a.node.store.digests()

    await until(covered)


async def test_a_restarted_node_fetches_only_what_it_missed(start: Start, tmp_path: Path) -> None:
    a, b = await pair(start, tmp_path)
    for i in range(2000):
        await put(a, f"k{i:04d}", f"v{i}")
    await settled(a, b)
    image = crash_image(tmp_path / "b", tmp_path / "b-crashed")
    await b.node.stop_mesh(leave=False)  # silent, as a crash
    await b.client.close()
    for i in range(2000, 2100):
        await put(a, f"k{i:04d}", "missed")
    for i in range(10):
        await delete(a, f"k{i:04d}")

    again = await start("b", data_dir=str(image), join=(a.address,))
    await until(lambda: _ready(again))
    assert len(again.node.store) == 2090
    assert await value(again, "k0000") is None
    assert await value(again, "k2050") == "missed"
    sync = again.node.lifecycle.last_sync
    assert sync is not None
    assert sync["full"] is False
    # The 110 writes it missed, not the 2000 it held (a few written just before the crash may
    # come again: `covered` trails the last write by one anti-entropy round at most).
    received = sync["received"]
    assert isinstance(received, int)
    assert 110 <= received < 200, sync


async def _ready(node: Running) -> bool:
    return node.node.lifecycle.ready


async def test_a_copy_older_than_the_purge_horizon_streams_everything_and_resurrects_nothing(
    start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await pair(start, tmp_path)
    for i in range(20):
        await put(a, f"k{i}", "v")
    await settled(a, b)
    image = crash_image(tmp_path / "b", tmp_path / "b-crashed")
    await b.node.stop_mesh(leave=False)
    await b.client.close()
    # b is removed for good: a no longer waits for it to purge tombstones.
    status, _ = await a.post("/cluster/remove", {"name": "b"})
    assert status == 200
    await delete(a, "k1")
    await put(a, "later", "v")  # the purge watermark passes the tombstone
    assert a.node.store.purge_tombstones(a.node.lifecycle.purge_watermark()) == 1
    caplog.set_level(logging.INFO)

    again = await start("b", data_dir=str(image), join=(a.address,))
    await until(lambda: _ready(again))
    sync = again.node.lifecycle.last_sync
    assert sync is not None
    assert sync["full"] is True
    assert any(
        "beyond what this replica is known to hold" in r.getMessage() for r in caplog.records
    )
    assert await value(again, "k1") is None
    assert await value(again, "k2") == "v"
    await until(lambda: _same(a, again))
    assert await value(a, "k1") is None  # and it did not come back to a either


async def _same(x: Running, y: Running) -> bool:
    return x.node.store.digests() == y.node.store.digests()


async def test_a_node_that_left_and_served_alone_brings_no_deleted_key_back(start: Start) -> None:
    a = await start("a")
    b = await start("b")
    status, _ = await b.post("/cluster/join", {"seeds": [a.address]})
    assert status == 200
    for i in range(5):
        await put(a, f"k{i}", "v")
    await until(lambda: _same(a, b))
    await until(lambda: _covered_past(b, a.node.hlc.last))
    status, _ = await b.post("/cluster/leave")
    assert status == 200
    await until(lambda: _sees_state(a, "b", "left"))
    await delete(a, "k1")  # b never hears of it
    await put(a, "later", "v")  # the purge watermark passes the tombstone
    assert a.node.store.purge_tombstones(a.node.lifecycle.purge_watermark()) == 1
    # Written after a's purge, and stamped after it: b's clock has passed the delete's
    # millisecond (two clocks that never met order writes of one millisecond arbitrarily).
    deleted_ms = a.node.store.purged_max >> 16
    await until(lambda: _clock_past(b, deleted_ms))
    await put(b, "alone", "written while alone")

    assert await value(b, "alone") == "written while alone"
    status, _ = await b.post("/cluster/join", {"seeds": [a.address]})
    assert status == 200
    assert await value(b, "k1") is None
    await until(lambda: _same(a, b))
    assert await value(a, "k1") is None
    assert await value(a, "alone") == "written while alone"


async def _clock_past(node: Running, ms: int) -> bool:
    return int(node.node.clock.wall() * 1000) > ms


async def _covered_past(node: Running, ts: int) -> bool:
    return node.node.lifecycle.covered >= ts


async def _sees_state(viewer: Running, name: str, state: str) -> bool:
    return (await viewer.states()).get(name) == state


# --- a full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system of our own (tmpfs, mounted as root), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("not applicable: mounting a small file system needs root (CI runs as root)")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself(
    start: Start, small_disk: Path
) -> None:
    node = await start("a", data_dir=str(small_disk / "data"))
    await put(node, "before", "the disk filled")
    ballast = small_disk / "ballast"
    with ballast.open("wb") as f:  # fill the file system, leaving a few pages
        free = shutil.disk_usage(small_disk).free
        f.write(b"\0" * max(0, free - 64 * 1024))
    refused = None
    for i in range(2000):
        resp = await node.client.put(f"/keys/big{i}", json={"value": "x" * 250})
        if resp.status != 200:
            refused = (resp.status, await resp.json())
            break
    assert refused is not None, "the disk never filled"
    assert refused[0] == 503
    assert refused[1]["code"] == "STORAGE_UNAVAILABLE"
    # Reads go on; every other write is refused before it changes anything.
    assert await value(node, "before") == "the disk filled"
    resp = await node.client.put("/keys/refused", json={"value": "no"})
    assert (resp.status, (await resp.json())["code"]) == (503, "STORAGE_UNAVAILABLE")
    assert await value(node, "refused") is None
    resp = await node.client.get("/health")
    assert resp.status == 200

    ballast.unlink()  # space again: the node recovers by itself

    async def writable() -> bool:
        resp = await node.client.put("/keys/after", json={"value": "recovered"})
        return resp.status == 200

    await until(writable)
    assert await value(node, "after") == "recovered"
    assert node.node.journal is not None
    assert node.node.journal.failure is None


async def test_a_line_protocol_write_on_a_full_disk_gets_the_storage_error_not_an_internal_one(
    start: Start, small_disk: Path
) -> None:
    """RESP connections share the code that answers here (cluster.api.ordered)."""
    from cluster.api.line.server import start_line_server

    node = await start("a", data_dir=str(small_disk / "data"))
    server = await start_line_server(node.node.make_line_server(), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        ballast = small_disk / "ballast"
        with ballast.open("wb") as f:
            f.write(b"\0" * max(0, shutil.disk_usage(small_disk).free - 64 * 1024))
        reply: dict[str, str] = {}
        for i in range(2000):
            writer.write(f"PUT big{i} {'x' * 250}\n".encode())
            reply = json.loads(await reader.readline())
            if reply["status"] != "Ok":
                break
        assert reply["status"] == "Error"
        assert "disk copy cannot be written" in reply["mesg"], reply
        writer.write(b"GET big0\n")
        assert json.loads(await reader.readline())["status"] == "Ok"  # reads go on
        assert node.node.metrics.internal_errors._value.get() == 0
        ballast.unlink()
    finally:
        writer.close()
        await server.close()
