"""Database mode lists a million rows in flat memory: `/getAll` streams them page by page (keyset
pagination), so the node never holds more than a page, whatever the table holds."""

from __future__ import annotations

import asyncio
import urllib.request

import asyncpg
import pytest

from loadtest import procs
from loadtest.bench import PeakRss

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        procs.postgres_bindir() is None, reason="PostgreSQL is not installed (make install-system)"
    ),
]

ROWS = 1_000_000


async def fill(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO kv_entries (k, v, ts, node, expires) "
            "SELECT 'key:' || lpad(i::text, 12, '0'), repeat('v', 100), "
            "(1700000000000::bigint << 16) + i, 'loader', NULL "
            "FROM generate_series(1, $1) AS i",
            ROWS,
        )
    finally:
        await conn.close()


@pytest.mark.timeout(180)
def test_a_million_rows_are_listed_through_get_all_in_flat_memory() -> None:
    pg = procs.start_postgres()
    try:
        node = procs.start_node("--store", pg.url, "--log-level", "WARNING")  # creates the schema
        try:
            asyncio.run(fill(pg.url))
            before = procs.rss_bytes(node.proc.pid)
            size = 0
            with (
                PeakRss(node.proc.pid) as rss,
                urllib.request.urlopen(node.url + "/getAll", timeout=120) as resp,
            ):
                assert resp.status == 200
                first = resp.read(64)
                size += len(first)
                while chunk := resp.read(1 << 20):
                    size += len(chunk)
            # Every row came: the listing holds a million pairs of about 120 bytes each.
            assert size > ROWS * 110
            assert first.startswith(b'{"key:000000000001":"vvvv')
            growth = rss.peak - before
            print(f"listed {size / 2**20:.0f} MiB; the node grew {growth / 2**20:.1f} MiB")
            # A page is 1,000 rows (about 130 kB); holding the table would take over 100 MB.
            assert growth < 40 * 1024 * 1024, f"the node grew {growth / 2**20:.0f} MiB"
        finally:
            procs.stop(node.proc)
    finally:
        procs.remove_postgres(pg)
