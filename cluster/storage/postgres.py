"""The data of a mesh in PostgreSQL or CockroachDB (database mode, `--store postgresql://...`).

In database mode nodes are stateless: every read and write goes to the database, through this
module, and the database is the one copy. What memory mode's `Store` promises, this keeps in SQL:

- Last writer wins by the same `(HLC timestamp, node)` versions: one guarded upsert
  (`INSERT ... ON CONFLICT (k) DO UPDATE ... WHERE` the stored version is older), so a retried or
  reordered write is idempotent and two nodes writing one key end with the same winner whatever
  the order their statements reach the database.
- Deletes are tombstones (a row whose value is NULL), so an older write arriving late still loses;
  they are purged once older than `tombstone_horizon` seconds.
- `clear` is a range tombstone: one row (`kv_clear`) holds its version, every read filters rows at
  or below it and every write at or below it is refused, so a clear takes effect at once and a
  write stamped after it survives; the rows it covers are then deleted in bounded batches.
- TTL is an absolute expiry on the row: reads never return an expired value; `reclaim_expired`
  turns expired rows into tombstones of the same version, in bounded batches.
- Listings page by key (keyset pagination, `k > last ORDER BY k LIMIT n`): bounded pages, no
  server-side cursor and no second open portal (CockroachDB supports neither).
- Every statement is single and atomic (a batch of writes is one `INSERT ... SELECT FROM unnest`),
  retried on serialization failures (SQLSTATE 40001, CockroachDB's documented client-side retry)
  a bounded number of times with jittered backoff.

A database that cannot be reached is an error, not a crash: every call raises StorageUnavailable
naming the database (never its password); the pool reconnects by itself when it returns.
The SQL is limited to what PostgreSQL 15 and CockroachDB both document: `CREATE TABLE IF NOT
EXISTS`, `INSERT ... ON CONFLICT ... DO UPDATE ... WHERE`, row-value comparisons, multi-array
`unnest`, `COLLATE "C"` (byte order, the order of Python's strings over UTF-8), `LIMIT`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from cluster.core.backoff import backoff
from cluster.core.patterns import Pattern
from cluster.core.store import Entry, Mutation
from cluster.errors import StorageUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kv_entries (
        k TEXT COLLATE "C" PRIMARY KEY,
        v TEXT,
        ts BIGINT NOT NULL,
        node TEXT NOT NULL,
        expires DOUBLE PRECISION
    )""",
    "CREATE TABLE IF NOT EXISTS kv_clear "
    "(id INT PRIMARY KEY, ts BIGINT NOT NULL, node TEXT NOT NULL)",
    "INSERT INTO kv_clear (id, ts, node) VALUES (1, 0, '') ON CONFLICT (id) DO NOTHING",
)

# The rows of a batch that are above the clear, each replacing only an older version.
UPSERT = """
INSERT INTO kv_entries AS e (k, v, ts, node, expires)
SELECT m.k, m.v, m.ts, m.node, m.expires
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::float8[])
         AS m (k, v, ts, node, expires),
     kv_clear AS c
WHERE c.id = 1 AND (m.ts, m.node) > (c.ts, c.node)
ON CONFLICT (k) DO UPDATE
    SET v = excluded.v, ts = excluded.ts, node = excluded.node, expires = excluded.expires
    WHERE (e.ts, e.node) < (excluded.ts, excluded.node)
"""

VISIBLE = "c.id = 1 AND (e.ts, e.node) > (c.ts, c.node)"
GET = (
    "SELECT e.v, e.ts, e.node, e.expires FROM kv_entries AS e, kv_clear AS c "
    f"WHERE e.k = $1 AND {VISIBLE}"
)
LIVE = "e.v IS NOT NULL AND (e.expires IS NULL OR e.expires > $1)"
_SCAN = (
    "SELECT e.k, e.v, e.ts, e.node, e.expires FROM kv_entries AS e, kv_clear AS c "
    f"WHERE {VISIBLE} AND {LIVE} AND e.k > $2 AND e.k >= $3 {{upper}}ORDER BY e.k LIMIT $4"
)
SCAN = _SCAN.format(upper="")
SCAN_PREFIX = _SCAN.format(upper="AND e.k < $5 ")
GET_MANY = (
    "SELECT e.k, e.v, e.ts, e.node, e.expires FROM kv_entries AS e, kv_clear AS c "
    f"WHERE e.k = ANY($1::text[]) AND {VISIBLE}"
)
COUNT = f"SELECT count(*) FROM kv_entries AS e, kv_clear AS c WHERE {VISIBLE} AND {LIVE}"
CLEAR = "UPDATE kv_clear SET ts = $1, node = $2 WHERE id = 1 AND (ts, node) < ($1, $2)"
CLEARED_BATCH = """
DELETE FROM kv_entries WHERE k IN (
    SELECT e.k FROM kv_entries AS e, kv_clear AS c
    WHERE c.id = 1 AND (e.ts, e.node) <= (c.ts, c.node) LIMIT $1)
"""
EXPIRED_BATCH = """
UPDATE kv_entries SET v = NULL, expires = NULL WHERE k IN (
    SELECT k FROM kv_entries WHERE v IS NOT NULL AND expires <= $1 LIMIT $2)
"""
TOMBSTONES_BATCH = """
DELETE FROM kv_entries WHERE k IN (SELECT k FROM kv_entries WHERE v IS NULL AND ts < $1 LIMIT $2)
"""

TOMBSTONE_HORIZON = 3600.0  # seconds a tombstone is kept (database mode)

# What a database that went away raises through asyncpg.
UNREACHABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
RETRIED = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)  # 40001, 40P01
# Another node created the schema at the same moment (23505 on the catalog, 42P07, 42710).
CREATED_MEANWHILE = (
    asyncpg.UniqueViolationError,
    asyncpg.DuplicateTableError,
    asyncpg.DuplicateObjectError,
)
SCHEMA_ATTEMPTS = 5


def describe(url: str) -> str:
    """The database as messages name it: host:port/name, never the user or password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path or '/'}"


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`; None: no such bound
    (an empty prefix, or one of nothing but the last code point)."""
    while prefix and ord(prefix[-1]) == 0x10FFFF:
        prefix = prefix[:-1]
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None


class PgStore:
    """A mesh's data in one PostgreSQL database or CockroachDB cluster, through a pool."""

    def __init__(
        self,
        url: str,
        pool_size: int = 32,
        *,
        timeout: float = 5.0,
        retries: int = 8,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.where = describe(url)
        self.pool_size = pool_size
        self.timeout = timeout
        self.retries = retries
        self.rng = rng if rng is not None else random.Random(0)
        self._pool: asyncpg.Pool | None = None
        self._schema = False
        self.retried = 0  # statements retried after a serialization failure

    # --- connection ------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the pool and the schema (idempotent: a node never drops or rewrites data)."""
        await self._call(self._ensure)

    async def _ensure(self) -> asyncpg.Pool:
        """The pool, with the schema created once (again after a database that was away)."""
        if self._pool is None:
            # min_size 0: no connection kept up in the background, so none to restore (and log
            # with a traceback) while the database is away; connections open as requests come.
            self._pool = await asyncpg.create_pool(
                self.url,
                reset=_keep_session,
                min_size=0,
                max_size=self.pool_size,
                timeout=self.timeout,
                command_timeout=self.timeout,
            )
        if not self._schema:
            async with self._pool.acquire() as conn:
                for attempt in range(SCHEMA_ATTEMPTS):
                    try:
                        for statement in SCHEMA:
                            await conn.execute(statement)
                        break
                    except CREATED_MEANWHILE:
                        # Nodes starting together on a new database: `IF NOT EXISTS` is not safe
                        # against a concurrent create, and the loser fails on the catalog's
                        # unique index. The table exists now; the next attempt sees it.
                        if attempt == SCHEMA_ATTEMPTS - 1:
                            raise
            self._schema = True
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work`, retrying serialization failures; StorageUnavailable if unreachable."""
        attempt = 0
        while True:
            try:
                return await work()
            except RETRIED:
                attempt += 1
                self.retried += 1
                if attempt > self.retries:
                    raise StorageUnavailable(
                        f"the database at {self.where} kept refusing the statement "
                        "(serialization failures); retry"
                    ) from None
                await asyncio.sleep(backoff(attempt, 0.005, 0.5, self.rng))
            except UNREACHABLE as exc:
                raise StorageUnavailable(
                    f"the database at {self.where} is unreachable ({type(exc).__name__}); "
                    "reads and writes resume when it returns"
                ) from None

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._call(
            lambda: self._on_pool(lambda pool: pool.fetch(query, *args))
        )
        return rows

    async def _execute(self, query: str, *args: Any) -> str:
        status: str = await self._call(
            lambda: self._on_pool(lambda pool: pool.execute(query, *args))
        )
        return status

    async def _on_pool(self, work: Callable[[asyncpg.Pool], Awaitable[Any]]) -> Any:
        """`work` on the pool, made (with the schema) first if it is not yet."""
        return await work(await self._ensure())

    # --- reads -----------------------------------------------------------------------------

    async def get(self, key: str, now: float) -> Entry | None:
        """The live entry for `key`, or None if missing, deleted, expired or cleared."""
        rows = await self._fetch(GET, key)
        if not rows:
            return None
        v, ts, node, expires = rows[0]
        if v is None or (expires is not None and expires <= now):
            return None
        return Entry(v, ts, node, expires)

    async def get_many(self, keys: list[str], now: float) -> dict[str, Entry]:
        """The live entries of `keys` read in one statement (one snapshot: no part of a batch
        committed meanwhile); missing, deleted or expired keys are left out."""
        out = {}
        for k, v, ts, node, expires in await self._fetch(GET_MANY, keys):
            if v is not None and (expires is None or expires > now):
                out[k] = Entry(v, ts, node, expires)
        return out

    async def scan(
        self, after: str | None, limit: int, now: float, pattern: Pattern | None = None
    ) -> tuple[list[tuple[str, Entry]], str | None]:
        """Up to `limit` live (key, entry) pairs with key > `after`, in key order, and the key
        to resume after (None at the end): one bounded statement, as `Store.scan`."""
        prefix = pattern.prefix if pattern is not None else ""
        upper = prefix_end(prefix)
        if upper is None:
            rows = await self._fetch(SCAN, now, after or "", prefix, limit)
        else:
            rows = await self._fetch(SCAN_PREFIX, now, after or "", prefix, limit, upper)
        out = [
            (k, Entry(v, ts, node, expires))
            for k, v, ts, node, expires in rows
            if pattern is None or pattern.matches(k)
        ]
        return out, rows[-1][0] if len(rows) == limit else None

    async def count(self, now: float) -> int:
        rows = await self._fetch(COUNT, now)
        return int(rows[0][0])

    # --- writes ----------------------------------------------------------------------------

    async def write(self, mutations: Sequence[Mutation]) -> None:
        """Merge a batch in one statement: each row replaces only an older version, none at or
        below the clear is taken. Idempotent; order-independent across nodes."""
        last: dict[str, Mutation] = {}
        for m in mutations:  # one row a key: the statement cannot touch a row twice
            seen = last.get(m.key)
            if seen is None or (m.ts, m.node) > (seen.ts, seen.node):
                last[m.key] = m
        rows = list(last.values())
        if not rows:
            return
        await self._execute(
            UPSERT,
            [m.key for m in rows],
            [m.value for m in rows],
            [m.ts for m in rows],
            [m.node for m in rows],
            [m.expires for m in rows],
        )

    async def clear(self, ts: int, node: str) -> None:
        """Every entry at or below (ts, node) is gone at once (reads filter it); the rows go in
        bounded batches afterwards (`purge_cleared`)."""
        await self._execute(CLEAR, ts, node)

    async def purge_cleared(self, budget: int = 5000) -> int:
        return _affected(await self._execute(CLEARED_BATCH, budget))

    async def reclaim_expired(self, now: float, budget: int = 5000) -> int:
        """Turn up to `budget` expired rows into tombstones of the same version."""
        return _affected(await self._execute(EXPIRED_BATCH, now, budget))

    async def purge_tombstones(self, below_ts: int, budget: int = 5000) -> int:
        """Delete up to `budget` tombstones stamped before `below_ts`."""
        return _affected(await self._execute(TOMBSTONES_BATCH, below_ts, budget))

    async def housekeeping(self, now: float, horizon: float = TOMBSTONE_HORIZON) -> None:
        """One bounded round: expired rows become tombstones, cleared rows go, tombstones older
        than `horizon` seconds (far past any retried or reordered write) are purged. Every node
        may run it at once: each statement is idempotent."""
        await self.reclaim_expired(now)
        await self.purge_cleared()
        await self.purge_tombstones(int((now - horizon) * 1000) << 16)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A connection back in the pool is not reset (asyncpg's default costs a round trip a
    request): this module leaves no session state behind, no SET, LISTEN, lock or open
    transaction, since every statement stands alone."""


def _affected(status: str) -> int:
    """The row count of a command tag ("UPDATE 3", "DELETE 0")."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
