"""/cluster/status and the dashboard (/ui): what every node knows about the mesh, on one page.

A node answers /cluster/status from its own state (its membership view, its replication links, its
repairs, its clock, its load) plus the same figures from every peer that is up, asked over the
signed node-to-node route /internal/status with a short deadline: a peer that does not answer in
time is listed with the error, so a slow or dead member never holds the page up. /ui is one static
page (cluster/api/ui/index.html, no build step, no request to anywhere but the node) that polls
/cluster/status once a second.

The load figures come from `cluster.core.load.LoadHistory`, fed once a second by `sampler` from the
counters /metrics already keeps: the request path pays nothing for the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib import resources

import orjson
from aiohttp import web

from cluster.api.metrics import LATENCY_BUCKETS, Metrics
from cluster.api.ports import ClusterReport
from cluster.api.replies import json_response
from cluster.core.clock import Clock
from cluster.core.load import LoadHistory
from cluster.core.ports import PeerError, PeerTransport
from cluster.membership.members import UP
from cluster.net.peer_service import STATUS_PATH

logger = logging.getLogger(__name__)

PEER_DEADLINE = 0.8  # seconds: the page polls every second
SAMPLE_INTERVAL = 1.0


class StatusApi:
    def __init__(
        self,
        name: str,
        cluster: ClusterReport,
        metrics: Metrics,
        peers: PeerTransport,
        clock: Clock,
        admin_token: bool,
    ) -> None:
        self.name = name
        self.cluster = cluster
        self.metrics = metrics
        self.peers = peers
        self.clock = clock
        self.admin_token = admin_token
        self.history = LoadHistory(LATENCY_BUCKETS)
        self._page: bytes | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/cluster/status", self.status), web.get("/ui", self.ui)]

    def local(self) -> dict[str, object]:
        """This node's figures: what /internal/status answers a peer."""
        return {
            **self.cluster.report(),
            "load": self.history.load(self.clock.monotonic()).as_dict(),
        }

    def local_body(self) -> bytes:
        return orjson.dumps(self.local())

    async def _peer(self, name: str, address: str) -> dict[str, object]:
        try:
            body = await self.peers.request("GET", address, STATUS_PATH, within=PEER_DEADLINE)
            reply = orjson.loads(body)
        except PeerError as exc:
            return {"name": name, "address": address, "error": str(exc)}
        except orjson.JSONDecodeError:
            return {"name": name, "address": address, "error": "its status did not decode"}
        if not isinstance(reply, dict):
            return {"name": name, "address": address, "error": "its status is not an object"}
        return reply

    async def status(self, request: web.Request) -> web.Response:
        own = self.local()
        peers = [m for m in self.cluster.members() if m.name != self.name and m.state in UP]
        others = await asyncio.gather(*(self._peer(m.name, m.address) for m in peers))
        return json_response(
            {
                "served_by": self.name,
                "at": self.clock.wall(),
                "admin_token_required": self.admin_token,
                "members": own.pop("members"),
                "events": own.pop("events"),
                "nodes": [own, *others],
            }
        )

    async def ui(self, request: web.Request) -> web.Response:
        if self._page is None:
            self._page = resources.files("cluster.api.ui").joinpath("index.html").read_bytes()
        return web.Response(
            body=self._page,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def sampler(self, app: web.Application) -> AsyncIterator[None]:
        """Sample the load counters once a second while the application runs (cleanup_ctx)."""
        task = asyncio.create_task(self._sample_loop(), name=f"load-sampler-{self.name}")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _sample_loop(self) -> None:
        while True:
            try:
                requests, buckets = self.metrics.client_totals()
                self.history.sample(self.clock.monotonic(), requests, buckets)
            except Exception:  # a bug must not stop the sampler for good
                logger.exception("node=%s load sampling failed", self.name)
                self.metrics.internal_errors.inc()
            await asyncio.sleep(SAMPLE_INTERVAL)
