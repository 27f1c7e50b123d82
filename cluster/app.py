"""Composition root: builds a node's parts from a Config, wires them, and runs them.

Only wiring lives here. Everything with a side effect (the clock, the random generator, the two
peer transports) is created here, or handed in by a test or the simulation, and passed down: each
face gets only the narrow interfaces it uses (`cluster.api.ports`), never the node. The decisions
live below: the node's life in `cluster.lifecycle`, the data in `cluster.core`, peers in
`cluster.replication`, `cluster.membership` and `cluster.net`, clients in `cluster.api`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from cluster.api.admin import AdminApi
from cluster.api.compat import CompatApi
from cluster.api.data import Data, DatabaseData, MemoryData
from cluster.api.http import HttpApi
from cluster.api.internal import InternalApi
from cluster.api.line.server import LineOptions, LineServer
from cluster.api.listener import listen
from cluster.api.metrics import Metrics, Reading, readings
from cluster.api.middleware import Guard
from cluster.api.ports import Writes
from cluster.api.resp.server import RespOptions, RespServer
from cluster.api.router import SetGetRouter
from cluster.api.status import StatusApi
from cluster.config import Config
from cluster.core.clock import Clock
from cluster.core.hlc import HybridClock
from cluster.core.kv import KV, Limits
from cluster.core.ports import PeerTransport, Transport
from cluster.core.store import Store
from cluster.errors import StorageUnavailable
from cluster.lifecycle import Lifecycle
from cluster.net.clock import SystemClock
from cluster.net.gossip import Gossip
from cluster.net.http_peers import PeerClient
from cluster.net.peer_service import PeerService
from cluster.net.udp import UdpTransport
from cluster.replication.sender import Replicator
from cluster.storage import disk
from cluster.storage.journal import Journal
from cluster.storage.postgres import PgStore
from cluster.storage.writes import DurableWrites

logger = logging.getLogger(__name__)


class Node:
    """One node's parts, wired together. No sockets of its own: the transports are given.

    `datagrams` and `peers` default to UDP and HTTP (bound by `serve`); the simulation passes
    in-memory ones and drives `lifecycle` directly.
    """

    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        *,
        datagrams: Transport | None = None,
        peers: PeerTransport | None = None,
    ) -> None:
        self.config = config = config.validate()
        self.clock: Clock = clock if clock is not None else SystemClock(config.clock_offset)
        self.rng = rng if rng is not None else random.Random(config.seed)
        self.store = Store()
        self.hlc = HybridClock(self.clock.wall, config.max_clock_offset)
        # --data-dir: the replica comes back from disk before anything else touches the store,
        # and from then on every change the store keeps goes to the journal.
        self.journal: Journal | None = None
        marks = disk.Marks()
        if config.data_dir:
            directory = Path(config.data_dir)
            conn = disk.load(directory, config.fsync, self.store, repair=config.repair_data)
            marks = disk.marks_of(conn)
            self.hlc.restored(self.store.restored_max_ts)
            self.journal = Journal(conn, config.fsync, config.name, directory)
            self.store.sink = self.journal
        self.kv = KV(
            self.store,
            self.hlc,
            self.clock,
            config.name,
            Limits(config.max_key_length, config.max_value_length, config.max_ttl),
        )
        if self.journal is not None:
            self.kv.writable = self.journal.check_writable
        self.client: PeerClient | None = None
        if peers is None:
            peers = self.client = PeerClient(config.name, config.cluster_key, self.clock.wall)
        self.peers = peers
        self.udp: UdpTransport | None = None
        if datagrams is None:
            datagrams = self.udp = UdpTransport(
                config.name, self.clock, lambda data, source: self.gossip.on_datagram(data, source)
            )
        self.replicator = Replicator(
            config.name,
            self.store,
            self.hlc,
            peers,
            rng=random.Random(self.rng.random()),
            sync=config.write_mode == "sync",
            timeout=config.replication_timeout,
            max_hints=config.max_hints,
        )
        # What the faces hand a write to once applied: with a disk copy, it is acknowledged
        # only after its commit too.
        self.writes: Writes = (
            self.replicator
            if self.journal is None
            else DurableWrites(self.journal, self.replicator)
        )
        # Where the HTTP faces read and write (cluster.api.data): the mesh, or a database.
        self.db: PgStore | None = None
        self.data: Data = MemoryData(self.kv, self.writes)
        if config.database:
            self.db = PgStore(
                config.store, config.store_pool_size, rng=random.Random(self.rng.random())
            )
            self.data = DatabaseData(self.kv, self.db)
        self.gossip = Gossip(
            config.name,
            config.advertise,
            self.clock,
            self.rng,
            config.cluster_key,
            config.gossip_params(),
            datagrams,
            peers,
        )
        self.metrics = Metrics(self.readings)
        self.line_server: LineServer | None = None
        self.resp_server: RespServer | None = None
        self.lifecycle = Lifecycle(
            config,
            self.clock,
            self.rng,
            self.store,
            self.hlc,
            self.replicator,
            self.gossip,
            peers,
            on_serving=self._open_doors,
            on_bug=self.metrics.internal_errors.inc,
            db=self.db,
            covered=marks.covered,
            on_covered=self._keep_covered,
        )
        self.peer_service = PeerService(
            config.name,
            config.cluster_key,
            self.clock,
            self.store,
            self.hlc,
            self.replicator,
            self.gossip,
            lambda: self.lifecycle.ready,
            lambda: self.status.local_body(),
            None if self.journal is None else self.journal.check_writable,
        )
        self.status = StatusApi(
            config.name,
            self.lifecycle,
            self.metrics,
            peers,
            self.clock,
            admin_token=config.admin_token is not None,
        )

    def _keep_covered(self, covered: int) -> None:
        if self.journal is not None:
            self.journal.mark("covered", covered)

    async def bind_doors(self) -> None:
        """Bind the line protocol's and RESP's ports, accepting nothing yet.

        At start-up, so that a port already in use stops the node with a clear message (as the
        HTTP port does), whether or not it joins a mesh; `_open_doors` starts accepting later.
        """
        config = self.config
        if config.tcp_port != 0 and self.line_server is None:
            self.line_server = await listen(
                self.make_line_server(), config.host, config.tcp_port, serving=False
            )
        if config.database and config.resp_port != 0 and self.resp_server is None:
            logger.warning(
                "node=%s RESP is not served in database mode yet: port %d stays closed",
                config.name,
                config.resp_port,
            )
        elif config.resp_port != 0 and self.resp_server is None:
            self.resp_server = await listen(
                self.make_resp_server(), config.host, config.resp_port, serving=False
            )

    async def _open_doors(self) -> None:
        """Start accepting on the line protocol and RESP in one step, right before the node
        reports ready (see Lifecycle._serving): while it joins, nginx's stream proxy (which
        cannot see a 503) must send new clients to the other nodes, and a client that saw
        /health answer 200 must find every door open."""
        await self.bind_doors()
        for server in (self.line_server, self.resp_server):
            if server is not None:
                server.begin_serving()

    def make_resp_server(self, writes: Writes | None = None) -> RespServer:
        """The RESP server over this node (writes replicate unless told otherwise)."""
        config = self.config
        options = RespOptions(
            eager=config.write_mode == "async",
            password=config.resp_password,
            max_request=config.resp_max_bytes,
            idle_timeout=config.line_idle_timeout,
        )
        writes = writes if writes is not None else self.writes
        return RespServer(config.name, self.kv, writes, self.lifecycle, self.metrics, options)

    def make_line_server(self, writes: Writes | None = None) -> LineServer:
        """The line-protocol server over this node (writes replicate unless told otherwise)."""
        config = self.config
        options = LineOptions(
            eager=config.write_mode == "async",
            txn_max_writes=config.txn_max_writes,
            max_line=config.line_max_bytes,
            idle_timeout=config.line_idle_timeout,
        )
        writes = writes if writes is not None else self.writes
        remote = self.data if config.database else None
        return LineServer(config.name, self.kv, writes, self.metrics, options, remote)

    def readings(self) -> list[Reading]:
        """Every component's counters and gauges, read when /metrics is scraped."""
        stats = self.store.stats()
        life, service = self.lifecycle, self.peer_service
        out = [
            Reading("store_keys", "stored keys that are not tombstones", stats.keys),
            Reading("store_tombstones", "tombstones awaiting purge", stats.tombstones),
            Reading("store_expiring", "entries with a pending TTL", stats.expiring),
            Reading(
                "store_refused_stale_writes",
                "writes older than purged tombstones, refused (duplicates, replays)",
                stats.refused_stale,
                counter=True,
            ),
            Reading(
                "membership_alive_members", "members alive, self included", life.alive_members()
            ),
            Reading(
                "hlc_last_wall_ms", "physical part of the last HLC timestamp", self.hlc.last >> 16
            ),
            Reading(
                "antientropy_repairs",
                "anti-entropy rounds that found differences",
                life.repairs,
                True,
            ),
            Reading(
                "antientropy_failures",
                "anti-entropy rounds that failed",
                life.repair_failures,
                True,
            ),
            Reading(
                "internal_rejected_unauthenticated",
                "node-to-node requests refused for a bad signature",
                service.rejected_unauthenticated,
                True,
            ),
            Reading(
                "internal_rejected_malformed",
                "node-to-node requests refused as malformed",
                service.rejected_malformed,
                True,
            ),
        ]
        out += readings(self.replicator.stats()) + readings(self.gossip.counters())
        if self.udp is not None:
            out += [
                Reading(
                    "gossip_udp_sent",
                    "datagrams sent on the UDP socket",
                    self.udp.stats.datagrams_sent,
                    True,
                ),
                Reading(
                    "gossip_udp_send_errors",
                    "UDP sends that failed (unresolvable names, ICMP port unreachable)",
                    self.udp.stats.send_errors,
                    True,
                ),
            ]
        return out

    async def start_mesh(self, port: int) -> None:
        """Join the mesh's traffic: bind gossip's UDP on the HTTP port's number, start gossip
        and, if told to, join. `port`: the HTTP port actually bound."""
        if self.udp is not None:
            await self.udp.bind(self.config.host, port)
        await self.lifecycle.start_mesh(port)

    async def stop_mesh(self, leave: bool = True) -> None:
        """Leave (if asked: peers see `left`, not a failure) and stop gossip."""
        await self.lifecycle.stop_mesh(leave=leave)
        if self.udp is not None:
            await self.udp.close()

    async def background(self, app: web.Application) -> AsyncIterator[None]:
        """The parts that live as long as the HTTP application (aiohttp cleanup_ctx)."""
        if self.journal is not None:
            self.journal.start()
        if self.db is not None:
            await self._open_database(self.db)
        if self.client is not None:
            await self.client.start()
        await self.bind_doors()
        await self.lifecycle.start_loops()
        yield
        for server in (self.line_server, self.resp_server):
            if server is not None:
                await server.close()  # its pending writes finish replicating first
        self.line_server = self.resp_server = None
        await self.lifecycle.stop_loops()
        await self.replicator.close()
        if self.client is not None:
            await self.client.close()
        if self.journal is not None:
            await self.journal.close()  # last: everything above may still have written
        if self.db is not None:
            await self.db.close()

    async def _open_database(self, db: PgStore) -> None:
        """Connect and create the schema; a database that is not there yet is no reason to stop:
        requests answer STORAGE_UNAVAILABLE until it is, and the pool connects then."""
        try:
            await db.open()
            logger.info("node=%s data in the database at %s", self.config.name, db.where)
        except StorageUnavailable as exc:
            logger.error("node=%s %s", self.config.name, exc)


def build_app(node: Node) -> web.Application:
    """The node's HTTP application: every face, each given only what it needs, each route
    wrapped by the one guard (errors as JSON, readiness gate, metrics: cluster.api.middleware)."""
    config = node.config
    status = node.lifecycle
    app = web.Application(client_max_size=config.max_body_bytes)
    guard = Guard(config.name, status, node.metrics, node.clock, config.max_body_bytes)
    api = HttpApi(config.name, node.data, status, node.metrics)
    compat = CompatApi(node.data)
    durable = None if node.journal is None else node.journal.synced
    for routes in (
        api.routes(),
        compat.routes(),
        SetGetRouter(api, compat).routes(),
        AdminApi(config.name, node.lifecycle, config.admin_token).routes(),
        InternalApi(node.peer_service, durable).routes(),
        node.status.routes(),
    ):
        app.add_routes(guard.routes(routes))
    app.add_routes(guard.fallbacks())
    app.cleanup_ctx.append(node.background)
    app.cleanup_ctx.append(node.status.sampler)
    return app


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Run a node until SIGTERM/SIGINT (or `stop` is set), then shut down cleanly."""
    node = Node(config)
    config = node.config
    app = build_app(node)
    # A request line must hold the longest valid key and value, percent-encoded (12 bytes for a
    # 4-byte UTF-8 character), so that limits are answered by our JSON errors, not the parser's.
    max_line = max(8190, 12 * (config.max_key_length + config.max_value_length) + 1024)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, max_line_size=max_line, max_field_size=max_line
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    try:
        await site.start()
        port = bound_port(runner, config.port)
        await node.start_mesh(port)
    except OSError:
        await runner.cleanup()
        raise
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info(
        "node=%s serving HTTP on %s:%d (write mode %s)",
        config.name,
        config.host,
        port,
        config.write_mode,
    )
    try:
        await stop.wait()
        logger.info("node=%s shutting down", config.name)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await node.stop_mesh(leave=True)  # peers see `left`, not a failure
        await runner.cleanup()


def bound_port(runner: web.AppRunner, configured: int) -> int:
    """The HTTP port actually bound (the configured one, or the one picked for port 0)."""
    if configured:
        return configured
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the HTTP site has no bound address")
