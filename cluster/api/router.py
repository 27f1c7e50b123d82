"""The one owner of `/set` and `/get`, which the task API and the earlier stores share.

The parameter names pick the shape: `/set?k=&v=` and `/get?k=` are the task API; `/set?key=&value=`
and `/get?key=` the expiring store; `/get` with no parameters the named store's listing.
"""

from __future__ import annotations

from aiohttp import web

from cluster.api.compat import CompatApi
from cluster.api.http import HttpApi


class SetGetRouter:
    def __init__(self, task: HttpApi, compat: CompatApi) -> None:
        self.task = task
        self.compat = compat

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/set", self.set), web.get("/get", self.get)]

    async def set(self, request: web.Request) -> web.StreamResponse:
        q = request.rel_url.query
        if "k" not in q and "key" in q:
            return await self.compat.set_query(request)
        return await self.task.task_set(request)

    async def get(self, request: web.Request) -> web.StreamResponse:
        q = request.rel_url.query
        if "k" not in q:
            if "key" in q:
                return await self.compat.get_query(request)
            if not q:
                return await self.compat.get_all_timed(request)
        return await self.task.task_get(request)
