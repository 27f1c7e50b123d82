"""The HTTP API of the contract: the REST routes, the task API, /health and /metrics.

Thin by design: parse and validate the request (`KV`'s checks), read or write through `Data` (the
mesh's store and replication, or a database), render JSON with orjson. `/set` and `/get` are
shared with the compatibility shapes: `cluster.api.router` dispatches them. Errors become replies
in `cluster.api.middleware` only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from cluster.api.data import Data
from cluster.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from cluster.api.metrics import Metrics
from cluster.api.ports import NodeStatus
from cluster.api.replies import (
    json_response,
    key_from_path,
    parse_cursor,
    parse_filter,
    parse_json,
    parse_limit,
    stream_listing,
)
from cluster.core.cursor import encode_cursor
from cluster.core.store import Entry
from cluster.errors import BadRequest, NotFound


class HttpApi:
    """The contract's REST and task routes, /health and /metrics, over the key/value operations."""

    def __init__(self, name: str, data: Data, status: NodeStatus, metrics: Metrics) -> None:
        self.name = name
        self.data = data
        self.kv = data.kv  # validation and the clock
        self.status = status
        self.metrics_source = metrics

    async def read_json(self, request: web.Request) -> Any:
        return parse_json(await request.read())

    def routes(self) -> list[web.RouteDef]:
        """Every route but /set and /get (see cluster.api.router)."""
        return [
            # Any characters, newlines too; `/keys/` is the empty key (EMPTY_KEY), not a 404.
            web.get(r"/keys/{key:[\s\S]*}", self.get_key),
            web.put(r"/keys/{key:[\s\S]*}", self.put_key),
            web.delete(r"/keys/{key:[\s\S]*}", self.delete_key),
            web.get("/keys", self.list_keys),
            web.put("/keys", self.put_many),
            web.delete("/keys", self.clear_keys),
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
        entry = await self.data.get(key)
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
        written = await self.data.set(key, value, ttl)
        return json_response({"key": key, "value": value, "ttl": ttl}, headers=written.headers)

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
        written = await self.data.delete(key)
        if written is None:
            raise NotFound(f"no such key: {key}")
        return json_response({"deleted": key}, headers=written.headers)

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
        written = await self.data.set_many(pairs, ttl)
        return json_response({"stored": len(pairs)}, headers=written.headers)

    async def clear_keys(self, request: web.Request) -> web.Response:
        written = await self.data.clear()
        return json_response({"cleared": True}, headers=written.headers)

    async def list_keys(self, request: web.Request) -> web.StreamResponse:
        q = request.rel_url.query
        pattern = parse_filter(q.get("filter"))
        limit = parse_limit(q.get("limit"))
        after = parse_cursor(q.get("cursor"))
        if limit is None:
            return await stream_listing(
                request, self.data, "object", after, pattern, b'{"data":{', b'},"next_cursor":null}'
            )
        data: dict[str, str] = {}
        while len(data) < limit:
            page, after = await self.data.scan(after, limit - len(data), pattern)
            data.update((k, e.value) for k, e in page if e.value is not None)
            if after is None:
                break
            await asyncio.sleep(0)  # a long run of tombstones or misses: let others in
        nxt = encode_cursor(after) if after is not None else None
        return json_response({"data": data, "next_cursor": nxt})

    # --- the task API ----------------------------------------------------------------------------

    async def task_set(self, request: web.Request) -> web.Response:
        q = request.rel_url.query
        key = self.kv.check_key(q.get("k"))
        value = self.kv.check_value(q.get("v"))
        written = await self.data.set(key, value)
        return json_response({"key": key, "value": value}, headers=written.headers)

    async def task_get(self, request: web.Request) -> web.Response:
        key = self.kv.check_key(request.rel_url.query.get("k"))
        entry = await self.data.get(key)
        if entry is None:
            raise NotFound(f"no such key: {key}")
        return json_response({"key": key, "value": entry.value})

    async def task_rm(self, request: web.Request) -> web.Response:
        key = self.kv.check_key(request.rel_url.query.get("k"))
        written = await self.data.delete(key)
        if written is None:
            raise NotFound(f"no such key: {key}")
        return json_response({"deleted": key}, headers=written.headers)

    async def task_clear(self, request: web.Request) -> web.Response:
        written = await self.data.clear()
        return json_response({"data": {}}, headers=written.headers)

    async def task_is(self, request: web.Request) -> web.Response:
        key = self.kv.check_key(request.rel_url.query.get("k"))
        if await self.data.get(key) is None:
            raise NotFound(f"no such key: {key}")
        return json_response({"key": key, "exists": True})

    async def task_get_keys(self, request: web.Request) -> web.StreamResponse:
        return await stream_listing(request, self.data, "keys", None, None, b"[", b"]")

    async def task_get_values(self, request: web.Request) -> web.StreamResponse:
        return await stream_listing(request, self.data, "values", None, None, b"[", b"]")

    async def task_get_all(self, request: web.Request) -> web.StreamResponse:
        return await stream_listing(request, self.data, "object", None, None, b"{", b"}")

    # --- operations ------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """200 "ok" when serving; 503 "syncing" while joining (balancers skip the node), with a
        "reason" when a seed refused us."""
        status = self.status
        body: dict[str, Any] = {
            "status": "ok" if status.ready else "syncing",
            "name": self.name,
            "members": status.alive_members(),
            "keys": await self.data.count(),
        }
        if not status.ready and status.join_problem is not None:
            body["reason"] = status.join_problem  # e.g. a seed refused us: the cluster keys differ
        return json_response(body, status=200 if status.ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics_source.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )
