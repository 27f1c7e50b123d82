"""How the store keeps an entry: one flat `bytes` record a key.

A record is a 13-byte head (the timestamp, the writer's index in the store's table of node names,
flags), the expiry as a double if the flags say so, then the value's UTF-8. One flat object costs
80 bytes a key less than a value string plus a slotted `Entry` (at 16-character keys and
100-character values: 144 bytes against 160 + 64), and the cyclic collector never visits it.
Readers get an `Entry` built from it on each read.
"""

from __future__ import annotations

import struct
import sys

from cluster.core.entries import Entry, Version

HEAD = struct.Struct("<QIB")  # timestamp, the writer's index in the node table, flags
EXPIRES = struct.Struct("<d")
FLAGS = 12  # the flags' offset in a record: `record[FLAGS] & GONE` without unpacking
GONE, EXPIRING = 1, 2  # a tombstone; an expiry follows the head


class Records:
    """Packs and reads records; owns the table of writers' names they point into."""

    __slots__ = ("ids", "names")

    def __init__(self) -> None:
        self.names: list[str] = []  # the writers' names, by their index in records
        self.ids: dict[str, int] = {}

    def pack(self, value: str | None, ts: int, node: str, expires: float | None) -> bytes:
        index = self.ids.get(node)
        if index is None:
            index = self.ids[node] = len(self.names)
            self.names.append(sys.intern(node))
        flags = GONE if value is None else 0
        if expires is None:
            head = HEAD.pack(ts, index, flags)
        else:
            head = HEAD.pack(ts, index, flags | EXPIRING) + EXPIRES.pack(expires)
        return head if value is None else head + value.encode("utf-8", "surrogatepass")

    def entry(self, record: bytes) -> Entry:
        ts, node, flags = HEAD.unpack_from(record)
        expires, start = None, HEAD.size
        if flags & EXPIRING:
            (expires,) = EXPIRES.unpack_from(record, start)
            start += EXPIRES.size
        value = None if flags & GONE else record[start:].decode("utf-8", "surrogatepass")
        return Entry(value, ts, self.names[node], expires)

    def version(self, record: bytes) -> Version:
        ts, node, _ = HEAD.unpack_from(record)
        return ts, self.names[node]
