"""Node-to-node HTTP routes: replication, anti-entropy and snapshots (under /internal/).

Every request is authenticated with the cluster key when one is set (auth.py); a request that
fails authentication or does not decode is refused with the contract's error shape, counted, and
changes nothing. These routes are not for clients: nginx does not proxy /internal/.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from cluster.api.http import json_response
from cluster.errors import BadRequest, BodyTooLarge, Unauthorized, Unavailable
from cluster.net import auth
from cluster.replication import antientropy
from cluster.replication import sender as replication

if TYPE_CHECKING:
    from cluster.app import Node

logger = logging.getLogger(__name__)

MAX_SNAPSHOT_PAGE = 20_000
# Peers' bodies are not bound by the client body limit: an anti-entropy exchange carries the whole
# difference between two replicas. Still capped, because it is read before it is authenticated.
MAX_INTERNAL_BODY = 256 * 1024 * 1024


async def read_capped(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class InternalApi:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.rejected_unauthenticated = 0
        self.rejected_malformed = 0
        self._refusals = auth.RefusalLog()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(replication.REPLICATE_PATH, self.replicate),
            web.get(antientropy.DIGESTS_PATH, self.digests),
            web.post(antientropy.EXCHANGE_PATH, self.exchange),
            web.get(antientropy.SNAPSHOT_PATH, self.snapshot),
        ]

    async def _authenticated_body(self, request: web.Request) -> bytes:
        body = await read_capped(request, MAX_INTERNAL_BODY)
        if not auth.valid(
            self.node.config.cluster_key,
            request.method,
            request.path_qs,
            body,
            request.headers.get(auth.HEADER),
            request.headers.get(auth.TIME_HEADER),
            self.node.clock.wall(),
        ):
            self.rejected_unauthenticated += 1
            source = request.remote or "unknown"
            count = self._refusals.refused(source, self.node.clock.monotonic())
            if count is not None:  # once per interval per sender, not per request
                logger.warning(
                    "node=%s refused %d unauthenticated request(s) from %s (last: %s %s): "
                    "the cluster keys differ, or the clocks are far apart",
                    self.node.config.name,
                    count,
                    source,
                    request.method,
                    request.path,
                )
            raise Unauthorized("this request is not signed with the cluster key, or is stale")
        return body

    def _refuse_while_joining(self) -> None:
        """A joining node streams its snapshot first: it gives no snapshot of its own (a joiner
        would copy incomplete data) and takes part in no repair (the whole data set would be
        exchanged in one request, racing the snapshot)."""
        if not self.node.ready:
            raise Unavailable("this node is joining the mesh and has no complete data yet")

    def _malformed(self, exc: Exception) -> BadRequest:
        self.rejected_malformed += 1
        return BadRequest(str(exc), "INVALID_BODY")

    async def replicate(self, request: web.Request) -> web.Response:
        body = await self._authenticated_body(request)
        try:
            applied, refused = self.node.replicator.receive(body)
        except replication.DecodeError as exc:
            raise self._malformed(exc) from None
        return json_response({"applied": applied, "refused": refused})

    async def digests(self, request: web.Request) -> web.Response:
        await self._authenticated_body(request)
        self._refuse_while_joining()
        q = request.rel_url.query
        sender, stable = q.get("from", ""), q.get("stable", "")
        if sender and stable.isdigit():
            self.node.replicator.note_peer_stable(sender, int(stable))
        return web.Response(
            body=antientropy.digests_reply(self.node.store, self.node.replicator.stable()),
            content_type="application/json",
        )

    async def exchange(self, request: web.Request) -> web.Response:
        body = await self._authenticated_body(request)
        self._refuse_while_joining()
        try:
            reply = await antientropy.exchange_reply(self.node.store, self.node.hlc, body)
        except antientropy.DecodeError as exc:
            raise self._malformed(exc) from None
        return web.Response(body=reply, content_type="application/json")

    async def snapshot(self, request: web.Request) -> web.Response:
        await self._authenticated_body(request)
        self._refuse_while_joining()
        q = request.rel_url.query
        try:
            limit = int(q.get("limit", "5000"))
            after = antientropy.decode_cursor(q["after"]) if q.get("after") else None
        except (ValueError, antientropy.DecodeError) as exc:
            raise BadRequest(f"bad snapshot parameters: {exc}", "INVALID_PARAMETER") from None
        if not 1 <= limit <= MAX_SNAPSHOT_PAGE:
            raise BadRequest(f"limit must be 1..{MAX_SNAPSHOT_PAGE}", "INVALID_PARAMETER")
        return web.Response(
            body=antientropy.snapshot_reply(self.node.store, after, limit),
            content_type="application/json",
        )
