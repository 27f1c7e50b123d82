"""The two ways a node reaches its peers, as interfaces: datagrams and requests.

Replication, anti-entropy, snapshots and gossip talk to peers only through these, so the same code
runs over real sockets (`cluster.net.udp`, `cluster.net.http_peers`) and over the in-memory network
of the simulation (`cluster.net.memory`), where a seed chooses every loss, delay and partition.
"""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    """Sends one datagram, best effort: no error if it is lost, no retry, no ordering."""

    def send(self, address: str, data: bytes) -> None: ...


class PeerError(Exception):
    """A request to a peer failed: the network, a timeout, or a non-200 answer (`status`)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PeerTransport(Protocol):
    """Requests to peers, addressed by "host:port"; the reply body on success.

    Every failure (unreachable, timed out after `within` seconds, a non-200 answer) raises
    PeerError, so callers handle one exception and retry or give up.
    """

    async def request(
        self, method: str, address: str, path: str, body: bytes = b"", within: float = 5.0
    ) -> bytes: ...
