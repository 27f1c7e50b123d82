"""The /cluster/* routes: the member list, and join, leave and remove.

Mutating calls need `Authorization: Bearer TOKEN` when the node runs with `--admin-token`
(else 401 UNAUTHORIZED); the member list is public, like Consul's catalog.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import web

from cluster.api.ports import ClusterAdmin
from cluster.api.replies import json_response, parse_json
from cluster.errors import BadRequest, NotFound, Unauthorized

logger = logging.getLogger(__name__)


class AdminApi:
    def __init__(self, name: str, cluster: ClusterAdmin, admin_token: str | None) -> None:
        self.name = name
        self.cluster = cluster
        self.admin_token = admin_token

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/cluster/members", self.members),
            web.post("/cluster/join", self.join),
            web.post("/cluster/leave", self.leave),
            web.post("/cluster/remove", self.remove),
        ]

    def _authorize(self, request: web.Request) -> None:
        token = self.admin_token
        if token is None:
            return
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("this call needs Authorization: Bearer <admin token>")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body = parse_json(await request.read())
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object", "INVALID_BODY")
        return body

    def _member_list(self) -> list[dict[str, str | int]]:
        return [m.as_dict() for m in self.cluster.members()]

    async def members(self, request: web.Request) -> web.Response:
        return json_response({"self": self.name, "members": self._member_list()})

    async def join(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._body(request)
        seeds = body.get("seeds")
        if (
            not isinstance(seeds, list)
            or not seeds
            or not all(isinstance(s, str) and s.count(":") >= 1 for s in seeds)
        ):
            raise BadRequest('seeds must be a non-empty list of "host:port"', "INVALID_BODY")
        await self.cluster.join(seeds)
        return json_response({"members": self._member_list()})

    async def leave(self, request: web.Request) -> web.Response:
        self._authorize(request)
        await self.cluster.leave()
        return json_response({"left": True, "members": self._member_list()})

    async def remove(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest('the body must be {"name": "<member name>"}', "INVALID_BODY")
        if name == self.name:
            raise BadRequest("a node cannot remove itself; use /cluster/leave", "INVALID_PARAMETER")
        if not await self.cluster.remove(name):
            raise NotFound(f"no such member: {name}")
        return json_response({"removed": name, "members": self._member_list()})
