"""Writes acknowledged only once the disk copy holds them (--data-dir)."""

from __future__ import annotations

from cluster.core.kv import Batch
from cluster.replication.sender import Replicator
from cluster.storage.journal import Journal


class DurableWrites:
    """The `Writes` the faces get with --data-dir: replicate as usual, then wait for the commit
    that holds the batch. The disk thread commits meanwhile (the hand-off happens on the next
    loop turn whatever we await), so the two waits overlap."""

    def __init__(self, journal: Journal, replicator: Replicator) -> None:
        self.journal = journal
        self.replicator = replicator

    def has_peers(self) -> bool:
        # Even alone a write must wait for its commit: "applied here" is not "kept" yet.
        return self.replicator.has_peers() or self.journal.waits

    async def replicate(self, batch: Batch) -> tuple[int, int]:
        result = await self.replicator.replicate(batch)
        await self.journal.synced()
        return result
