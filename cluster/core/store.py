"""The versioned in-memory store: the one place that holds data.

No IO, no clock reads, no async: every method takes the time it needs (`now`, wall seconds) and the
timestamp of the write (from the HLC), so the same code applies local writes, replicated writes and
snapshot chunks, and tests drive it directly.

Model
- An entry is a value (or None: a tombstone), its HLC timestamp, the writer's node name and an
  optional absolute expiry (epoch seconds). Its *version* is `(ts, node)`: a total order.
- `apply` is the one merge: the higher version wins, ties cannot happen between different writes
  (same ts and node means the same write), so merge is commutative, idempotent and associative.
- Delete writes a tombstone. `clear` sets a range tombstone: every entry with a version at or below
  it is gone and no write at or below it is accepted, so an old write replicated late cannot
  resurrect a cleared key.
- TTL is an absolute expiry replicated with the value. Expired entries are invisible at once
  (lazy check on read) and are reclaimed by `reclaim_expired`, which turns them into tombstones of
  the same version (so a late, older write still loses) a bounded number at a time, earliest first.
- Tombstones are purged by `purge_tombstones(watermark)` once every member has them: the caller
  decides the watermark.

Invariants
- The data is sharded into DIGEST_BUCKETS dicts by `bucket_of(key)`, the hash tree's bucket
  level (digests.py), so anti-entropy reads a leaf's entries from one bucket, in one step (no
  await: a repaired transaction appears whole).
- `_digests` and `_leaves` are the XOR of the version hashes of the entries under each bucket
  and leaf; `_leaf_seq` (`_bucket_seq`) holds the change count `_seq` of each leaf's (bucket's)
  last change.
- `self._keys` (sorted) and `self._fresh` together hold exactly the stored keys, tombstones
  included, each in one of them; `self._count` is their number. New keys wait in `_fresh` (a set:
  adding is constant time, where a sorted insert costs microseconds on every write and on each
  of a million snapshot entries) until something reads the order (`_index`).
- `self._tombstones` is exactly the set of keys whose entry is a tombstone.
- Every entry's version is above `self._clear`.
"""

from __future__ import annotations

import gc
import heapq
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator

from sortedcontainers import SortedList

from cluster.core.digests import (
    DIGEST_BUCKETS,
    LEAF_MASK,
    bucket_of,
    key_crc,
    mixed_hash,
    new_leaves,
)
from cluster.core.entries import ZERO, ChangeSink, Entry, Mutation, StoreStats, Version
from cluster.core.patterns import Pattern
from cluster.core.records import EXPIRING, FLAGS, GONE, HEAD, Records

__all__ = ["ZERO", "ChangeSink", "Entry", "Mutation", "Store", "StoreStats", "Version"]


class Store:
    """Keys to versioned entries, with LWW merge, tombstones, a range tombstone and TTL."""

    def __init__(self) -> None:
        self._buckets: list[dict[str, bytes]] = [{} for _ in range(DIGEST_BUCKETS)]
        self._records = Records()  # each entry is one bytes record (records.py)
        self._count = 0
        self._keys: SortedList = SortedList()
        self._fresh: set[str] = set()  # stored keys not yet in `_keys` (see the invariants)
        self._tombstones: set[str] = set()
        # (expires, key) in expiry order; stale items (key rewritten) are skipped when popped.
        self._expiry_heap: list[tuple[float, str]] = []
        self._clear: Version = ZERO
        # Tombstones below this were purged: every member held them, so any write this old is
        # already everywhere (or superseded); one arriving now is a duplicate or a replay.
        self._purged_below = 0
        self.refused_stale = 0  # writes refused for being older than purged tombstones
        # The newest timestamp of a tombstone purged here: a replica that has not seen every
        # write up to it may hold a key deleted by it (see Lifecycle.sync).
        self.purged_max = 0
        # The hash tree's two kept levels (cluster/core/digests.py), and when each leaf last
        # changed: `_seq` counts changes, so a repair round can tell what moved while it ran.
        self._digests: list[int] = [0] * DIGEST_BUCKETS
        self._leaves = new_leaves()
        self._leaf_seq = new_leaves()
        self._bucket_seq = array("Q", bytes(8 * DIGEST_BUCKETS))  # the newest of its leaves'
        self._seq = 0
        self.sink: ChangeSink | None = None
        self.restored_max_ts = 0  # the newest timestamp `restore` brought back

    def reset(self) -> None:
        """Back to empty, as new (a damaged disk copy half restored); the sink stays."""
        sink = self.sink
        self.__init__()  # type: ignore[misc]
        self.sink = sink

    # --- reads -------------------------------------------------------------------------------

    def get(self, key: str, now: float) -> Entry | None:
        """The live entry for `key`, or None if missing, deleted or expired."""
        record = self._buckets[bucket_of(key)].get(key)
        if record is None or record[FLAGS] & GONE:
            return None
        entry = self._records.entry(record)
        if entry.expires is not None and entry.expires <= now:
            return None
        return entry

    def entry(self, key: str) -> Entry | None:
        """The stored entry, tombstones and expired ones included (replication and tests)."""
        record = self._buckets[bucket_of(key)].get(key)
        return None if record is None else self._records.entry(record)

    def _lookup(self, key: str) -> Entry:
        return self._records.entry(self._buckets[bucket_of(key)][key])

    def stored_items(self) -> Iterator[tuple[str, Entry]]:
        """Every stored (key, entry), tombstones included, in no particular order."""
        for bucket in self._buckets:
            for key, record in bucket.items():
                yield key, self._records.entry(record)

    def __len__(self) -> int:
        return self._count - len(self._tombstones)

    @property
    def clear_version(self) -> Version:
        return self._clear

    def stats(self) -> StoreStats:
        return StoreStats(
            keys=self._count - len(self._tombstones),
            tombstones=len(self._tombstones),
            expiring=len(self._expiry_heap),
            clear_ts=self._clear[0],
            refused_stale=self.refused_stale,
        )

    def scan(
        self,
        after: str | None,
        limit: int,
        now: float,
        pattern: Pattern | None = None,
        budget: int = 10_000,
    ) -> tuple[list[tuple[str, Entry]], str | None]:
        """Up to `limit` live (key, entry) pairs with key > `after`, in key order.

        Examines at most `budget` stored keys, so one call is bounded even when most keys are
        tombstones or do not match. Returns the pairs and the key to resume after, or None when
        the scan reached the end. Because the order is the keys' own order, a key present for the
        whole scan is returned exactly once, whatever is written meanwhile.
        """
        keys = self._index()
        prefix = pattern.prefix if pattern is not None else ""
        start = after if after is not None and after >= prefix else None
        if start is not None:
            idx = keys.bisect_right(start)
        else:
            idx = keys.bisect_left(prefix) if prefix else 0
        out: list[tuple[str, Entry]] = []
        examined = 0
        n = len(keys)
        lookup = self._lookup
        last: str | None = None
        while idx < n and len(out) < limit and examined < budget:
            chunk = keys[idx : idx + min(256, budget - examined)]
            for key in chunk:
                examined += 1
                idx += 1
                last = key
                if prefix and not key.startswith(prefix):
                    return out, None  # past the prefix range: nothing further can match
                entry = lookup(key)
                if (
                    entry.value is not None
                    and (entry.expires is None or entry.expires > now)
                    and (pattern is None or pattern.matches(key))
                ):
                    out.append((key, entry))
                    if len(out) >= limit:
                        break
        if idx >= n:
            return out, None
        return out, last

    def iter_live(self, now: float, pattern: Pattern | None = None) -> Iterator[tuple[str, Entry]]:
        """All live pairs in key order, computed page by page (safe to interleave with writes
        only between pages: callers that await must use `scan` directly)."""
        after: str | None = None
        while True:
            page, after = self.scan(after, 1024, now, pattern)
            yield from page
            if after is None:
                return

    def _index(self) -> SortedList:
        """The sorted keys, the fresh ones merged in first (one sort when many are fresh)."""
        if self._fresh:
            self._keys.update(self._fresh)
            self._fresh = set()
        return self._keys

    def mutations(self, after: str | None, limit: int) -> tuple[list[Mutation], str | None]:
        """Stored entries as mutations (tombstones included) in key order: snapshot chunks."""
        keys = self._index()
        idx = keys.bisect_right(after) if after is not None else 0
        chunk = keys[idx : idx + limit]
        out = []
        for key in chunk:
            e = self._lookup(key)
            out.append(Mutation(key, e.value, e.ts, e.node, e.expires))
        nxt = chunk[-1] if chunk and idx + limit < len(keys) else None
        return out, nxt

    def digests(self) -> list[int]:
        """The per-bucket digests (a copy): equal lists mean equal stored versions, whp."""
        return list(self._digests)

    def tree(self) -> tuple[list[int], array[int]]:
        """The hash tree's kept levels, (buckets, leaves): to read in the same step, not keep."""
        return self._digests, self._leaves

    @property
    def seq(self) -> int:
        """How many changes the tree has seen: `changed_leaves(seq)` later names what moved."""
        return self._seq

    def changed_leaves(self, since: int) -> list[int]:
        """The leaves changed after the tree's change count was `since`."""
        if since >= self._seq:
            return []
        leaf_seq = self._leaf_seq
        return sorted(
            leaf
            for bucket, seq in enumerate(self._bucket_seq)
            if seq > since
            for leaf in range(bucket, len(leaf_seq), DIGEST_BUCKETS)
            if leaf_seq[leaf] > since
        )

    def leaf_entries(self, leaves: Iterable[int]) -> dict[int, list[Mutation]]:
        """Every stored entry (tombstones included) in `leaves`, by leaf, read in one step: the
        cost is the size of the buckets that hold them, not of the data set."""
        wanted = set(leaves)
        out: dict[int, list[Mutation]] = {}
        crc32 = zlib.crc32
        for b in sorted({leaf & (DIGEST_BUCKETS - 1) for leaf in wanted}):
            for k, record in self._buckets[b].items():
                leaf = crc32(k.encode("utf-8", "surrogatepass")) & LEAF_MASK
                if leaf in wanted:
                    e = self._records.entry(record)
                    out.setdefault(leaf, []).append(Mutation(k, e.value, e.ts, e.node, e.expires))
        return out

    # --- writes ------------------------------------------------------------------------------

    def apply(
        self, key: str, value: str | None, ts: int, node: str, expires: float | None = None
    ) -> bool:
        """Merge one write; True if it won (is now stored), False if an existing version beats it.

        The single merge used for local writes, replication, snapshots and repair.
        """
        clear = self._clear
        if ts < clear[0] or (ts == clear[0] and node <= clear[1]):
            return False  # at or below the range tombstone: cleared before it arrived
        if ts < self._purged_below:
            self.refused_stale += 1
            return False  # older than purged tombstones: a duplicate or a replay
        key_crc = zlib.crc32(key.encode("utf-8", "surrogatepass"))
        bucket = key_crc & (DIGEST_BUCKETS - 1)
        data = self._buckets[bucket]
        old = data.get(key)
        change = mixed_hash(key_crc, ts, node)
        if old is not None:
            old_ts, old_node, old_flags = HEAD.unpack_from(old)
            old_name = self._records.names[old_node]
            if ts < old_ts or (ts == old_ts and node <= old_name):
                return False  # an equal or newer version is already here
            if old_flags & GONE and value is not None:
                self._tombstones.discard(key)
            change ^= mixed_hash(key_crc, old_ts, old_name)
        else:
            self._fresh.add(key)
            self._count += 1
        self._digests[bucket] ^= change
        leaf = key_crc & LEAF_MASK
        self._leaves[leaf] ^= change
        self._seq += 1
        self._leaf_seq[leaf] = self._bucket_seq[bucket] = self._seq
        if value is None:
            self._tombstones.add(key)
        data[key] = self._records.pack(value, ts, node, expires)
        if expires is not None:
            heapq.heappush(self._expiry_heap, (expires, key))
        if self.sink is not None:
            self.sink.put(key, value, ts, node, expires)
        return True

    def apply_many(self, mutations: Iterable[Mutation]) -> int:
        """Merge a batch with no interleaving (a transaction or a replication batch)."""
        applied = 0
        for m in mutations:
            applied += self.apply(m.key, m.value, m.ts, m.node, m.expires)
        return applied

    def apply_clear(self, ts: int, node: str) -> bool:
        """Merge a range tombstone: drop every entry at or below (ts, node)."""
        version = (ts, node)
        if version <= self._clear:
            return False
        self._clear = (ts, sys.intern(node))
        if self.sink is not None:
            self.sink.clear(ts, node)
        survivors = {
            k: record
            for bucket in self._buckets
            for k, record in bucket.items()
            if self._records.version(record) > version
        }
        self._digests = [0] * DIGEST_BUCKETS
        self._leaves = new_leaves()
        self._seq += 1
        self._leaf_seq = array("Q", [self._seq]) * len(self._leaves)  # every leaf changed
        self._bucket_seq = array("Q", [self._seq]) * DIGEST_BUCKETS
        self._buckets = [{} for _ in range(DIGEST_BUCKETS)]
        self._count = len(survivors)
        if not survivors:
            self._keys = SortedList()
            self._fresh = set()
            self._tombstones = set()
            self._expiry_heap = []
            return True
        for k, record in survivors.items():
            self._buckets[bucket_of(k)][k] = record
            self._toggle(k, record)
        self._keys = SortedList(survivors)
        self._fresh = set()
        self._tombstones = {k for k, record in survivors.items() if record[FLAGS] & GONE}
        entries = [(k, self._records.entry(r)) for k, r in survivors.items() if r[FLAGS] & EXPIRING]
        self._expiry_heap = [(e.expires, k) for k, e in entries if e.expires is not None]
        heapq.heapify(self._expiry_heap)
        return True

    # --- background reclamation ---------------------------------------------------------------

    def reclaim_expired(self, now: float, budget: int = 1000) -> int:
        """Turn up to `budget` expired entries into tombstones (earliest expiry first).

        The tombstone keeps the entry's version, so an older write that arrives later still loses,
        and it is purged later like any tombstone. Bounded work: never stalls requests.
        """
        heap = self._expiry_heap
        done = 0
        while heap and done < budget and heap[0][0] <= now:
            expires, key = heapq.heappop(heap)
            data = self._buckets[bucket_of(key)]
            record = data.get(key)
            entry = None if record is None else self._records.entry(record)
            if entry is None or entry.value is None or entry.expires != expires:
                continue  # rewritten or deleted since: a stale heap item
            data[key] = self._records.pack(None, entry.ts, entry.node, None)
            self._tombstones.add(key)
            done += 1
        return done

    def purge_tombstones(self, watermark: int, budget: int = 10_000) -> int:
        """Forget up to `budget` tombstones older than `watermark` (a timestamp every member has
        passed). After that no member can still send an older write for those keys."""
        self._purged_below = max(self._purged_below, watermark)
        doomed: list[str] = []
        for key in self._tombstones:
            if len(doomed) >= budget:
                break
            ts = self._records.version(self._buckets[bucket_of(key)][key])[0]
            if ts < watermark:
                doomed.append(key)
                self.purged_max = max(self.purged_max, ts)
        self._forget(doomed)
        return len(doomed)

    def drop_up_to(self, ts: int) -> int:
        """Forget every entry (values and tombstones) stamped at or before `ts`.

        For a replica that may hold keys whose deletes it never saw, the deletes' tombstones
        purged since (see Lifecycle.sync): it keeps only what is newer, and streams the rest
        from a peer again.
        """
        doomed = [
            k
            for bucket in self._buckets
            for k, r in bucket.items()
            if self._records.version(r)[0] <= ts
        ]
        self._forget(doomed)
        return len(doomed)

    def _forget(self, keys: list[str]) -> None:
        for key in keys:
            self._toggle(key, self._buckets[bucket_of(key)].pop(key))
            self._count -= 1
            if key in self._fresh:
                self._fresh.discard(key)
            else:
                self._keys.remove(key)
            self._tombstones.discard(key)
        if self.sink is not None and (keys or self._purged_below):
            self.sink.dropped(keys, self._purged_below, self.purged_max)

    def _toggle(self, key: str, record: bytes) -> None:
        """Add a record's version to the tree's hashes, or take it out (XOR both ways)."""
        crc = key_crc(key)
        change = mixed_hash(crc, *self._records.version(record))
        self._digests[crc & (DIGEST_BUCKETS - 1)] ^= change
        self._leaves[crc & LEAF_MASK] ^= change
        self._seq += 1
        self._leaf_seq[crc & LEAF_MASK] = self._bucket_seq[crc & (DIGEST_BUCKETS - 1)] = self._seq

    # --- restoring a copy -------------------------------------------------------------------

    @property
    def purged_below(self) -> int:
        return self._purged_below

    def restore(
        self,
        entries: Iterable[Mutation],
        clear: Version = ZERO,
        purged_below: int = 0,
        purged_max: int = 0,
    ) -> int:
        """Fill an empty store from a copy of one (a node's disk), in one pass.

        The copy holds one entry per key at most, all above `clear`, so nothing is merged: the
        indexes are built once at the end (a sorted list of all keys at once is far cheaper
        than a million inserts, and linear when the copy comes in key order). The sink is not
        told: the copy came from it.
        """
        if self._count or self._clear != ZERO:
            raise ValueError("restore needs an empty store")
        buckets, digests, leaves = self._buckets, self._digests, self._leaves
        tombstones, heap = self._tombstones, self._expiry_heap
        record = self._records.pack
        keys: list[str] = []
        # A million new objects would run the cyclic collector dozens of times for nothing:
        # entries hold no cycles.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for key, value, ts, node, expires in entries:
                key_crc = zlib.crc32(key.encode("utf-8", "surrogatepass"))
                b = key_crc & (DIGEST_BUCKETS - 1)
                buckets[b][key] = record(value, ts, node, expires)
                change = mixed_hash(key_crc, ts, node)
                digests[b] ^= change
                leaves[key_crc & LEAF_MASK] ^= change
                if value is None:
                    tombstones.add(key)
                elif expires is not None:
                    heap.append((expires, key))
                keys.append(key)
                if ts > self.restored_max_ts:
                    self.restored_max_ts = ts
        finally:
            if collecting:
                gc.enable()
        heapq.heapify(heap)
        self._keys = SortedList(keys)  # a linear pass when the copy comes in key order
        self._count = len(keys)
        self._clear = (clear[0], sys.intern(clear[1]))
        self._purged_below = purged_below
        self.purged_max = purged_max
        return len(keys)
