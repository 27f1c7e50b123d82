"""The node's key/value operations: validation, timestamps, and the store, with no IO.

HTTP, the compatibility routes and the line protocol all call this one class, so a key is checked,
stamped and stored the same way whichever door it came in by. Each write returns the `Batch` it
produced; the IO layer hands that batch to replication (and, in sync mode, waits for the acks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from cluster.core.clock import Clock
from cluster.core.hlc import HybridClock
from cluster.core.store import Entry, Mutation, Store
from cluster.errors import BadRequest


class Batch(NamedTuple):
    """What one client operation wrote: mutations sharing one timestamp, or a clear.

    A NamedTuple for the same reason as `Mutation`: one per write, on the hot path.
    """

    ts: int
    node: str
    mutations: tuple[Mutation, ...] = ()
    clear: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    max_key_length: int = 64
    max_value_length: int = 256
    max_ttl: float = 10 * 365 * 86400.0


def _utf8_ok(s: str) -> bool:
    # Lone surrogates cannot be stored and served back as UTF-8 JSON; refuse them at the door.
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class KV:
    """Validated reads and writes against the store, stamped by this node's HLC."""

    def __init__(
        self, store: Store, hlc: HybridClock, clock: Clock, node: str, limits: Limits
    ) -> None:
        self.store = store
        self.hlc = hlc
        self.clock = clock
        self.node = node
        self.limits = limits
        # Raises when writes cannot be kept (the disk copy refuses them): called before a write
        # changes anything. None: always writable (no --data-dir).
        self.writable: Callable[[], None] | None = None

    # --- validation (raises BadRequest with the contract's code) --------------------------------

    def check_key(self, key: object) -> str:
        if key is None:
            raise BadRequest("the key parameter is missing", "MISSING_KEY_PARAM")
        if not isinstance(key, str):
            raise BadRequest("the key must be a string", "INVALID_BODY")
        if not key:
            raise BadRequest("the key must not be empty", "EMPTY_KEY")
        if len(key) > self.limits.max_key_length:
            raise BadRequest(
                f"the key is {len(key)} characters long; the limit is {self.limits.max_key_length}",
                "KEY_TOO_LONG",
            )
        if not _utf8_ok(key):
            raise BadRequest("the key is not valid Unicode text", "INVALID_PARAMETER")
        return key

    def check_value(self, value: object) -> str:
        if value is None:
            raise BadRequest("the value parameter is missing", "MISSING_VALUE_PARAM")
        if not isinstance(value, str):
            raise BadRequest("the value must be a string", "INVALID_BODY")
        if len(value) > self.limits.max_value_length:
            raise BadRequest(
                f"the value is {len(value)} characters long; the limit is "
                f"{self.limits.max_value_length}",
                "VALUE_TOO_LONG",
            )
        if not _utf8_ok(value):
            raise BadRequest("the value is not valid Unicode text", "INVALID_BODY")
        return value

    def check_ttl(self, ttl: object, name: str = "ttl") -> float | None:
        """A TTL in seconds from JSON (number) or a query string (text); None means no expiry."""
        if ttl is None:
            return None
        if isinstance(ttl, str):
            try:
                ttl = float(ttl)
            except ValueError:
                raise BadRequest(
                    f"{name} must be a number of seconds", "INVALID_PARAMETER"
                ) from None
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise BadRequest(f"{name} must be a number of seconds", "INVALID_PARAMETER")
        seconds = float(ttl)
        if not math.isfinite(seconds) or seconds <= 0 or seconds > self.limits.max_ttl:
            raise BadRequest(
                f"{name} must be a positive number of seconds up to {self.limits.max_ttl:g}",
                "INVALID_PARAMETER",
            )
        return seconds

    # --- reads -----------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self.store.get(key, self.clock.wall())

    def ttl_left(self, entry: Entry) -> float | None:
        if entry.expires is None:
            return None
        return max(0.0, round(entry.expires - self.clock.wall(), 3))

    # --- writes ----------------------------------------------------------------------------------

    def set(self, key: str, value: str, ttl: float | None = None) -> Batch:
        """Store a validated pair (callers check key and value first)."""
        if self.writable is not None:
            self.writable()
        ts = self.hlc.now()
        expires = self.clock.wall() + ttl if ttl is not None else None
        self.store.apply(key, value, ts, self.node, expires)
        return Batch(ts, self.node, (Mutation(key, value, ts, self.node, expires),))

    def set_many(self, pairs: Mapping[str, str], ttl: float | None = None) -> Batch:
        """All pairs under one timestamp: no reader on any node sees some without the others."""
        return self.write_many(pairs.items(), ttl)

    def write_many(self, ops: Iterable[tuple[str, str | None]], ttl: float | None = None) -> Batch:
        """Apply sets (value) and deletes (None) in one step with one timestamp (a transaction).

        No await happens here, so no other request interleaves with the batch on this node.
        """
        expires = self.clock.wall() + ttl if ttl is not None else None
        return self.write_batch((k, v, expires if v is not None else None) for k, v in ops)

    def write_batch(self, ops: Iterable[tuple[str, str | None, float | None]]) -> Batch:
        """Apply (key, value or None, absolute expiry or None) ops in one step, one timestamp.

        Within one timestamp a later op on the same key must win: only the last is kept.
        """
        batch = self.stamp(ops)
        apply, ts, node = self.store.apply, batch.ts, batch.node
        for m in batch.mutations:
            apply(m.key, m.value, ts, node, m.expires)
        return batch

    def stamp(self, ops: Iterable[tuple[str, str | None, float | None]]) -> Batch:
        """The batch `write_batch` would apply, stamped with one new timestamp, not applied
        (database mode applies it in the database)."""
        if self.writable is not None:
            self.writable()
        ts = self.hlc.now()
        node = self.node
        muts = [
            Mutation(key, value, ts, node, expires if value is not None else None)
            for key, value, expires in ops
        ]
        if len(muts) > 1 and len({m.key for m in muts}) < len(muts):
            last = {m.key: i for i, m in enumerate(muts)}
            muts = [m for i, m in enumerate(muts) if last[m.key] == i]
        return Batch(ts, node, tuple(muts))

    def expiry(self, ttl: float | None) -> float | None:
        """The absolute expiry of a write made now with `ttl` seconds to live."""
        return self.clock.wall() + ttl if ttl is not None else None

    def stage(self) -> Staged:
        """A write set over this node's data: reads see its own writes; `commit` applies them
        as one batch (one timestamp)."""
        return Staged(self)

    def delete(self, key: str) -> Batch | None:
        """Tombstone a live key; None (nothing written) if it is missing."""
        if self.get(key) is None:
            return None
        if self.writable is not None:
            self.writable()
        ts = self.hlc.now()
        self.store.apply(key, None, ts, self.node)
        return Batch(ts, self.node, (Mutation(key, None, ts, self.node),))

    def clear(self) -> Batch:
        if self.writable is not None:
            self.writable()
        ts = self.hlc.now()
        self.store.apply_clear(ts, self.node)
        return Batch(ts, self.node, clear=True)


class Staged:
    """Writes staged on top of the store, read back before they are applied (a transaction).

    `get` answers from the staged writes first, then from the store; `commit` applies every
    staged write in one `write_batch` (one timestamp, no await) and returns the batch, or None if
    nothing was staged. Used by RESP for single commands and for MULTI/EXEC alike.
    """

    __slots__ = ("kv", "ops")

    def __init__(self, kv: KV) -> None:
        self.kv = kv
        self.ops: dict[str, tuple[str | None, float | None]] = {}

    def get(self, key: str) -> tuple[str, float | None] | None:
        """(value, absolute expiry or None) of a live key, staged writes first."""
        if key in self.ops:
            value, expires = self.ops[key]
            if value is None or (expires is not None and expires <= self.kv.clock.wall()):
                return None
            return value, expires
        entry = self.kv.get(key)
        if entry is None or entry.value is None:
            return None
        return entry.value, entry.expires

    def put(self, key: str, value: str, expires: float | None = None) -> None:
        self.ops[key] = (value, expires)

    def delete(self, key: str) -> None:
        self.ops[key] = (None, None)

    def commit(self) -> Batch | None:
        if not self.ops:
            return None
        ops = [(k, v, e) for k, (v, e) in self.ops.items()]
        self.ops = {}
        return self.kv.write_batch(ops)
