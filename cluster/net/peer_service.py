"""The node-to-node endpoints, independent of the transport that carries them.

Replication, anti-entropy digests and exchanges, snapshot pages and gossip push/pull arrive here as
a `PeerRequest`, over HTTP in production (`cluster.api.internal` adapts aiohttp's request) and
over the in-memory network in the simulation (`cluster.net.memory.MemoryPeers`), so both run the
same checks and the same handlers.

Every request but push/pull (whose packets are signed inside) must carry a valid signature when a
cluster key is set (auth.py); a request that fails authentication or does not decode raises the
contract's error, is counted, and changes nothing. A refused sender is logged once per interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import orjson

from cluster.core.clock import Clock
from cluster.core.cursor import decode_cursor
from cluster.core.hlc import HybridClock
from cluster.core.store import Store
from cluster.errors import BadRequest, DecodeError, NotFound, Unauthorized, Unavailable
from cluster.net import auth
from cluster.net.gossip import PUSH_PULL_ROUTE, Gossip
from cluster.replication import antientropy, merkle, wire
from cluster.replication.sender import Replicator

logger = logging.getLogger(__name__)

MAX_SNAPSHOT_PAGE = 20_000
STATUS_PATH = "/internal/status"  # this node's figures, for a peer assembling /cluster/status


@dataclass(frozen=True, slots=True)
class PeerRequest:
    """One node-to-node request as the service sees it, whatever carried it."""

    method: str
    path: str  # with the query string: it is signed as sent
    body: bytes
    remote: str  # the sender's address, for logs
    signature: str | None = None
    sent_ms: str | None = None


class PeerService:
    """Answers peers: `handle(request)` returns the reply body or raises a KVError."""

    def __init__(
        self,
        name: str,
        cluster_key: str | None,
        clock: Clock,
        store: Store,
        hlc: HybridClock,
        replicator: Replicator,
        gossip: Gossip,
        ready: Callable[[], bool],
        status: Callable[[], bytes] = lambda: b"{}",
        writable: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.key = cluster_key
        self.clock = clock
        self.store = store
        self.hlc = hlc
        self.replicator = replicator
        self.gossip = gossip
        self.ready = ready
        self.status = status  # this node's figures for a peer's /cluster/status
        # Raises StorageUnavailable while the disk copy refuses writes: a peer's batch is then
        # refused (503) before it changes anything, and the peer keeps it queued.
        self.writable = writable
        self.rejected_unauthenticated = 0
        self.rejected_malformed = 0
        self._refusals = auth.RefusalLog()

    def handle(self, request: PeerRequest) -> bytes:
        """The reply body of one request; raises the KVError to answer with.

        Never awaits: each handler reads and merges in one step, so a transaction repaired or
        streamed here appears whole.
        """
        url = urlsplit(request.path)
        route = (request.method, url.path)
        if route == ("POST", PUSH_PULL_ROUTE):
            return self.gossip.handle_push_pull(request.body, request.remote)
        self._authenticate(request)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if route == ("POST", wire.REPLICATE_PATH):
            return self._replicate(request.body)
        if route == ("GET", antientropy.DIGESTS_PATH):
            return self._digests(query)
        if route == ("POST", merkle.DESCEND_PATH):
            return self._repair(merkle.descend_reply, request.body)
        if route == ("POST", merkle.RECONCILE_PATH):
            return self._repair(
                lambda store, body: merkle.reconcile_reply(store, self.hlc, body), request.body
            )
        if route == ("POST", merkle.GIVE_PATH):
            return self._repair(
                lambda store, body: merkle.give_reply(store, self.hlc, body), request.body
            )
        if route == ("GET", antientropy.SNAPSHOT_PATH):
            return self._snapshot(query)
        if route == ("GET", STATUS_PATH):
            return self.status()
        raise NotFound(f"no node-to-node route {request.method} {url.path}")

    def _authenticate(self, request: PeerRequest) -> None:
        now = self.clock.wall()
        if auth.valid(
            self.key,
            request.method,
            request.path,
            request.body,
            request.signature,
            request.sent_ms,
            now,
        ):
            return
        self.rejected_unauthenticated += 1
        count = self._refusals.refused(request.remote, self.clock.monotonic())
        if count is not None:  # once per interval per sender, not per request
            logger.warning(
                "node=%s refused %d unauthenticated request(s) from %s (last: %s %s): "
                "the cluster keys differ, or the clocks are far apart",
                self.name,
                count,
                request.remote,
                request.method,
                request.path,
            )
        raise Unauthorized("this request is not signed with the cluster key, or is stale")

    def _refuse_while_joining(self) -> None:
        """A joining node streams its snapshot first: it gives no snapshot of its own (a joiner
        would copy incomplete data) and takes part in no repair (the whole data set would be
        exchanged in one request, racing the snapshot)."""
        if not self.ready():
            raise Unavailable("this node is joining the mesh and has no complete data yet")

    def _malformed(self, exc: Exception) -> BadRequest:
        self.rejected_malformed += 1
        return BadRequest(str(exc), "INVALID_BODY")

    def _replicate(self, body: bytes) -> bytes:
        if self.writable is not None:
            self.writable()
        try:
            applied, refused = self.replicator.receive(body)
        except DecodeError as exc:
            raise self._malformed(exc) from None
        return orjson.dumps({"applied": applied, "refused": refused})

    def _digests(self, query: dict[str, str]) -> bytes:
        self._refuse_while_joining()
        sender, stable = query.get("from", ""), query.get("stable", "")
        if sender and stable.isdigit():
            self.replicator.note_peer_stable(sender, int(stable))
        return antientropy.digests_reply(self.store, self.replicator.stable())

    def _repair(self, answer: Callable[[Store, bytes], bytes], body: bytes) -> bytes:
        self._refuse_while_joining()
        try:
            return answer(self.store, body)
        except DecodeError as exc:
            raise self._malformed(exc) from None

    def _snapshot(self, query: dict[str, str]) -> bytes:
        self._refuse_while_joining()
        try:
            limit = int(query.get("limit", "5000"))
            after = decode_cursor(query["after"]) if query.get("after") else None
        except (ValueError, DecodeError) as exc:
            raise BadRequest(f"bad snapshot parameters: {exc}", "INVALID_PARAMETER") from None
        if not 1 <= limit <= MAX_SNAPSHOT_PAGE:
            raise BadRequest(f"limit must be 1..{MAX_SNAPSHOT_PAGE}", "INVALID_PARAMETER")
        since = query.get("since", "0")
        if not since.isdigit():
            raise BadRequest("since must be a timestamp", "INVALID_PARAMETER")
        return antientropy.snapshot_reply(self.store, after, limit, int(since))
