"""The one place an error becomes an HTTP reply, plus the readiness gate and request metrics.

Every route's KVError becomes `{"error", "code"}` with the status of `cluster.errors.STATUS`;
aiohttp's own 404/405/413 are mapped onto the contract's codes; anything else is a bug: logged with
a traceback, counted in `internal_error_count`, answered 500 INTERNAL. While the node is joining,
data routes answer 503 UNAVAILABLE (operations, membership and node-to-node routes still work).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from cluster.api.metrics import Metrics
from cluster.api.ports import NodeStatus
from cluster.api.replies import check_query_utf8, error_response, route_name
from cluster.core.clock import Clock
from cluster.errors import Internal, KVError, Unavailable

logger = logging.getLogger(__name__)

# Served while the node is still joining: operations, membership and node-to-node routes.
ALWAYS_SERVED = ("/health", "/metrics", "/cluster/", "/internal/", "/ui")

# aiohttp raises these for routing and body-size failures; they map onto the contract's codes.
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE"}


def error_middleware(
    name: str, status: NodeStatus, metrics: Metrics, clock: Clock, max_body_bytes: int
) -> Middleware:
    """The middleware of a node's application."""
    # The node's monotonic clock, not loop.time(): uvloop's loop time has 1 ms resolution.
    monotonic = clock.monotonic

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = monotonic()
        resp: web.StreamResponse
        try:
            if not status.ready and not request.path.startswith(ALWAYS_SERVED):
                raise Unavailable("this node is joining the mesh and not synced yet; retry")
            check_query_utf8(request.rel_url.raw_query_string)
            resp = await handler(request)
        except KVError as exc:
            resp = error_response(exc)
        except web.HTTPException as exc:
            code = _HTTP_CODES.get(exc.status)
            if code is None:
                raise
            message = {
                "NOT_FOUND": f"no route for {request.path}",
                "METHOD_NOT_ALLOWED": f"{request.method} is not allowed on {request.path}",
                "BODY_TOO_LARGE": f"the body is larger than {max_body_bytes} bytes",
            }[code]
            resp = error_response(KVError(message, code))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("node=%s internal error on %s %s", name, request.method, request.path)
            metrics.internal_errors.inc()
            resp = error_response(Internal("internal error; see the node's log"))
        metrics.observe_request(
            route_name(request), request.method, resp.status, monotonic() - start
        )
        return resp

    return middleware
