"""Anti-entropy and snapshots, the pure half: digests, the difference, the merge, the pages.

- Repair: every interval a node compares its per-bucket digests (store.py) with a random peer's.
  Only the buckets that differ are exchanged, both ways, through the store's one merge, so the
  bytes sent are proportional to the difference, not to the data set. The store keeps each
  bucket's entries apart, so reading a differing bucket costs its size, not the data set's.
- Snapshot: a joining or restarted node pages through a peer's entries (tombstones and the range
  tombstone included) in key order. It applies live replication meanwhile: the merge is
  commutative, so applying a live write before or after the snapshot chunk that holds an older
  version of the key gives the same result; no buffering is needed.

The peer side of both (`digests_reply`, `exchange_reply`, `snapshot_reply`) and the merges live
here; the requesting side, which talks to a peer, is `repair.py`. Entries travel as
`[key, value|null, ts, node, expires|null]`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from cluster.core.cursor import encode_cursor
from cluster.core.hlc import HybridClock
from cluster.core.store import DIGEST_BUCKETS, Mutation, Store, Version
from cluster.errors import ClockSkewError, DecodeError

logger = logging.getLogger(__name__)

DIGESTS_PATH = "/internal/ae/digests"
EXCHANGE_PATH = "/internal/ae/exchange"
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


def diff_buckets(mine: list[int], theirs: object) -> list[int]:
    if not isinstance(theirs, list) or len(theirs) != DIGEST_BUCKETS:
        raise DecodeError(f"digests must be a list of {DIGEST_BUCKETS} integers")
    return [i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]


# --- the two sides of a repair round ------------------------------------------------------------


def digests_reply(store: Store, stable: int = 0) -> bytes:
    """Answer to GET /internal/ae/digests (with our stable timestamp, for tombstone purging)."""
    ts, node = store.clear_version
    return orjson.dumps(
        {
            "clear": [ts, node],
            "digests": store.digests(),
            "stable": stable,
            "purged_max": store.purged_max,
        }
    )


def exchange_reply(store: Store, hlc: HybridClock, body: bytes) -> bytes:
    """Answer to POST /internal/ae/exchange: our entries in the buckets that differ, then merge
    theirs.

    The requester chose its buckets by comparing its digests with ours as they were when it
    fetched them; writes may have reached us since. A transaction that arrived meanwhile has its
    keys in several buckets, some maybe not chosen: sending only the chosen ones would hand over
    part of it. So the requester sends its digests too (taken when it read its entries), and we
    add every bucket that differs from ours *now*: whatever we send is a whole transaction.
    """
    try:
        msg = orjson.loads(body)
        if not isinstance(msg, dict):
            raise DecodeError("exchange body must be an object")
        buckets = msg["buckets"]
        if not isinstance(buckets, list) or not all(
            isinstance(b, int) and 0 <= b < DIGEST_BUCKETS for b in buckets
        ):
            raise DecodeError("bad bucket list")
        theirs = decode_entries(msg["entries"])
        clear = decode_clear(msg["clear"])
        their_digests = msg.get("digests")
    except (orjson.JSONDecodeError, KeyError) as exc:
        raise DecodeError(f"malformed exchange: {exc}") from None
    # Read ours and merge theirs in one step (no await): a repaired transaction appears whole.
    if their_digests is not None:
        buckets = sorted(set(buckets) | set(diff_buckets(store.digests(), their_digests)))
    mine = store.entries_in_buckets(buckets)
    merge_clear(store, hlc, clear)
    _, refused = merge_entries(store, hlc, theirs)
    ts, node = store.clear_version
    return orjson.dumps({"clear": [ts, node], "entries": encode_entries(mine), "refused": refused})


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
