"""Node-to-node HTTP routes: replication, anti-entropy and snapshots (under /internal/).

Every request is authenticated with the cluster key when one is set (auth.py); a request that
fails authentication or does not decode is refused with the contract's error shape, counted, and
changes nothing. These routes are not for clients: nginx does not proxy /internal/.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from cluster import antientropy, auth, replication
from cluster.errors import BadRequest, Unauthorized
from cluster.http_api import json_response

if TYPE_CHECKING:
    from cluster.app import Node

logger = logging.getLogger(__name__)

MAX_SNAPSHOT_PAGE = 20_000


class InternalApi:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.rejected_unauthenticated = 0
        self.rejected_malformed = 0

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(replication.REPLICATE_PATH, self.replicate),
            web.get(antientropy.DIGESTS_PATH, self.digests),
            web.post(antientropy.EXCHANGE_PATH, self.exchange),
            web.get(antientropy.SNAPSHOT_PATH, self.snapshot),
        ]

    async def _authenticated_body(self, request: web.Request) -> bytes:
        body = await request.read()
        if not auth.valid(
            self.node.config.cluster_key,
            request.method,
            request.path_qs,
            body,
            request.headers.get(auth.HEADER),
        ):
            self.rejected_unauthenticated += 1
            logger.warning(
                "node=%s refused unauthenticated %s %s from %s",
                self.node.config.name,
                request.method,
                request.path,
                request.remote,
            )
            raise Unauthorized("this request is not signed with the cluster key")
        return body

    def _malformed(self, exc: Exception) -> BadRequest:
        self.rejected_malformed += 1
        return BadRequest(str(exc), "INVALID_BODY")

    async def replicate(self, request: web.Request) -> web.Response:
        body = await self._authenticated_body(request)
        try:
            applied = self.node.replicator.receive(body)
        except replication.DecodeError as exc:
            raise self._malformed(exc) from None
        return json_response({"applied": applied})

    async def digests(self, request: web.Request) -> web.Response:
        await self._authenticated_body(request)
        return web.Response(
            body=antientropy.digests_reply(self.node.store), content_type="application/json"
        )

    async def exchange(self, request: web.Request) -> web.Response:
        body = await self._authenticated_body(request)
        try:
            reply = await antientropy.exchange_reply(self.node.store, self.node.hlc, body)
        except antientropy.DecodeError as exc:
            raise self._malformed(exc) from None
        return web.Response(body=reply, content_type="application/json")

    async def snapshot(self, request: web.Request) -> web.Response:
        await self._authenticated_body(request)
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
