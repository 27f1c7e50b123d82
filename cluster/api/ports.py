"""The narrow interfaces the faces are given by the composition root, instead of the whole node.

A face sees only what it uses: the key/value operations (`cluster.core.kv.KV`), the writes that
replicate (`Writes`), whether the node serves (`NodeStatus`), the membership and its admin
operations (`ClusterAdmin`), and the metrics (`cluster.api.metrics.Metrics`).
"""

from __future__ import annotations

from typing import Protocol

from cluster.core.kv import Batch
from cluster.membership.swim import Member


class Writes(Protocol):
    """Where a local write goes after it is applied here (cluster.replication.sender.Replicator)."""

    def has_peers(self) -> bool:
        """False in a mesh of one: nothing to hand over, applied here is everywhere."""
        ...

    async def replicate(self, batch: Batch) -> tuple[int, int]:
        """Send a batch to the peers (sync mode: wait for their acks, bounded); returns (nodes
        holding it, nodes expected), this one included."""
        ...


class NodeStatus(Protocol):
    """Whether the node serves clients, for the readiness gate and /health."""

    @property
    def ready(self) -> bool: ...

    @property
    def join_problem(self) -> str | None:
        """Why the last join failed, when a seed refused us; else None."""
        ...

    def alive_members(self) -> int: ...


class ClusterAdmin(Protocol):
    """The membership view and the admin operations (cluster.lifecycle.Lifecycle)."""

    def members(self) -> list[Member]: ...

    async def join(self, seeds: list[str]) -> None: ...

    async def leave(self) -> None: ...

    async def remove(self, name: str) -> bool: ...


class ClusterReport(Protocol):
    """This node's own state for /cluster/status (cluster.lifecycle.Lifecycle)."""

    def report(self) -> dict[str, object]:
        """Membership view, replication links, repairs, clock and store figures; see the
        README's /cluster/status section for the shape."""
        ...

    def members(self) -> list[Member]: ...
