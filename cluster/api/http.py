"""The HTTP API of the contract: the REST routes, the task API, /health and /metrics.

Thin by design: parse and validate the request, call `KV`, hand the write to replication, render
JSON with orjson. One middleware maps every error to `{"error", "code"}` (the only place errors
become HTTP replies) and records request metrics. Listings stream their JSON page by page from the
store's sorted key index, so memory stays flat however many keys there are.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_to_bytes

import orjson
from aiohttp import web

from cluster.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from cluster.core.kv import Batch
from cluster.core.patterns import Pattern, compile_pattern
from cluster.core.store import Entry
from cluster.errors import STATUS, BadRequest, Internal, KVError, NotFound, Unavailable

if TYPE_CHECKING:
    from cluster.app import Node

logger = logging.getLogger(__name__)

JSON = "application/json"
MAX_PAGE = 10_000
STREAM_PAGE = 1_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Served while the node is still joining: operations, membership and node-to-node routes.
_ALWAYS_SERVED = ("/health", "/metrics", "/cluster/", "/internal/")

# aiohttp raises these for routing and body-size failures; they map onto the contract's codes.
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE"}


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj), status=status, content_type=JSON, charset="utf-8", headers=headers
    )


def error_response(exc: KVError) -> web.Response:
    return json_response({"error": exc.message, "code": exc.code}, status=STATUS[exc.code])


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The key a cursor resumes after. Strict: only what `encode_cursor` could have produced (a
    canonical unpadded base64url of a non-empty UTF-8 key) is accepted, so a mangled cursor is an
    error instead of silently restarting or skipping part of the scan."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        key = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        key = ""
    if not key or encode_cursor(key) != cursor:
        raise BadRequest("cursor is not a cursor this server returned", "INVALID_PARAMETER")
    return key


def key_from_path(request: web.Request, prefix: str) -> str:
    """The key after `prefix` in the raw path, percent-decoded strictly (so `%2F` is a slash in
    the key and invalid UTF-8 is an error rather than a silently different key)."""
    raw = request.rel_url.raw_path[len(prefix) :]
    try:
        return unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the key is not valid UTF-8", "INVALID_PARAMETER") from None


def check_query_utf8(raw_query: str) -> None:
    """Refuse a query string whose percent-escapes are not UTF-8: decoding it would silently
    substitute U+FFFD and store or read a different key (the path is decoded strictly too).

    Checking the whole string is exact: `&`, `=` and `+` are ASCII, which never occurs inside a
    multi-byte sequence. Only strings with an escape are decoded, so the hot path pays one scan.
    """
    if "%" in raw_query:
        try:
            unquote_to_bytes(raw_query).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the query string is not valid UTF-8", "INVALID_PARAMETER") from None


def parse_limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest("limit must be an integer", "INVALID_PARAMETER") from None
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}", "INVALID_PARAMETER")
    return limit


def parse_filter(raw: str | None) -> Pattern | None:
    if raw is None or raw == "":
        return None
    try:
        return compile_pattern(raw)
    except ValueError as exc:
        raise BadRequest(str(exc), "INVALID_PARAMETER") from None


def parse_json(body: bytes) -> Any:
    if not body:
        raise BadRequest("the body is empty; expected JSON", "INVALID_BODY")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", "INVALID_BODY") from None


def route_name(request: web.Request) -> str:
    info = request.match_info
    route = info.route if info is not None else None
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


class HttpApi:
    """The contract's routes over one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.kv = node.kv

    # --- plumbing --------------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # The node's monotonic clock, not loop.time(): uvloop's loop time has 1 ms resolution.
        monotonic = self.node.clock.monotonic
        start = monotonic()
        resp: web.StreamResponse
        try:
            if not self.node.ready and not request.path.startswith(_ALWAYS_SERVED):
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
                "BODY_TOO_LARGE": (
                    f"the body is larger than {self.node.config.max_body_bytes} bytes"
                ),
            }[code]
            resp = error_response(KVError(message, code))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "node=%s internal error on %s %s", self.kv.node, request.method, request.path
            )
            self.node.metrics.internal_errors.inc()
            resp = error_response(Internal("internal error; see the node's log"))
        self.node.metrics.observe_request(
            route_name(request), request.method, resp.status, monotonic() - start
        )
        return resp

    async def replicate(self, batch: Batch) -> dict[str, str]:
        """Hand a write to replication; in sync mode wait for the acks. Returns reply headers."""
        acked, expected = await self.node.replicate(batch)
        return {"X-Replicas": f"{acked}/{expected}", "X-Timestamp": str(batch.ts)}

    async def read_json(self, request: web.Request) -> Any:
        return parse_json(await request.read())

    def routes(self) -> list[web.RouteDef]:
        return [
            # Any characters, newlines too; `/keys/` is the empty key (EMPTY_KEY), not a 404.
            web.get(r"/keys/{key:[\s\S]*}", self.get_key),
            web.put(r"/keys/{key:[\s\S]*}", self.put_key),
            web.delete(r"/keys/{key:[\s\S]*}", self.delete_key),
            web.get("/keys", self.list_keys),
            web.put("/keys", self.put_many),
            web.delete("/keys", self.clear_keys),
            web.get("/set", self.task_set),
            web.get("/get", self.task_get),
            web.get("/rm", self.task_rm),
            web.get("/clear", self.task_clear),
            web.get("/is", self.task_is),
            web.get("/getKeys", self.task_get_keys),
            web.get("/getValues", self.task_get_values),
            web.get("/getAll", self.task_get_all),
            web.get("/health", self.health),
            web.get("/metrics", self.metrics),
        ]

    # --- REST ------------------------------------------------------------------------------------

    def _entry_body(self, key: str, entry: Entry) -> dict[str, Any]:
        return {"key": key, "value": entry.value, "ttl": self.kv.ttl_left(entry)}

    async def get_key(self, request: web.Request) -> web.Response:
        key = self.kv.check_key(key_from_path(request, "/keys/"))
        entry = self.kv.get(key)
        if entry is None:
            raise NotFound(f"no such key: {key}")
        return json_response(self._entry_body(key, entry))

    async def put_key(self, request: web.Request) -> web.Response:
        key = self.kv.check_key(key_from_path(request, "/keys/"))
        body = await self.read_json(request)
        if not isinstance(body, dict):
            raise BadRequest(
                'the body must be a JSON object: {"value": "...", "ttl": seconds}', "INVALID_BODY"
            )
        if "value" not in body:
            raise BadRequest('the body has no "value"', "MISSING_VALUE_PARAM")
        value = self._body_value(body["value"])
        ttl = self._ttl_of(body.get("ttl"), body.get("expire_in"))
        batch = self.kv.set(key, value, ttl)
        headers = await self.replicate(batch)
        return json_response({"key": key, "value": value, "ttl": ttl}, headers=headers)

    def _body_value(self, value: object) -> str:
        """A value given in a JSON body: null there is a non-string value, not a missing one."""
        if value is None:
            raise BadRequest("the value must be a string, not null", "INVALID_BODY")
        return self.kv.check_value(value)

    def _ttl_of(self, ttl: object, expire_in: object) -> float | None:
        if ttl is not None and expire_in is not None:
            raise BadRequest("give ttl or expire_in, not both", "INVALID_PARAMETER")
        if expire_in is not None:
            return self.kv.check_ttl(expire_in, "expire_in")
        return self.kv.check_ttl(ttl, "ttl")

    async def delete_key(self, request: web.Request) -> web.Response:
        key = self.kv.check_key(key_from_path(request, "/keys/"))
        batch = self.kv.delete(key)
        if batch is None:
            raise NotFound(f"no such key: {key}")
        headers = await self.replicate(batch)
        return json_response({"deleted": key}, headers=headers)

    async def put_many(self, request: web.Request) -> web.Response:
        q = request.rel_url.query
        ttl = self._ttl_of(q.get("ttl"), q.get("expire_in"))
        body = await self.read_json(request)
        if not isinstance(body, dict):
            raise BadRequest(
                'the body must be a JSON object of pairs: {"k1": "v1", ...}', "INVALID_BODY"
            )
        check_key, check_value = self.kv.check_key, self._body_value
        pairs = {check_key(k): check_value(v) for k, v in body.items()}  # all checked first
        batch = self.kv.set_many(pairs, ttl)
        headers = await self.replicate(batch)
        return json_response({"stored": len(pairs)}, headers=headers)

    async def clear_keys(self, request: web.Request) -> web.Response:
        headers = await self.replicate(self.kv.clear())
        return json_response({"cleared": True}, headers=headers)

    async def list_keys(self, request: web.Request) -> web.StreamResponse:
        q = request.rel_url.query
        pattern = parse_filter(q.get("filter"))
        limit = parse_limit(q.get("limit"))
        cursor = q.get("cursor")
        after = decode_cursor(cursor) if cursor is not None else None
        if limit is None:
            return await self.stream(
                request, "object", after, pattern, b'{"data":{', b'},"next_cursor":null}'
            )
        store, now = self.kv.store, self.kv.clock.wall()
        data: dict[str, str] = {}
        while len(data) < limit:
            page, after = store.scan(after, limit - len(data), now, pattern)
            data.update((k, e.value) for k, e in page if e.value is not None)
            if after is None:
                break
            await asyncio.sleep(0)  # a long run of tombstones or misses: let others in
        nxt = encode_cursor(after) if after is not None else None
        return json_response({"data": data, "next_cursor": nxt})

    async def stream(
        self,
        request: web.Request,
        shape: str,
        after: str | None,
        pattern: Pattern | None,
        head: bytes,
        tail: bytes,
        render: Callable[[list[tuple[str, Entry]]], bytes] | None = None,
    ) -> web.StreamResponse:
        """Write a listing in chunks: `head`, the pages joined by commas, `tail`.

        `shape` is "object" (k: value), "keys" or "values"; `render` overrides it. Between pages
        the event loop serves others and the store may change: each page resumes after the last
        key written, so no key is listed twice.
        """
        resp = web.StreamResponse(headers={"Content-Type": f"{JSON}; charset=utf-8"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(head)
        store = self.kv.store
        first = True
        while True:
            page, after = store.scan(after, STREAM_PAGE, self.kv.clock.wall(), pattern)
            if page:
                if render is not None:
                    chunk = render(page)
                elif shape == "object":
                    chunk = orjson.dumps({k: e.value for k, e in page})[1:-1]
                elif shape == "keys":
                    chunk = orjson.dumps([k for k, _ in page])[1:-1]
                else:
                    chunk = orjson.dumps([e.value for _, e in page])[1:-1]
                await resp.write(chunk if first else b"," + chunk)
                first = False
            if after is None:
                break
            await asyncio.sleep(0)
        await resp.write(tail)
        await resp.write_eof()
        return resp

    # --- the task API ----------------------------------------------------------------------------

    async def task_set(self, request: web.Request) -> web.Response:
        q = request.rel_url.query
        if "k" not in q and "key" in q:
            return await self.node.compat.set_query(request)
        key = self.kv.check_key(q.get("k"))
        value = self.kv.check_value(q.get("v"))
        headers = await self.replicate(self.kv.set(key, value))
        return json_response({"key": key, "value": value}, headers=headers)

    async def task_get(self, request: web.Request) -> web.StreamResponse:
        q = request.rel_url.query
        if "k" not in q:
            if "key" in q:
                return await self.node.compat.get_query(request)
            if not q:
                return await self.node.compat.get_all_timed(request)
        key = self.kv.check_key(q.get("k"))
        entry = self.kv.get(key)
        if entry is None:
            raise NotFound(f"no such key: {key}")
        return json_response({"key": key, "value": entry.value})

    async def task_rm(self, request: web.Request) -> web.Response:
        key = self.kv.check_key(request.rel_url.query.get("k"))
        batch = self.kv.delete(key)
        if batch is None:
            raise NotFound(f"no such key: {key}")
        headers = await self.replicate(batch)
        return json_response({"deleted": key}, headers=headers)

    async def task_clear(self, request: web.Request) -> web.Response:
        headers = await self.replicate(self.kv.clear())
        return json_response({"data": {}}, headers=headers)

    async def task_is(self, request: web.Request) -> web.Response:
        key = self.kv.check_key(request.rel_url.query.get("k"))
        if self.kv.get(key) is None:
            raise NotFound(f"no such key: {key}")
        return json_response({"key": key, "exists": True})

    async def task_get_keys(self, request: web.Request) -> web.StreamResponse:
        return await self.stream(request, "keys", None, None, b"[", b"]")

    async def task_get_values(self, request: web.Request) -> web.StreamResponse:
        return await self.stream(request, "values", None, None, b"[", b"]")

    async def task_get_all(self, request: web.Request) -> web.StreamResponse:
        return await self.stream(request, "object", None, None, b"{", b"}")

    # --- operations ------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """200 "ok" when serving; 503 "syncing" while joining (balancers skip the node), with a
        "reason" when a seed refused us."""
        node = self.node
        body: dict[str, Any] = {
            "status": "ok" if node.ready else "syncing",
            "name": node.config.name,
            "members": node.alive_members(),
            "keys": len(self.kv.store),
        }
        if not node.ready and node.join_problem is not None:
            body["reason"] = node.join_problem  # e.g. a seed refused us: the cluster keys differ
        return json_response(body, status=200 if node.ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.node.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )
