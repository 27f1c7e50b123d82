"""What the store holds and hands out: entries, mutations, versions, and where changes go.

Apart from the store itself so that the pieces that only carry data (replication's wire, the
disk, the faces) need not read the store's code to know its shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

Version = tuple[int, str]
ZERO: Version = (0, "")


class Entry:
    """One stored version of a key, as the store hands it out: built from its record on each
    read (the store keeps one flat bytes object a key, see records.py)."""

    __slots__ = ("expires", "node", "ts", "value")

    def __init__(self, value: str | None, ts: int, node: str, expires: float | None) -> None:
        self.value = value
        self.ts = ts
        self.node = node
        self.expires = expires

    @property
    def version(self) -> Version:
        return (self.ts, self.node)

    def live(self, now: float) -> bool:
        return self.value is not None and (self.expires is None or self.expires > now)

    def __repr__(self) -> str:
        return f"Entry({self.value!r}, ts={self.ts}, node={self.node!r}, expires={self.expires})"


class Mutation(NamedTuple):
    """One key's write as it travels (replication, snapshots, transactions). value None = delete.

    A NamedTuple rather than a frozen dataclass: one is built for every write on the hot path,
    and a tuple is built several times faster; it is just as immutable.
    """

    key: str
    value: str | None
    ts: int
    node: str
    expires: float | None = None


class ChangeSink(Protocol):
    """Where every change that wins in the store is also sent (a node's disk copy,
    `cluster.storage`): called in the same step as the change, in the order they happen."""

    def put(self, key: str, value: str | None, ts: int, node: str, expires: float | None) -> None:
        """An entry (a value, or a tombstone when `value` is None) won."""

    def clear(self, ts: int, node: str) -> None:
        """The range tombstone moved to (ts, node): every entry at or below it is gone."""

    def dropped(self, keys: list[str], purged_below: int, purged_max: int) -> None:
        """Entries were forgotten (purged tombstones, or dropped to resync); the purge marks."""


@dataclass(frozen=True, slots=True)
class StoreStats:
    keys: int  # stored keys that are not tombstones (expired ones count until reclaimed)
    tombstones: int
    expiring: int  # entries with a TTL still pending reclamation
    clear_ts: int
    refused_stale: int  # writes older than purged tombstones (duplicates, replays)
