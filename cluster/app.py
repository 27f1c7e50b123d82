"""Composition root: builds a node from a Config and runs it.

Everything with a side effect (the clock, the random generator, later the transport) is created
here and passed down, so tests can build a node with a FakeClock and a seeded Random. Background
loops (TTL reclamation, tombstone purge) and the line-protocol server start and stop with the
aiohttp application through its cleanup_ctx.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from cluster.api.admin import AdminApi
from cluster.api.compat import CompatApi
from cluster.api.http import HttpApi
from cluster.api.internal import InternalApi
from cluster.api.line.server import LineServer, start_line_server
from cluster.api.metrics import Metrics
from cluster.config import Config, ConfigError, split_hostport
from cluster.core.clock import Clock
from cluster.core.hlc import HybridClock
from cluster.core.kv import KV, Batch, Limits
from cluster.core.store import Store
from cluster.errors import NoSeedReachable, SeedRefused
from cluster.membership.suspicion import GossipParams
from cluster.membership.swim import ALIVE, DEAD, LEFT, SUSPECT, Member, MemberEvent
from cluster.net.clock import SystemClock
from cluster.net.gossip import GOSSIP_KEY, PUSH_PULL_ROUTE, Gossip, handle_push_pull
from cluster.net.http_peers import PeerClient, PeerError
from cluster.replication import antientropy
from cluster.replication.sender import Replicator

logger = logging.getLogger(__name__)

NODE_KEY: web.AppKey[Node] = web.AppKey("node")


class Node:
    """One node's state and services, wired together; no sockets of its own."""

    def __init__(
        self, config: Config, clock: Clock | None = None, rng: random.Random | None = None
    ):
        self.config = config.validate()
        self.clock: Clock = clock if clock is not None else SystemClock(config.clock_offset)
        self.rng = rng if rng is not None else random.Random(config.seed)
        self.store = Store()
        self.hlc = HybridClock(self.clock.wall, config.max_clock_offset)
        self.kv = KV(
            self.store,
            self.hlc,
            self.clock,
            self.config.name,
            Limits(config.max_key_length, config.max_value_length, config.max_ttl),
        )
        self.client = PeerClient(self.config.name, config.cluster_key, self.clock.wall)
        self.replicator = Replicator(
            self.config.name,
            self.store,
            self.hlc,
            self.client,
            sync=config.write_mode == "sync",
            timeout=config.replication_timeout,
            max_hints=config.max_hints,
        )
        self.gossip = Gossip(
            self.config,
            self.clock,
            self.rng,
            self.config.name,
            self.config.advertise,
            config.cluster_key,
            gossip_params(self.config),
        )
        self.gossip.add_listener(self.on_member_event)
        self.metrics = Metrics(self.gauges)
        self.api = HttpApi(self)
        self.compat = CompatApi(self, self.api)
        self.internal = InternalApi(self)
        self.admin = AdminApi(self)
        self.repairs = 0
        self.repair_failures = 0
        # A node told to join serves clients only once it has joined and streamed a snapshot.
        self.ready = not self.config.join
        # Why the last join failed, when a seed answered but refused us (shown by /health).
        self.join_problem: str | None = None
        self._join_task: asyncio.Task[None] | None = None
        self._line_server: LineServer | None = None
        self.http_port = self.config.port

    # --- membership ----------------------------------------------------------------------------

    def members(self) -> list[Member]:
        return self.gossip.members()

    def alive_members(self) -> int:
        """Members currently alive, this node included (a mesh of one until joined)."""
        others = sum(
            1 for m in self.gossip.members() if m.state == ALIVE and m.name != self.config.name
        )
        return 1 + others  # this node serves, whatever its own entry says after a leave

    def on_member_event(self, event: MemberEvent) -> None:
        """Replicate to members that are up; stop for those down, forget those gone."""
        if event.name == self.config.name:
            return
        if event.new_state in (ALIVE, SUSPECT):
            # A suspect may be alive: keep its queue going until it is declared dead.
            self.replicator.peer_up(event.name, event.address)
        elif event.new_state == DEAD:
            asyncio.get_running_loop().create_task(self.replicator.peer_down(event.name))
        else:  # left, removed or forgotten: it no longer holds back tombstone purging
            asyncio.get_running_loop().create_task(
                self.replicator.peer_down(event.name, forget=True)
            )

    async def start_mesh(self, http_port: int) -> None:
        """Start gossip (UDP on the HTTP port) and, if told to, join in the background."""
        self.http_port = http_port
        await self.gossip.start(port=http_port)
        if self.config.join:
            self._join_task = asyncio.create_task(self._join_at_start(), name="join")

    async def stop_mesh(self, leave: bool = True) -> None:
        if self._join_task is not None:
            self._join_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._join_task
        if leave and self.gossip.members() and len(self.gossip.members()) > 1:
            await self.gossip.leave()
            await asyncio.sleep(0.05)  # let the leave datagrams go out
        await self.gossip.stop()

    async def _join_at_start(self) -> None:
        """--join: retry until a seed answers (seeds may start after us), then sync."""
        seeds = [s for s in self.config.join if not await self._is_self(s)]
        if not seeds:
            logger.warning(
                "node=%s --join names only this node itself: starting as a mesh of one",
                self.config.name,
            )
            await self._serving()
            return
        delay = 0.2
        while True:
            try:
                await self.join(seeds)
                return
            except SeedRefused as exc:
                # A misconfiguration, not a network problem: loud, and shown by /health.
                logger.error("node=%s %s; retrying in %.1fs", self.config.name, exc, delay)
            except NoSeedReachable as exc:
                logger.warning("node=%s %s; retrying in %.1fs", self.config.name, exc, delay)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    async def join(self, seeds: list[str]) -> None:
        """Join the mesh through `seeds`, then stream a snapshot; NoSeedReachable if none answer.

        An answer from this node itself (a seed that is an alias of our own address) is not a
        join: the mesh must then hold some other member.
        """
        others = [s for s in seeds if not await self._is_self(s)]
        if not others:
            raise NoSeedReachable("the only seeds given are this node itself")
        joined = await self.gossip.join(others, timeout=self.config.join_timeout)
        if not joined or not any(m.name != self.config.name for m in self.gossip.alive_peers()):
            refused = self.gossip.refused_by
            if refused:
                self.join_problem = "; ".join(f"seed {s} {why}" for s, why in refused.items())
                raise SeedRefused(self.join_problem)
            raise NoSeedReachable(f"none of the seeds answered: {', '.join(others)}")
        self.join_problem = None
        await self.sync()

    async def _is_self(self, seed: str) -> bool:
        """Does `seed` ("host:port") name this very node (same port, one of our addresses)?"""
        try:
            host, port = split_hostport(seed)
        except ConfigError:
            return False
        if port != self.http_port:
            return False
        ours = {self.config.host, split_hostport(self.config.advertise)[0]}
        if host in ours:
            return True
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port)
        except OSError:
            return False
        ips = {str(info[4][0]) for info in infos}
        if ips & ours:
            return True
        # Bound to loopback or to every address: a loopback alias (localhost) is us too.
        loopback = any(ip.startswith("127.") or ip == "::1" for ip in ips)
        return loopback and self.config.host in ("127.0.0.1", "localhost", "0.0.0.0", "::")

    async def sync(self) -> None:
        """Stream a snapshot from a live peer that serves, then serve clients.

        Retries until one snapshot completes: a node that streamed nothing must not serve its
        empty memory. A peer answering 503 is joining too and has no complete data to give. If
        every peer has been joining for `join_timeout` seconds, no member holds data (a mesh
        starting all at once, or restarting whole): serve.
        """
        if len(self.store) == 0 and not self.store.stats().tombstones:
            self.ready = False  # empty (a fresh or restarted node): nothing to serve yet
        delay = 0.1
        all_joining_since: float | None = None
        while True:
            peers = [m for m in self.gossip.alive_peers() if m.name != self.config.name]
            self.rng.shuffle(peers)
            joining = 0
            for peer in peers:
                started = self.clock.monotonic()
                try:
                    got = await antientropy.pull_snapshot(
                        self.store, self.hlc, self.client, peer.address
                    )
                except PeerError as exc:
                    joining += exc.status == 503
                    logger.info("node=%s peer=%s no snapshot: %s", self.config.name, peer.name, exc)
                    continue
                except antientropy.DecodeError as exc:
                    logger.warning(
                        "node=%s peer=%s bad snapshot: %s", self.config.name, peer.name, exc
                    )
                    continue
                logger.info(
                    "node=%s peer=%s synced %d entries in %.2fs",
                    self.config.name,
                    peer.name,
                    got,
                    self.clock.monotonic() - started,
                )
                await self._serving()
                return
            now = self.clock.monotonic()
            if joining == len(peers):
                all_joining_since = now if all_joining_since is None else all_joining_since
                if now - all_joining_since >= self.config.join_timeout:
                    logger.info(
                        "node=%s every member is joining: no one holds data yet; serving",
                        self.config.name,
                    )
                    await self._serving()
                    return
            else:
                all_joining_since = None
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)

    async def _serving(self) -> None:
        """Synced (or a mesh of one): serve clients, over HTTP and the line protocol.

        The line protocol listens before the node reports ready, so that a client that saw
        /health answer 200 finds both doors open.
        """
        if self.config.tcp_port != 0 and self._line_server is None:
            self._line_server = await start_line_server(
                self, self.config.host, self.config.tcp_port
            )
        self.ready = True

    async def leave(self) -> None:
        """Leave the mesh (peers see `left`) and carry on as a mesh of one."""
        await self.gossip.leave()
        await self.replicator.close()

    async def remove(self, name: str) -> bool:
        """Remove a member everywhere; False if there is no such member."""
        if not self.gossip.remove(name):
            return False
        await self.replicator.peer_down(name, forget=True)
        return True

    def has_peers(self) -> bool:
        """Must a write be handed to replication at all? Not in a mesh of one."""
        return bool(self.replicator.links)

    async def replicate(self, batch: Batch) -> tuple[int, int]:
        """Send a local write to the peers; returns (nodes that applied it, nodes expected)."""
        return await self.replicator.replicate(batch)

    def member_names(self) -> list[str]:
        """Every member that tombstone purging must wait for (self, live and down peers)."""
        return [m.name for m in self.gossip.members() if m.state != LEFT]

    def gauges(self) -> dict[str, tuple[str, float]]:
        stats = self.store.stats()
        return {
            "store_keys": ("stored keys that are not tombstones", stats.keys),
            "store_tombstones": ("tombstones awaiting purge", stats.tombstones),
            "store_expiring": ("entries with a pending TTL", stats.expiring),
            "store_refused_stale_writes": (
                "writes older than purged tombstones, refused (duplicates, replays)",
                stats.refused_stale,
            ),
            "membership_alive_members": ("members alive, self included", self.alive_members()),
            "hlc_last_wall_ms": ("physical part of the last HLC timestamp", self.hlc.last >> 16),
            "antientropy_repairs": ("anti-entropy rounds that found differences", self.repairs),
            "antientropy_failures": ("anti-entropy rounds that failed", self.repair_failures),
            "internal_rejected_unauthenticated": (
                "node-to-node requests refused for a bad signature",
                self.internal.rejected_unauthenticated,
            ),
            "internal_rejected_malformed": (
                "node-to-node requests refused as malformed",
                self.internal.rejected_malformed,
            ),
        } | {
            name: (name.replace("_", " "), v)
            for name, v in (self.replicator.stats() | self.gossip.counters()).items()
        }

    # --- background loops ------------------------------------------------------------------------

    async def expire_loop(self) -> None:
        """Reclaim expired entries in small bounded rounds (never stalls requests)."""
        while True:
            await asyncio.sleep(self.config.expire_interval)
            try:
                self.reclaim_expired()
            except Exception:  # a bug must not stop TTL reclamation for good
                logger.exception("node=%s TTL reclamation failed", self.config.name)
                self.metrics.internal_errors.inc()

    def reclaim_expired(self) -> int:
        """One bounded round of TTL reclamation; the loop's next round continues a backlog."""
        return self.store.reclaim_expired(self.clock.wall(), budget=5000)

    async def tombstone_loop(self) -> None:
        """Purge tombstones every member has seen. A mesh of one has seen its own writes."""
        while True:
            await asyncio.sleep(self.config.tombstone_interval)
            if not self.ready:
                continue  # still streaming a snapshot: what is older than others' stable
                # points may not be here yet, so this node must not refuse it as stale
            try:
                self.store.purge_tombstones(self.purge_watermark())
            except Exception:  # a bug must not stop purging for good
                logger.exception("node=%s tombstone purge failed", self.config.name)
                self.metrics.internal_errors.inc()

    def purge_watermark(self) -> int:
        return self.replicator.purge_watermark(self.member_names())

    async def antientropy_loop(self) -> None:
        """Every interval, compare digests with one random live peer and repair differences."""
        while True:
            await asyncio.sleep(self.config.antientropy_interval)
            if not self.ready:
                continue  # the snapshot being streamed brings everything; repair comes after
            try:
                await self.repair_once()
            except Exception:  # a bug must not stop anti-entropy for good
                logger.exception("node=%s anti-entropy round failed", self.config.name)
                self.metrics.internal_errors.inc()

    async def repair_once(self) -> antientropy.RepairResult | None:
        links = list(self.replicator.links.values())
        if not links:
            return None
        link = self.rng.choice(links)
        started = self.hlc.last
        try:
            result = await antientropy.repair_with(
                self.store,
                self.hlc,
                self.client,
                link.address,
                me=self.config.name,
                stable=self.replicator.stable(),
            )
        except (PeerError, antientropy.DecodeError) as exc:
            self.repair_failures += 1
            logger.debug(
                "node=%s peer=%s anti-entropy failed: %s", self.config.name, link.name, exc
            )
            return None
        if result.complete:
            link.repaired(started)
        if result.peer_stable is not None:
            self.replicator.note_peer_stable(link.name, result.peer_stable)
        if result.differing:
            self.repairs += 1
            logger.info(
                "node=%s peer=%s anti-entropy: %d buckets differed, sent %d, got %d, applied %d",
                self.config.name,
                link.name,
                result.differing,
                result.sent,
                result.received,
                result.applied,
            )
        return result

    async def background(self, app: web.Application) -> AsyncIterator[None]:
        # The line protocol listens once the node serves: while it joins, nginx's stream proxy
        # (which cannot see a 503) must send new clients to the other nodes.
        if self.ready:
            await self._serving()
        await self.client.start()
        tasks = [
            asyncio.create_task(self.expire_loop(), name="expire"),
            asyncio.create_task(self.tombstone_loop(), name="tombstones"),
            asyncio.create_task(self.antientropy_loop(), name="antientropy"),
        ]
        yield
        if self._line_server is not None:
            await self._line_server.close()  # its pending writes finish replicating first
            self._line_server = None
        await self.replicator.close()
        await self.client.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def build_app(node: Node) -> web.Application:
    app = web.Application(
        client_max_size=node.config.max_body_bytes, middlewares=[node.api.middleware]
    )
    app[NODE_KEY] = node
    app.add_routes(node.api.routes())
    app.add_routes(node.compat.routes())
    app.add_routes(node.internal.routes())
    app.add_routes(node.admin.routes())
    app[GOSSIP_KEY] = node.gossip
    app.router.add_post(PUSH_PULL_ROUTE, handle_push_pull)
    app.cleanup_ctx.append(node.background)
    return app


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Run a node until SIGTERM/SIGINT (or `stop` is set), then shut down cleanly."""
    node = Node(config)
    app = build_app(node)
    # A request line must hold the longest valid key and value, percent-encoded (12 bytes for a
    # 4-byte UTF-8 character), so that limits are answered by our JSON errors, not the parser's.
    max_line = max(8190, 12 * (node.config.max_key_length + node.config.max_value_length) + 1024)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, max_line_size=max_line, max_field_size=max_line
    )
    await runner.setup()
    site = web.TCPSite(runner, node.config.host, node.config.port, reuse_address=True)
    try:
        await site.start()
        await node.start_mesh(bound_port(runner, node.config.port))
    except OSError:
        await runner.cleanup()
        raise
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info(
        "node=%s serving HTTP on %s:%d (write mode %s)",
        node.config.name,
        node.config.host,
        node.config.port,
        node.config.write_mode,
    )
    try:
        await stop.wait()
        logger.info("node=%s shutting down", node.config.name)
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


def gossip_params(config: Config) -> GossipParams:
    """Membership timing from the node's options; the rest follows from the probe interval."""
    return GossipParams(
        probe_interval=config.probe_interval,
        probe_timeout=config.probe_timeout,
        suspicion_mult=config.suspicion_mult,
        gossip_interval=config.gossip_interval,
        push_pull_interval=config.push_pull_interval,
        reconnect_interval=config.push_pull_interval,
        gossip_to_dead_time=30 * config.probe_interval,
        push_pull_timeout=max(1.0, 10 * config.probe_interval),
    )
