"""The one place an error becomes an HTTP reply, plus the readiness gate and request metrics.

Every route's KVError becomes `{"error", "code"}` with the status of `cluster.errors.STATUS`;
aiohttp's own 413 (a body over the limit) is mapped onto the contract's code; a path no route
serves answers 404 NOT_FOUND and a method a path does not take 405 METHOD_NOT_ALLOWED, both as JSON;
anything else is a bug: logged with a traceback, counted in `internal_error_count`, answered 500
INTERNAL. While the node is joining, data routes answer 503 UNAVAILABLE (operations, membership
and node-to-node routes still work).

Why a wrapper around each route's handler rather than an aiohttp middleware: an application with
any middleware runs two more layers on every request (the middleware itself and aiohttp's own
`_fix_request_current_app`), which cost about a sixth of the throughput of a GET. A wrapper made
once per route also knows its route's name and whether the readiness gate applies, where a
middleware works both out again on every request. `Guard.routes` wraps a face's routes;
`Guard.fallbacks` adds the JSON 404 and 405 routes, after every other route.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler

from cluster.api.metrics import Metrics
from cluster.api.ports import NodeStatus
from cluster.api.replies import check_query_utf8, error_response
from cluster.core.clock import Clock
from cluster.errors import Internal, KVError, Unavailable

logger = logging.getLogger(__name__)

# Served while the node is still joining: operations, membership and node-to-node routes.
ALWAYS_SERVED = ("/health", "/metrics", "/cluster/", "/internal/", "/ui")

# aiohttp raises these from inside a handler (reading a body over the limit, a route of its own).
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE"}


def canonical(path: str) -> str:
    """A route's name in the metrics, as aiohttp names its resource: `/keys/{key:.+}` is
    `/keys/{key}`."""
    return re.sub(r"\{(\w+):[^{}]*\}", r"{\1}", path)


class Guard:
    """Wraps every route's handler: readiness gate, errors as JSON, request metrics."""

    def __init__(
        self, name: str, status: NodeStatus, metrics: Metrics, clock: Clock, max_body_bytes: int
    ) -> None:
        self.name = name
        self.status = status
        self.metrics = metrics
        # The node's monotonic clock, not loop.time(): uvloop's loop time has 1 ms resolution.
        self.monotonic = clock.monotonic
        self.max_body_bytes = max_body_bytes
        self._paths: dict[str, None] = {}  # every path wrapped, in order, for the 405 routes

    def routes(self, defs: Iterable[web.RouteDef]) -> list[web.RouteDef]:
        out = []
        for d in defs:
            self._paths.setdefault(d.path)
            handler = self.wrap(d.handler, canonical(d.path))
            out.append(web.RouteDef(d.method, d.path, handler, d.kwargs))
        return out

    def fallbacks(self) -> list[web.RouteDef]:
        """Added last: a known path with a method it does not take (405), any other path (404)."""
        out = [
            web.route("*", path, self.wrap(self._method_not_allowed, path)) for path in self._paths
        ]
        out.append(web.route("*", "/{tail:.*}", self.wrap(self._not_found, "unmatched")))
        return out

    async def _method_not_allowed(self, request: web.Request) -> web.StreamResponse:
        raise KVError(f"{request.method} is not allowed on {request.path}", "METHOD_NOT_ALLOWED")

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        raise KVError(f"no route for {request.path}", "NOT_FOUND")

    def wrap(self, handler: Handler, route: str) -> Handler:
        gated = not route.startswith(ALWAYS_SERVED) and route != "unmatched"
        status, metrics, monotonic = self.status, self.metrics, self.monotonic
        observe = metrics.observe_request
        name = self.name

        async def guarded(request: web.Request) -> web.StreamResponse:
            start = monotonic()
            resp: web.StreamResponse
            try:
                if gated and not status.ready:
                    raise Unavailable("this node is joining the mesh and not synced yet; retry")
                check_query_utf8(request.rel_url.raw_query_string)
                resp = await handler(request)
            except KVError as exc:
                resp = error_response(exc)
            except web.HTTPException as exc:
                resp = self._http_error(request, exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "node=%s internal error on %s %s", name, request.method, request.path
                )
                metrics.internal_errors.inc()
                resp = error_response(Internal("internal error; see the node's log"))
            observe(route, request.method, resp.status, monotonic() - start)
            return resp

        return guarded

    def _http_error(self, request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
        code = _HTTP_CODES.get(exc.status)
        if code is None:
            raise exc
        message = {
            "NOT_FOUND": f"no route for {request.path}",
            "METHOD_NOT_ALLOWED": f"{request.method} is not allowed on {request.path}",
            "BODY_TOO_LARGE": f"the body is larger than {self.max_body_bytes} bytes",
        }[code]
        return error_response(KVError(message, code))
