"""Anti-entropy by hash-tree descent, the pure half: what travels, and the peer's answers.

The cost of a repair round follows the difference, not the data set (issue 16). Two replicas
compare the tree of `cluster/core/digests.py` from its root down, four children at a time, only
under the nodes that differ; at the leaves (a few keys each) the requester sends a summary of its
entries, the peer answers with the entries the requester lacks and names the ones it lacks
itself, and the requester sends those. Per differing key that is about four 8-byte hashes a
level, one summary of each key in its leaf, and the entry itself.

Rounds (requester A, peer B; B keeps no state between them):
1. `GET /internal/ae/digests`: B's root hash, its change count `seq`, its range tombstone.
2. `POST /internal/ae/descend`, once a level: A sends, for each differing node, its four
   children's hashes; B answers which of them differ from its own.
3. `POST /internal/ae/reconcile`: A's summaries (key hash, ts, node checksum) of every entry in
   the differing leaves, read in one step. B answers in one step with its entries that are newer
   or that A lacks, and the key hashes it wants.
4. `POST /internal/ae/give`: A sends the entries B wants, as they were when it summarized them.

A transaction must appear whole on the side a repair writes to. Its keys lie in many leaves, and
the descent spans several requests, so a transaction that lands on either side while it runs may
have some leaves judged equal before it landed. So each side also includes every leaf that
changed since the round began (the tree's change count, `Store.seq`): A adds its changed leaves
to the summaries, B sends the whole of its changed leaves. Each side's part is read in one step,
and each receiver merges in one step, all or none (`antientropy.merge_entries`).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable
from typing import Any

import orjson

from cluster.core.digests import (
    FANOUT_BITS,
    LEAF_LEVEL,
    LEAVES,
    children,
    node_crc,
    node_hash,
)
from cluster.core.hlc import HybridClock
from cluster.core.store import Mutation, Store
from cluster.errors import DecodeError
from cluster.replication.antientropy import (
    decode_clear,
    decode_entries,
    encode_entries,
    merge_clear,
    merge_entries,
)

DESCEND_PATH = "/internal/ae/descend"
RECONCILE_PATH = "/internal/ae/reconcile"
GIVE_PATH = "/internal/ae/give"

_FAN = 1 << FANOUT_BITS
_PARENT = struct.Struct(f"<I{_FAN}Q")  # a differing node's id, its children's hashes
_LEAF = struct.Struct("<IH")  # a leaf's id and how many summaries follow
_SUMMARY = struct.Struct("<QQI")  # key hash, ts, node checksum
_HEADER = struct.Struct("<I")  # the length of the JSON header that starts a reconcile body

Summary = tuple[int, int]  # (ts, node checksum) of one key, in a leaf


def key_hash(key: str) -> int:
    """64 bits of the key (the leaf already fixed its low 18 bits of CRC: this is another
    hash, so two keys of one leaf are told apart by 64 fresh bits)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


# --- descent --------------------------------------------------------------------------------


def root_hash(store: Store) -> int:
    buckets, leaves = store.tree()
    return node_hash(buckets, leaves, 0, 0)


def child_hashes(store: Store, level: int, parents: Iterable[int]) -> list[int]:
    """The hashes of the children of `parents` (nodes at `level`), four per parent, in order."""
    buckets, leaves = store.tree()
    return [
        node_hash(buckets, leaves, level + 1, child)
        for parent in parents
        for child in children(level, parent)
    ]


def encode_descend(level: int, parents: list[int], hashes: list[int]) -> bytes:
    parts = [bytes([level])]
    for i, parent in enumerate(parents):
        parts.append(_PARENT.pack(parent, *hashes[i * _FAN : (i + 1) * _FAN]))
    return b"".join(parts)


def descend_reply(store: Store, body: bytes) -> bytes:
    """Answer to POST /internal/ae/descend: a byte per parent, bit k set if child k differs."""
    if not body or (len(body) - 1) % _PARENT.size:
        raise DecodeError("a descend body is a level byte and whole parent records")
    level = body[0]
    if level >= LEAF_LEVEL:
        raise DecodeError(f"level must be below {LEAF_LEVEL}")
    limit = 1 << (FANOUT_BITS * level)
    out = bytearray()
    buckets, leaves = store.tree()
    for record in _PARENT.iter_unpack(memoryview(body)[1:]):
        parent, theirs = record[0], record[1:]
        if parent >= limit:
            raise DecodeError(f"node {parent} is not on level {level}")
        mask = 0
        for k, child in enumerate(children(level, parent)):
            if node_hash(buckets, leaves, level + 1, child) != theirs[k]:
                mask |= 1 << k
        out.append(mask)
    return bytes(out)


def differing_children(level: int, parents: list[int], reply: bytes) -> list[int]:
    """The children (at level + 1) the peer's descend reply marks as different."""
    if len(reply) != len(parents):
        raise DecodeError("a descend reply has one byte per parent")
    return [
        child
        for parent, mask in zip(parents, reply, strict=True)
        for k, child in enumerate(children(level, parent))
        if mask >> k & 1
    ]


# --- reconcile ------------------------------------------------------------------------------


def encode_summaries(
    since: int, clear: tuple[int, str], by_leaf: dict[int, list[Mutation]]
) -> tuple[bytes, dict[int, Mutation]]:
    """A reconcile body, and the summarized entries by key hash (to give what the peer wants)."""
    header = orjson.dumps({"since": since, "clear": list(clear)})
    parts = [_HEADER.pack(len(header)), header]
    by_hash: dict[int, Mutation] = {}
    for leaf, entries in by_leaf.items():
        parts.append(_LEAF.pack(leaf, len(entries)))
        for m in entries:
            khash = key_hash(m.key)
            by_hash[khash] = m
            parts.append(_SUMMARY.pack(khash, m.ts, node_crc(m.node)))
    return b"".join(parts), by_hash


def decode_summaries(body: bytes) -> tuple[dict[str, Any], dict[int, dict[int, Summary]]]:
    """(header, {leaf: {key hash: (ts, node checksum)}}) of a reconcile body."""
    try:
        (size,) = _HEADER.unpack_from(body)
        header = orjson.loads(body[_HEADER.size : _HEADER.size + size])
        pos = _HEADER.size + size
        by_leaf: dict[int, dict[int, Summary]] = {}
        while pos < len(body):
            leaf, count = _LEAF.unpack_from(body, pos)
            pos += _LEAF.size
            if leaf >= LEAVES:
                raise DecodeError(f"leaf {leaf} does not exist")
            end = pos + count * _SUMMARY.size
            if end > len(body):
                raise DecodeError("a reconcile body ends inside a leaf")
            summaries = by_leaf.setdefault(leaf, {})
            for khash, ts, ncrc in _SUMMARY.iter_unpack(body[pos:end]):
                summaries[khash] = (ts, ncrc)
            pos = end
    except (struct.error, orjson.JSONDecodeError, ValueError) as exc:
        raise DecodeError(f"malformed reconcile body: {exc}") from None
    if not isinstance(header, dict) or type(header.get("since")) is not int:
        raise DecodeError("a reconcile header is an object with an integer since")
    return header, by_leaf


def reconcile_reply(store: Store, hlc: HybridClock, body: bytes) -> bytes:
    """Answer to POST /internal/ae/reconcile, read in one step: our entries in the summarized
    leaves that are newer than the requester's or that it lacks, the whole of every leaf that
    changed here since the round began, and the key hashes of the requester's entries we want."""
    header, theirs = decode_summaries(body)
    merge_clear(store, hlc, decode_clear(header.get("clear")))
    changed = store.changed_leaves(header["since"])
    mine = store.leaf_entries([*theirs, *changed])
    send: list[Mutation] = []
    want: list[int] = []
    for leaf in theirs.keys() | mine.keys():
        summaries = theirs.get(leaf, {})  # decoded for this request: ours to consume
        whole = leaf in mine and leaf not in theirs  # changed here, not summarized there
        for m in mine.get(leaf, ()):
            khash = key_hash(m.key)
            their = summaries.pop(khash, None)
            if whole or their is None or their[0] < m.ts:
                send.append(m)
            elif their[0] > m.ts:
                want.append(khash)
            elif their[1] != node_crc(m.node):  # same ts, other writer: let the merge decide
                send.append(m)
                want.append(khash)
        want.extend(summaries)  # the requester's keys we do not hold
    ts, node = store.clear_version
    packed = struct.pack(f"<{len(want)}Q", *want)
    return orjson.dumps(
        {
            "clear": [ts, node],
            "entries": encode_entries(send),
            "want": base64.b64encode(packed).decode("ascii"),
        }
    )


def decode_reconcile(raw: Any) -> tuple[tuple[int, str], list[Mutation], set[int]]:
    """(clear, entries, wanted key hashes) of a reconcile reply."""
    if not isinstance(raw, dict) or not isinstance(raw.get("want"), str):
        raise DecodeError("a reconcile reply is an object with entries and want")
    try:
        packed = base64.b64decode(raw["want"], validate=True)
    except ValueError as exc:
        raise DecodeError(f"bad want list: {exc}") from None
    if len(packed) % 8:
        raise DecodeError("bad want list: not whole 64-bit hashes")
    want = set(struct.unpack(f"<{len(packed) // 8}Q", packed))
    return decode_clear(raw.get("clear")), decode_entries(raw.get("entries")), want


def give_reply(store: Store, hlc: HybridClock, body: bytes) -> bytes:
    """Answer to POST /internal/ae/give: merge the entries we asked for, in one step."""
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"malformed give body: {exc}") from None
    if not isinstance(msg, dict):
        raise DecodeError("a give body is an object")
    _, refused = merge_entries(store, hlc, decode_entries(msg.get("entries")))
    return orjson.dumps({"refused": refused})
