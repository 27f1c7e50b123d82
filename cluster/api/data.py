"""What the HTTP faces read and write through: the seam between them and where the data lives.

`Data` is the narrow interface; `MemoryData` is the mesh (the node's own store, each write handed
to replication and, with --data-dir, to its disk), `DatabaseData` a database shared by stateless
nodes (`--store postgresql://...`, cluster.storage.postgres). Validation, timestamps and the clock
stay in `KV` (pure) for both, so a key, a value, a TTL and a version mean the same in each mode.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from cluster.api.ports import Writes
from cluster.api.replies import replicate_headers
from cluster.core.kv import KV, Batch
from cluster.core.patterns import Pattern
from cluster.core.store import Entry
from cluster.errors import BadRequest
from cluster.storage.postgres import PgStore


class Written(NamedTuple):
    """A write as the reply shows it: the batch (its timestamp, its expiries) and the headers
    (`X-Replicas`, `X-Timestamp`)."""

    batch: Batch
    headers: dict[str, str]


Page = tuple[list[tuple[str, Entry]], str | None]


class Data(Protocol):
    kv: KV  # validation, the clock, TTLs left: the same in every mode

    async def get(self, key: str) -> Entry | None: ...

    async def get_many(self, keys: list[str]) -> dict[str, Entry]:
        """The live entries of `keys`, read at one moment (missing ones left out)."""
        ...

    async def set(self, key: str, value: str, ttl: float | None = None) -> Written: ...

    async def set_many(self, pairs: dict[str, str], ttl: float | None = None) -> Written: ...

    async def delete(self, key: str) -> Written | None:
        """Tombstone a live key; None (nothing written) if it is missing."""
        ...

    async def write_many(self, ops: list[tuple[str, str | None]]) -> Written:
        """Sets (a value) and deletes (None) as one batch: one timestamp, all or nothing."""
        ...

    async def clear(self) -> Written: ...

    async def scan(self, after: str | None, limit: int, pattern: Pattern | None) -> Page:
        """Up to `limit` live pairs after `after`, in key order, and where to resume."""
        ...

    async def count(self) -> int: ...


class MemoryData:
    """The mesh: this node's store, every write then replicated (and kept on disk)."""

    def __init__(self, kv: KV, writes: Writes) -> None:
        self.kv = kv
        self.writes = writes

    async def _written(self, batch: Batch) -> Written:
        return Written(batch, await replicate_headers(self.writes, batch))

    async def get(self, key: str) -> Entry | None:
        return self.kv.get(key)

    async def get_many(self, keys: list[str]) -> dict[str, Entry]:
        return {k: e for k in keys if (e := self.kv.get(k)) is not None}

    async def set(self, key: str, value: str, ttl: float | None = None) -> Written:
        return await self._written(self.kv.set(key, value, ttl))

    async def set_many(self, pairs: dict[str, str], ttl: float | None = None) -> Written:
        return await self._written(self.kv.set_many(pairs, ttl))

    async def delete(self, key: str) -> Written | None:
        batch = self.kv.delete(key)
        return None if batch is None else await self._written(batch)

    async def write_many(self, ops: list[tuple[str, str | None]]) -> Written:
        return await self._written(self.kv.write_many(ops))

    async def clear(self) -> Written:
        return await self._written(self.kv.clear())

    async def scan(self, after: str | None, limit: int, pattern: Pattern | None) -> Page:
        return self.kv.store.scan(after, limit, self.kv.clock.wall(), pattern)

    async def count(self) -> int:
        return len(self.kv.store)


NUL = "\x00"  # PostgreSQL's text cannot hold it


class DatabaseData:
    """A database every node shares: nothing is kept or replicated here; the database is the one
    copy, so a write is acknowledged once it holds it (`X-Replicas: 1/1`). One difference from
    memory mode: PostgreSQL's text cannot hold U+0000, so a key or value with it is refused."""

    def __init__(self, kv: KV, db: PgStore) -> None:
        self.kv = kv
        self.db = db

    def _headers(self, batch: Batch) -> dict[str, str]:
        return {"X-Replicas": "1/1", "X-Timestamp": str(batch.ts)}

    async def _write(self, ops: list[tuple[str, str | None, float | None]]) -> Written:
        for key, value, _ in ops:
            if NUL in key or (value is not None and NUL in value):
                raise BadRequest(
                    "the database cannot store the NUL character (U+0000) in a key or a value",
                    "INVALID_PARAMETER",
                )
        batch = self.kv.stamp(ops)
        await self.db.write(batch.mutations)
        return Written(batch, self._headers(batch))

    async def get(self, key: str) -> Entry | None:
        if NUL in key:
            return None  # no such key can be stored (see _write)
        return await self.db.get(key, self.kv.clock.wall())

    async def get_many(self, keys: list[str]) -> dict[str, Entry]:
        return await self.db.get_many([k for k in keys if NUL not in k], self.kv.clock.wall())

    async def set(self, key: str, value: str, ttl: float | None = None) -> Written:
        return await self._write([(key, value, self.kv.expiry(ttl))])

    async def set_many(self, pairs: dict[str, str], ttl: float | None = None) -> Written:
        expires = self.kv.expiry(ttl)
        return await self._write([(k, v, expires) for k, v in pairs.items()])

    async def delete(self, key: str) -> Written | None:
        if await self.get(key) is None:
            return None
        return await self._write([(key, None, None)])

    async def write_many(self, ops: list[tuple[str, str | None]]) -> Written:
        return await self._write([(k, v, None) for k, v in ops])

    async def clear(self) -> Written:
        batch = Batch(self.kv.hlc.now(), self.kv.node, clear=True)
        await self.db.clear(batch.ts, batch.node)
        return Written(batch, self._headers(batch))

    async def scan(self, after: str | None, limit: int, pattern: Pattern | None) -> Page:
        if (after is not None and NUL in after) or (pattern is not None and NUL in pattern.prefix):
            return [], None  # no stored key holds one (see _write)
        return await self.db.scan(after, limit, self.kv.clock.wall(), pattern)

    async def count(self) -> int:
        return await self.db.count(self.kv.clock.wall())
