"""Anti-entropy and snapshots, the pure half: digests, the difference, the merge, the pages.

- Repair: every interval a node compares its hash tree (core/digests.py) with a random peer's,
  from the root down to the few keys that differ, and both send each other what the other lacks
  through the store's one merge (merkle.py), so the bytes sent follow the difference, not the
  data set.
- Snapshot: a joining or restarted node pages through a peer's entries (tombstones and the range
  tombstone included) in key order. It applies live replication meanwhile: the merge is
  commutative, so applying a live write before or after the snapshot chunk that holds an older
  version of the key gives the same result; no buffering is needed.

The first step of a repair (`digests_reply`), the snapshot pages (`snapshot_reply`) and the merges
live here, the descent in merkle.py; the requesting side, which talks to a peer, is `repair.py`.
Entries travel as `[key, value|null, ts, node, expires|null]`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from cluster.core.cursor import encode_cursor
from cluster.core.digests import node_hash
from cluster.core.hlc import HybridClock
from cluster.core.store import Mutation, Store, Version
from cluster.errors import ClockSkewError, DecodeError

logger = logging.getLogger(__name__)

DIGESTS_PATH = "/internal/ae/digests"
SNAPSHOT_PATH = "/internal/snapshot"


# --- wire helpers (pure) --------------------------------------------------------------------------


def encode_entries(entries: Iterable[Mutation]) -> list[list[Any]]:
    return [[m.key, m.value, m.ts, m.node, m.expires] for m in entries]


def checked_entries(raw: object) -> list[list[Any]]:
    """The entries of a peer's message, each checked to be `[key, value, ts, node, expires]` of
    the right types (DecodeError if one is not), left as the lists they came as: a snapshot page
    of 10,000 entries is merged without building a Mutation for each."""
    if not isinstance(raw, list):
        raise DecodeError("entries must be a list")
    for item in raw:
        if type(item) is not list or len(item) != 5:
            raise DecodeError("an entry must be [key, value, ts, node, expires]")
        key, value, ts, node, expires = item
        if type(key) is not str or not key or type(node) is not str or not node:
            raise DecodeError("bad key or node")
        if type(ts) is not int or ts < 0:
            raise DecodeError("bad timestamp")
        if value is not None and type(value) is not str:
            raise DecodeError("bad value")
        if expires is not None and type(expires) is not float and type(expires) is not int:
            raise DecodeError("bad expiry")
    return raw


def decode_entries(raw: object) -> list[Mutation]:
    return [Mutation(*item) for item in checked_entries(raw)]


def decode_clear(raw: object) -> Version:
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or not isinstance(raw[0], int)
        or not isinstance(raw[1], str)
    ):
        raise DecodeError("clear must be [ts, node]")
    return (raw[0], raw[1])


def merge_entries(
    store: Store, hlc: HybridClock, entries: Sequence[Mutation] | Sequence[list[Any]]
) -> tuple[int, int]:
    """Merge repaired or snapshot entries, all or none; (applied, refused for clock skew).

    All or none: if any entry is further ahead than the maximum clock offset, none is applied.
    The entries are each key's latest version, so the keys of one transaction may carry
    different timestamps (a later write superseded some of them); applying the entries below the
    limit and refusing the others would show part of that transaction here. Refused, the whole
    exchange is retried by a later round, once the clocks agree again. The clock is read once
    per call and observes the greatest timestamp once.
    """
    limit = hlc.limit()
    greatest = max((m[2] for m in entries), default=0)
    if greatest > limit:
        logger.warning(
            "refused %d entries: the newest is further ahead of our clock than the maximum "
            "offset (is this node's clock behind?)",
            len(entries),
        )
        return 0, len(entries)
    applied = 0
    apply = store.apply
    for key, value, ts, node, expires in entries:
        applied += apply(key, value, ts, node, expires)
    if greatest:
        with contextlib.suppress(ClockSkewError):
            hlc.observe(greatest)
    return applied, 0


def merge_clear(store: Store, hlc: HybridClock, clear: Version) -> bool:
    if clear <= store.clear_version:
        return False
    try:
        hlc.observe(clear[0])
    except ClockSkewError:
        return False
    return store.apply_clear(*clear)


# --- the two sides of a repair round ------------------------------------------------------------


def digests_reply(store: Store, stable: int = 0) -> bytes:
    """Answer to GET /internal/ae/digests, a repair round's first step (merkle.py): the root of
    our hash tree and its change count, our range tombstone, and our stable timestamp and the
    newest tombstone we purged (for tombstone purging and for catching up)."""
    ts, node = store.clear_version
    buckets, leaves = store.tree()
    return orjson.dumps(
        {
            "clear": [ts, node],
            "root": node_hash(buckets, leaves, 0, 0),
            "seq": store.seq,
            "stable": stable,
            "purged_max": store.purged_max,
        }
    )


# --- snapshots ----------------------------------------------------------------------------------


def snapshot_reply(store: Store, after: str | None, limit: int, since: int = 0) -> bytes:
    """One page of GET /internal/snapshot: entries after the cursor, in key order; with `since`,
    only those stamped after it (a restarted node catching up: `limit` keys are examined, so a
    page may hold few entries, or none, and still have a next one)."""
    entries, nxt = store.mutations(after, limit)
    if since:
        entries = [m for m in entries if m.ts > since]
    ts, node = store.clear_version
    return orjson.dumps(
        {
            "clear": [ts, node],
            "entries": encode_entries(entries),
            "next": encode_cursor(nxt) if nxt is not None else None,
        }
    )


def loads(raw: bytes) -> Any:
    """Parse a peer's JSON; DecodeError (never anything else) if it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"the peer's answer is not JSON: {exc}") from None
