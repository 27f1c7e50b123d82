"""The replication body on the wire, and the merge of remote batches into the store. Pure.

A request carries the sender's name, its stable timestamp (see `links`) and a run of batches;
the answer lists the timestamps of the batches refused (clock skew), so that the sender neither
counts them as replicated nor as acknowledged for tombstone purging.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import orjson

from cluster.core.hlc import HybridClock
from cluster.core.kv import Batch
from cluster.core.store import Mutation, Store
from cluster.errors import ClockSkewError, DecodeError

logger = logging.getLogger(__name__)

REPLICATE_PATH = "/internal/replicate"
WIRE_VERSION = 1


# {"v": 1, "from": name, "stable": ts, "batches": [[ts, node, clear, [[key, value|null,
#  expires|null], ...]], ...]}: lists, not objects, because a busy link sends thousands per request.


def encode_batches(sender: str, stable: int, batches: Iterable[Batch]) -> bytes:
    return orjson.dumps(
        {
            "v": WIRE_VERSION,
            "from": sender,
            "stable": stable,
            "batches": [
                [b.ts, b.node, b.clear, [[m.key, m.value, m.expires] for m in b.mutations]]
                for b in batches
            ],
        }
    )


def decode_batches(body: bytes) -> tuple[str, int, list[Batch]]:
    """Parse and check a replication body; DecodeError on anything malformed."""
    try:
        msg = orjson.loads(body)
        if not isinstance(msg, dict) or msg.get("v") != WIRE_VERSION:
            raise DecodeError("not a replication message of version 1")
        sender, stable, raw = msg["from"], msg["stable"], msg["batches"]
        if not isinstance(sender, str) or not isinstance(stable, int) or not isinstance(raw, list):
            raise DecodeError("bad header fields")
        batches = []
        for ts, node, clear, muts in raw:
            if not (isinstance(ts, int) and ts >= 0 and isinstance(node, str) and node):
                raise DecodeError("bad batch timestamp or node")
            mutations = []
            for key, value, expires in muts:
                if not isinstance(key, str) or not key:
                    raise DecodeError("bad key")
                if value is not None and not isinstance(value, str):
                    raise DecodeError("bad value")
                if expires is not None and not isinstance(expires, int | float):
                    raise DecodeError("bad expiry")
                mutations.append(Mutation(key, value, ts, node, expires))
            batches.append(Batch(ts, node, tuple(mutations), bool(clear)))
        return sender, stable, batches
    except DecodeError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"malformed replication body: {exc}") from None


def refused_of(reply: bytes) -> set[int]:
    """The timestamps of the batches a peer's reply says it refused."""
    try:
        msg = orjson.loads(reply)
        refused = msg.get("refused", []) if isinstance(msg, dict) else None
    except orjson.JSONDecodeError:
        refused = None
    if not isinstance(refused, list) or not all(isinstance(t, int) for t in refused):
        raise DecodeError("a replication reply must be {'applied': n, 'refused': [ts, ...]}")
    return set(refused)


def apply_batches(
    store: Store, hlc: HybridClock, batches: Iterable[Batch]
) -> tuple[int, list[int]]:
    """Merge remote batches into the store; returns (applied mutations, refused batches' ts).

    A batch whose timestamp is further ahead than the maximum clock offset is refused and
    logged: adopting it would drag this node's clock into the future. The sender is told which,
    so that it neither counts them as replicated nor as acknowledged for tombstone purging. No
    await in here, so every batch (a transaction) becomes visible all at once.
    """
    applied = 0
    refused: list[int] = []
    for b in batches:
        try:
            hlc.observe(b.ts)
        except ClockSkewError as exc:
            refused.append(b.ts)
            logger.warning("refused a batch from node=%s: %s", b.node, exc)
            continue
        if b.clear:
            applied += store.apply_clear(b.ts, b.node)
        for m in b.mutations:
            applied += store.apply(m.key, m.value, m.ts, m.node, m.expires)
    return applied, refused
