"""The hash tree anti-entropy compares: where a key sits in it, and what a stored version weighs.

A key's position is the CRC-32 of its UTF-8 bytes (the same on every node and across restarts,
unlike `hash()`). The tree has fan-out 4: a node at level `l` is the set of keys whose position's
low `2l` bits equal its id, so node `x` at level `l` has the children `x + k * 4**l` (k = 0..3)
and level `LEAF_LEVEL` holds `LEAVES` leaves of a few keys each at a million keys.

A node's hash is the XOR of the version hashes of the entries below it. The store keeps two
levels up to date on every write: its `DIGEST_BUCKETS` buckets (level `BUCKET_LEVEL`, where it
also shards its data) and the leaves. Every other level is computed on demand, as the XOR of a
strided slice of one of them: node `x` at level `l` is `buckets[x::4**l]` above the buckets and
`leaves[x::4**l]` below them. Comparing two replicas level by level costs, per differing key,
four hashes a level; the equal parts of the tree are never read (`cluster/replication/merkle.py`).
"""

from __future__ import annotations

import functools
import operator
import zlib
from array import array
from collections.abc import Sequence

FANOUT_BITS = 2  # fan-out 4
BUCKET_LEVEL = 5
LEAF_LEVEL = 9
DIGEST_BUCKETS = 1 << (FANOUT_BITS * BUCKET_LEVEL)  # 1,024: the store's shards
LEAVES = 1 << (FANOUT_BITS * LEAF_LEVEL)  # 262,144: about 4 keys each at a million keys
LEAF_MASK = LEAVES - 1

_MULT = 0x9E3779B97F4A7C15  # odd: multiplying by it is a bijection on 64-bit integers
_MASK64 = (1 << 64) - 1


def key_crc(key: str) -> int:
    """The key's position in the tree (its low bits pick the bucket and the leaf)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


def bucket_of(key: str) -> int:
    return key_crc(key) & (DIGEST_BUCKETS - 1)


def leaf_of(key: str) -> int:
    return key_crc(key) & LEAF_MASK


@functools.lru_cache(maxsize=4096)
def node_crc(node: str) -> int:
    return zlib.crc32(node.encode("utf-8", "surrogatepass"))


def mixed_hash(crc: int, ts: int, node: str) -> int:
    """A 63-bit hash of one stored version (the key's CRC, ts, node; the value is implied by the
    version): the (key, node) checksums mixed with the timestamp by a multiplicative hash.

    On the write path of every request, so it reuses the key's CRC that picks the bucket: a
    third of the cost of a cryptographic hash. It only has to make accidental cancellation of
    differences in a XOR unlikely; the mix is a bijection of its 64-bit input, so two versions
    of one key (different ts or node) never hash alike. 63 bits: digests travel as JSON
    integers, exact below 2**63 everywhere.
    """
    return (((crc << 32 | node_crc(node)) ^ ts) * _MULT & _MASK64) >> 1


def new_leaves() -> array[int]:
    return array("Q", bytes(8 * LEAVES))


def node_hash(buckets: Sequence[int], leaves: array[int], level: int, node: int) -> int:
    """The hash of node `node` at `level`: the XOR of the stored level nearest below it."""
    stride = 1 << (FANOUT_BITS * level)
    if level <= BUCKET_LEVEL:
        return functools.reduce(operator.xor, buckets[node::stride], 0)
    return functools.reduce(operator.xor, leaves[node::stride], 0)


def children(level: int, node: int) -> list[int]:
    """The ids at level + 1 of the four children of `node` at `level`."""
    step = 1 << (FANOUT_BITS * level)
    return [node + k * step for k in range(1 << FANOUT_BITS)]
