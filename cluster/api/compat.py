"""Compatibility routes of the earlier stores, as thin adapters over the same `KV` calls.

Two earlier families live here: the named store (`/set/{name}?value=`, `/get/{name}`, `/get`)
whose `time` is when the value was written (the HLC's physical part), and the expiring store
(`/set?key=&value=&timeout=`, `/get?key=`, `/delete?key=`, `/all`) whose times are RFC 7231 dates.
`/set` and `/get` are shared with the task API: `cluster.api.router` dispatches them.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

from cluster.api.data import Data
from cluster.api.replies import json_response, key_from_path, stream_listing
from cluster.core.hlc import wall_seconds_of
from cluster.core.store import Entry
from cluster.errors import NotFound


def http_date(epoch: float) -> str:
    """RFC 7231 IMF-fixdate, e.g. 'Thu, 11 Jan 2024 21:09:26 GMT'."""
    return formatdate(epoch, usegmt=True)


class CompatApi:
    """The earlier stores' routes over the same key/value operations and replication."""

    def __init__(self, data: Data) -> None:
        self.data = data
        self.kv = data.kv  # validation and the clock

    def routes(self) -> list[web.RouteDef]:
        return [
            # Any characters, newlines too; `/get/` is the empty key (EMPTY_KEY), as `/keys/` is.
            web.get(r"/set/{name:[\s\S]*}", self.set_named),
            web.get(r"/get/{name:[\s\S]*}", self.get_named),
            web.get("/delete", self.delete_query),
            web.get("/all", self.all_timed),
        ]

    def _timed(self, entry: Entry) -> dict[str, Any]:
        return {"value": entry.value, "time": wall_seconds_of(entry.ts)}

    def _time_out(self, entry: Entry) -> str | None:
        return http_date(entry.expires) if entry.expires is not None else None

    # --- the named store ------------------------------------------------------------------------

    async def set_named(self, request: web.Request) -> web.Response:
        name = self.kv.check_key(key_from_path(request, "/set/"))
        value = self.kv.check_value(request.rel_url.query.get("value"))
        batch, headers = await self.data.set(name, value)
        return json_response(
            {name: {"value": value, "time": wall_seconds_of(batch.ts)}}, headers=headers
        )

    async def get_named(self, request: web.Request) -> web.Response:
        name = self.kv.check_key(key_from_path(request, "/get/"))
        entry = await self.data.get(name)
        if entry is None:
            raise NotFound(f"no such key: {name}")
        return json_response(self._timed(entry))

    async def get_all_timed(self, request: web.Request) -> web.StreamResponse:
        """`/get` with no parameters: every pair with its write time, streamed."""

        def render(page: list[tuple[str, Entry]]) -> bytes:
            return orjson.dumps({k: self._timed(e) for k, e in page})[1:-1]

        return await stream_listing(
            request, self.data, "object", None, None, b'{"data":{', b"}}", render
        )

    # --- the expiring store ---------------------------------------------------------------------

    async def set_query(self, request: web.Request) -> web.Response:
        q = request.rel_url.query
        key = self.kv.check_key(q.get("key"))
        value = self.kv.check_value(q.get("value"))
        ttl = self.kv.check_ttl(q.get("timeout"), "timeout")
        batch, headers = await self.data.set(key, value, ttl)
        expires = batch.mutations[0].expires
        return json_response(
            {
                "key": key,
                "message": "Value set successfully",
                "timeout": http_date(expires) if expires is not None else None,
                "value": value,
            },
            headers=headers,
        )

    async def get_query(self, request: web.Request) -> web.Response:
        key = self.kv.check_key(request.rel_url.query.get("key"))
        entry = await self.data.get(key)
        if entry is None:
            raise NotFound(f"no such key: {key}")
        return json_response(
            {
                "current_time": http_date(self.kv.clock.wall()),
                "time_out": self._time_out(entry),
                "value": entry.value,
            }
        )

    async def delete_query(self, request: web.Request) -> web.Response:
        key = self.kv.check_key(request.rel_url.query.get("key"))
        written = await self.data.delete(key)
        if written is None:
            raise NotFound(f"no such key: {key}")
        return json_response({"message": "Value deleted successfully"}, headers=written.headers)

    async def all_timed(self, request: web.Request) -> web.StreamResponse:
        def render(page: list[tuple[str, Entry]]) -> bytes:
            return orjson.dumps(
                {k: {"time_out": self._time_out(e), "value": e.value} for k, e in page}
            )[1:-1]

        return await stream_listing(request, self.data, "object", None, None, b"{", b"}", render)
