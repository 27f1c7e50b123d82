"""One peer's outbound queue and what it proves about purge safety. Pure: no IO, no asyncio.

Each peer has a FIFO queue of our batches with one request in flight (`sender.PeerLink` moves the
bytes). Because the link is FIFO, when a peer acknowledges a request it holds every earlier batch
of ours: `acked_upto` is the greatest timestamp of ours the peer is known to hold everything up to.
A batch dropped (hints overflow, the peer declared dead) or refused (clock skew) sets `lost_since`,
and the peer's `stable` point stays below it until an anti-entropy round repairs the link.

What must stay true: `stable(last)` never passes a batch the peer may not hold, so a tombstone
older than the minimum of every member's stable point is on every member (see sender.Replicator).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from cluster.core.kv import Batch


class Waiter(Protocol):
    """Who waits for a batch's acknowledgement (a sync write's AckGroup): told exactly once."""

    def ack(self, ok: bool) -> None: ...


@dataclass(slots=True)
class Item:
    batch: Batch
    waiter: Waiter | None


def weight(batch: Batch) -> int:
    """A batch's cost in the hint bound: its mutations (a clear counts one)."""
    return max(1, len(batch.mutations))


class LinkQueue:
    """The queue of batches for one peer and the acknowledgement arithmetic over it."""

    __slots__ = ("acked_upto", "failures", "lost_since", "max_hints", "queue", "queued_mutations")

    def __init__(self, max_hints: int, acked_upto: int = 0, lost_since: int | None = None) -> None:
        self.max_hints = max_hints
        self.queue: deque[Item] = deque()
        self.queued_mutations = 0
        self.acked_upto = acked_upto  # every batch of ours with ts <= this is on the peer
        self.lost_since = lost_since  # ts of the first batch the peer may lack
        self.failures = 0  # consecutive failed requests

    def enqueue(self, batch: Batch, waiter: Waiter | None) -> bool:
        """Queue a batch; False when the peer is too far behind: every hint is dropped (waiters
        told), anti-entropy takes over."""
        size = weight(batch)
        if self.queued_mutations + size > self.max_hints:
            self.drop_all()
            self.lost_since = batch.ts if self.lost_since is None else self.lost_since
            if waiter is not None:
                waiter.ack(False)
            return False
        self.queue.append(Item(batch, waiter))
        self.queued_mutations += size
        return True

    def take(self, max_mutations: int) -> list[Item]:
        """The head of the queue, up to about `max_mutations`, as one request (left queued)."""
        items: list[Item] = []
        count = 0
        for item in self.queue:
            items.append(item)
            count += weight(item.batch)
            if count >= max_mutations:
                break
        return items

    def delivered(self, sent: list[Item], refused: set[int]) -> None:
        """The peer answered a request carrying `sent`; it refused the batches in `refused`."""
        self.failures = 0
        for item in sent:
            # The queue may have been dropped meanwhile (peer died); only pop what we sent.
            if not self.queue or self.queue[0] is not item:
                break
            done = self.queue.popleft()
            self.queued_mutations -= weight(done.batch)
            ok = done.batch.ts not in refused
            if ok:
                self.acked_upto = max(self.acked_upto, done.batch.ts)
            elif self.lost_since is None or done.batch.ts < self.lost_since:
                # Refused (our clock too far ahead of the peer's): it does not hold it, so our
                # stable point stays below it until a repair succeeds.
                self.lost_since = done.batch.ts
            if done.waiter is not None:
                done.waiter.ack(ok)

    def drop_all(self) -> None:
        """Forget every queued batch (waiters told); the first of them bounds `stable`."""
        if self.queue and self.lost_since is None:
            self.lost_since = self.queue[0].batch.ts
        while self.queue:
            item = self.queue.popleft()
            if item.waiter is not None:
                item.waiter.ack(False)
        self.queued_mutations = 0

    def stable(self, last: int) -> int:
        """Greatest ts such that every batch of ours up to it is known to be on this peer."""
        if self.lost_since is not None:
            return min(self.acked_upto, self.lost_since - 1)
        if not self.queue:
            return max(self.acked_upto, last)
        return max(self.acked_upto, self.queue[0].batch.ts - 1)

    def repaired(self, upto: int) -> None:
        """Anti-entropy pushed everything we held at `upto` to this peer."""
        if self.lost_since is not None and self.lost_since <= upto:
            self.lost_since = None
        self.acked_upto = max(self.acked_upto, upto if not self.queue else self.acked_upto)
