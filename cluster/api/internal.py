"""Node-to-node routes over HTTP (everything under /internal/): an aiohttp adapter for
`cluster.net.peer_service.PeerService`, which decides. Not for clients: nginx does not proxy
/internal/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from cluster.errors import BodyTooLarge
from cluster.net import auth
from cluster.net.gossip import PUSH_PULL_ROUTE
from cluster.net.peer_service import PeerRequest, PeerService
from cluster.replication.wire import REPLICATE_PATH

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
    """Hands every /internal/ request to the peer service; errors go through the middleware."""

    def __init__(
        self, service: PeerService, durable: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.service = service
        # With --data-dir: a peer's batch is acknowledged only once it is on our disk.
        self.durable = durable

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/internal/{tail:.*}", self.handle),
            web.post("/internal/{tail:.*}", self.handle),
        ]

    async def handle(self, request: web.Request) -> web.Response:
        body = await read_capped(request, MAX_INTERNAL_BODY)
        reply = self.service.handle(
            PeerRequest(
                request.method,
                request.path_qs,
                body,
                request.remote or "unknown",
                request.headers.get(auth.HEADER),
                request.headers.get(auth.TIME_HEADER),
            )
        )
        if self.durable is not None and request.path == REPLICATE_PATH:
            await self.durable()
        kind = "application/octet-stream" if request.path == PUSH_PULL_ROUTE else "application/json"
        return web.Response(body=reply, content_type=kind)
