"""A node's life in the mesh: join, sync, serve, leave, remove; and its background loops.

The composition root (app.py) builds the parts and hands them here; this module decides when the
node serves clients and keeps its replica healthy:

- join: push/pull with the seeds (retried with jittered backoff while none answers; a seed that
  refuses us, another cluster key above all, is reported as SEED_REFUSED, in /health and in the
  log), then sync: stream a snapshot from a live peer that serves, then serve;
- membership events start and stop replication to each peer;
- loops: TTL reclamation, tombstone purging (only once every member holds a tombstone), and
  anti-entropy with a random live peer (and at once with a peer back from the dead).

Everything reaches peers through the transports the root gave the parts, so the data-plane
simulation runs this module unchanged on a virtual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from cluster.config import Config
from cluster.core.addresses import parse_hostport
from cluster.core.backoff import backoff
from cluster.core.clock import Clock
from cluster.core.hlc import HybridClock
from cluster.core.ports import PeerError, PeerTransport
from cluster.core.store import Store
from cluster.errors import (
    ClockSkewError,
    DecodeError,
    NoSeedReachable,
    SeedRefused,
    StorageUnavailable,
)
from cluster.membership.swim import ALIVE, DEAD, LEFT, SUSPECT, Member, MemberEvent
from cluster.membership.timeline import Timeline
from cluster.net.gossip import Gossip
from cluster.replication.repair import RepairResult, catch_up, pull_snapshot, repair_with
from cluster.replication.sender import Replicator
from cluster.seeds import OwnAddress, Resolve, resolve_ips, seed_addresses
from cluster.storage.postgres import PgStore

logger = logging.getLogger(__name__)


class Lifecycle:
    """Join, sync, leave and remove, and the background loops, over the parts it is given."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        rng: random.Random,
        store: Store,
        hlc: HybridClock,
        replicator: Replicator,
        gossip: Gossip,
        peers: PeerTransport,
        *,
        on_serving: Callable[[], Awaitable[None]] | None = None,
        on_bug: Callable[[], None] | None = None,
        resolve: Resolve = resolve_ips,
        covered: int = 0,
        on_covered: Callable[[int], None] | None = None,
        db: PgStore | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.clock = clock
        self.rng = rng
        self.store = store
        self.hlc = hlc
        self.replicator = replicator
        self.gossip = gossip
        self.peers = peers
        self._on_serving = on_serving
        self._on_bug = on_bug
        self._resolve = resolve
        # A node told to join serves clients only once it has joined and streamed a snapshot.
        self.ready = not config.join
        # Why the last join failed, when a seed answered but refused us (shown by /health).
        self.join_problem: str | None = None
        self.repairs = 0
        self.repair_failures = 0
        self.last_repair: dict[str, object] | None = None  # the last round that moved data
        # Every peer's writes up to this timestamp are known to be here (the least stable point
        # the peers published to us): what a rejoining replica can trust of its own copy.
        self.covered = covered
        self._on_covered = on_covered
        # Database mode: the data is in the database, nothing to stream, replicate or repair;
        # the loops keep the database's TTLs, clears and tombstones instead.
        self.db = db
        self.last_sync: dict[str, object] | None = None  # how the last join synced, for /status
        self.timeline = Timeline()
        self.http_port = config.port
        self._join_task: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Future[object]] = []
        self._serving_started = False
        gossip.add_listener(self.on_member_event)

    # --- the membership view ---------------------------------------------------------------------

    def members(self) -> list[Member]:
        return self.gossip.members()

    def alive_members(self) -> int:
        """Members currently alive, this node included (a mesh of one until joined)."""
        return 1 + sum(1 for m in self.gossip.alive_peers() if m.name != self.name)

    def replication_stats(self) -> dict[str, float]:
        """Replication's figures (peers, queued writes, requests), for RESP's INFO."""
        return self.replicator.stats()

    def report(self) -> dict[str, object]:
        """This node's own figures for /cluster/status (the load is added by the api layer)."""
        wall, now = self.clock.wall(), self.clock.monotonic()
        wall_ms = int(wall * 1000)
        stats = self.store.stats()
        members = self.members()
        return {
            "name": self.name,
            "address": next((m.address for m in members if m.name == self.name), ""),
            "ready": self.ready,
            "keys": stats.keys,
            "tombstones": stats.tombstones,
            "peers": self.replicator.peer_report(wall_ms),
            "refused_for_skew": self.replicator.refused_batches,
            "repairs": self.repairs,
            "repair_failures": self.repair_failures,
            "last_repair": self.last_repair,
            "last_sync": self.last_sync,
            # How far the hybrid clock runs ahead of this machine's wall clock: it is pushed
            # ahead by peers whose clocks are ahead; 0 when every clock agrees.
            "hlc_ahead_ms": max(0, (self.hlc.last >> 16) - wall_ms),
            "members": [
                {**m.as_dict(), "for_s": round(max(0.0, now - m.since), 1)} for m in members
            ],
            "events": [e.as_dict() for e in self.timeline.entries(wall)],
        }

    def member_names(self) -> list[str]:
        """Every member that tombstone purging must wait for (self, live and down peers)."""
        return [m.name for m in self.gossip.members() if m.state != LEFT]

    def on_member_event(self, event: MemberEvent) -> None:
        """Replicate to members that are up; stop for those down, forget those gone."""
        self.timeline.record(event, self.clock.wall())
        if event.name == self.name:
            return
        if event.new_state in (ALIVE, SUSPECT):
            # A suspect may be alive: keep its queue going until it is declared dead.
            self.replicator.peer_up(event.name, event.address)
            if event.old_state == DEAD:  # back (a healed partition): repair now, not by chance
                self._spawn(self.repair_once(event.name))
        elif event.new_state == DEAD:
            self._spawn(self.replicator.peer_down(event.name))
        else:  # left, removed or forgotten: it no longer holds back tombstone purging
            self._spawn(self.replicator.peer_down(event.name, forget=True))

    def _spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._loops.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Future[object]) -> None:
        with contextlib.suppress(ValueError):
            self._loops.remove(task)

    # --- start and stop --------------------------------------------------------------------------

    async def start_loops(self) -> None:
        """Start the background loops; a node not told to join serves at once."""
        for loop in (self.expire_loop, self.tombstone_loop, self.antientropy_loop):
            self._loops.append(asyncio.create_task(loop(), name=f"{loop.__name__}-{self.name}"))
        if self.ready:
            await self._serving()

    async def stop_loops(self) -> None:
        tasks = list(self._loops)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()

    async def start_mesh(self, port: int | None = None) -> None:
        """Start gossip and, if told to, join in the background.

        `port`: the bound HTTP port when the configured one was 0 (gossip advertises it).
        """
        if port is not None:
            self.http_port = port
        await self.gossip.start(port=port)
        if self.config.join:
            self._join_task = asyncio.create_task(self._join_at_start(), name="join")

    async def stop_mesh(self, leave: bool = True) -> None:
        """Stop gossip: leave first if asked (peers see `left`, not a failure)."""
        if self._join_task is not None:
            self._join_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._join_task
            self._join_task = None
        if leave and len(self.gossip.members()) > 1:
            await self.gossip.leave()
            await asyncio.sleep(0.05)  # let the leave datagrams go out
        await self.gossip.stop()

    # --- join and sync ---------------------------------------------------------------------------

    async def _join_at_start(self) -> None:
        """--join: retry until a seed answers (seeds may start after us), then sync."""
        if not await self.seed_addresses(self.config.join):
            logger.warning(
                "node=%s --join names only this node itself: starting as a mesh of one", self.name
            )
            await self._serving()
            return
        attempt = 0
        while True:
            attempt += 1
            delay = backoff(attempt, 0.2, 5.0, self.rng)
            try:
                await self.join(self.config.join)
                return
            except SeedRefused as exc:
                # A misconfiguration, not a network problem: loud, and shown by /health.
                logger.error("node=%s %s; retrying in %.1fs", self.name, exc, delay)
            except NoSeedReachable as exc:
                logger.warning("node=%s %s; retrying in %.1fs", self.name, exc, delay)
            await asyncio.sleep(delay)

    async def join(self, seeds: Sequence[str]) -> None:
        """Join the mesh through `seeds`, then stream a snapshot.

        NoSeedReachable if none answers; SeedRefused if one answered but refused us. An answer
        from this node itself (a seed that is an alias of our own address) is not a join: the
        mesh must then hold some other member.
        """
        others = await self.seed_addresses(seeds)
        if not others:
            raise NoSeedReachable("the only seeds given are this node itself")
        joined = await self.gossip.join(others, timeout=self.config.join_timeout)
        if not joined or not any(m.name != self.name for m in self.gossip.alive_peers()):
            refused = self.gossip.refused_by
            if refused:
                self.join_problem = "; ".join(f"seed {s} {why}" for s, why in refused.items())
                raise SeedRefused(self.join_problem)
            raise NoSeedReachable(f"none of the seeds answered: {', '.join(others)}")
        self.join_problem = None
        await self.sync()

    async def seed_addresses(self, seeds: Sequence[str]) -> list[str]:
        """The addresses to contact for `seeds`, this node's own left out (see cluster.seeds)."""
        own = OwnAddress(
            self.config.host,
            parse_hostport(self.config.advertise, allow_zero=True)[0],
            self.http_port,
        )
        return await seed_addresses(seeds, own, self._resolve)

    async def sync(self) -> None:
        """Stream a snapshot from a live peer that serves, then serve clients.

        Retries until one snapshot completes: a node that streamed nothing must not serve its
        empty memory. A peer answering 503 is joining too and has no complete data to give. If
        every peer has been joining for `join_timeout` seconds, no member holds data (a mesh
        starting all at once, or restarting whole): serve.
        """
        if self.db is not None:
            await self._serving()  # the database holds the data: joined is synced
            return
        if len(self.store) == 0 and not self.store.stats().tombstones:
            self.ready = False  # empty (a fresh or restarted node): nothing to serve yet
        attempt = 0
        all_joining_since: float | None = None
        while True:
            peers = [m for m in self.gossip.alive_peers() if m.name != self.name]
            self.rng.shuffle(peers)
            joining = 0
            for peer in peers:
                started = self.clock.monotonic()
                try:
                    if self._holds_data():
                        got = await self._catch_up(peer.name, peer.address)
                    else:
                        got = await pull_snapshot(self.store, self.hlc, self.peers, peer.address)
                        self.last_sync = {"peer": peer.name, "full": True, "received": got}
                except PeerError as exc:
                    joining += exc.status == 503
                    logger.info("node=%s peer=%s no snapshot: %s", self.name, peer.name, exc)
                    continue
                except DecodeError as exc:
                    logger.warning("node=%s peer=%s bad snapshot: %s", self.name, peer.name, exc)
                    continue
                except ClockSkewError as exc:
                    logger.warning("node=%s peer=%s %s", self.name, peer.name, exc)
                    continue
                logger.info(
                    "node=%s peer=%s synced %d entries in %.2fs",
                    self.name,
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
                        "node=%s every member is joining: %s",
                        self.name,
                        "serving this replica's own copy; anti-entropy reconciles the copies"
                        if self._holds_data()
                        else "no one holds data yet; serving",
                    )
                    await self._serving()
                    return
            else:
                all_joining_since = None
            attempt += 1
            await asyncio.sleep(backoff(attempt, 0.1, 1.0, self.rng))

    def _holds_data(self) -> bool:
        return len(self.store) > 0 or self.store.stats().tombstones > 0

    async def _catch_up(self, name: str, address: str) -> int:
        """A replica that holds data already: what it missed, not everything (see catch_up)."""
        result = await catch_up(
            self.store,
            self.hlc,
            self.peers,
            address,
            self.covered,
            self.name,
            self.replicator.stable(),
        )
        self.last_sync = {"peer": name, **result.as_dict()}
        log = logger.warning if result.full else logger.info
        log("node=%s peer=%s %s", self.name, name, result.describe(self.covered))
        return result.received

    async def _serving(self) -> None:
        """Synced (or a mesh of one): serve clients.

        The other doors (the line protocol) open before the node reports ready, so that a client
        that saw /health answer 200 finds them all open.
        """
        if not self._serving_started and self._on_serving is not None:
            await self._on_serving()
        self._serving_started = True
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

    # --- background loops ------------------------------------------------------------------------

    def _bug(self, what: str) -> None:
        logger.exception("node=%s %s failed", self.name, what)
        if self._on_bug is not None:
            self._on_bug()

    async def expire_loop(self) -> None:
        """Reclaim expired entries in small bounded rounds (never stalls requests)."""
        if self.db is not None:
            await self.database_loop(self.db)
            return
        while True:
            await asyncio.sleep(self.config.expire_interval)
            try:
                self.reclaim_expired()
            except Exception:  # a bug must not stop TTL reclamation for good
                self._bug("TTL reclamation")

    async def database_loop(self, db: PgStore) -> None:
        """Database mode: the database's TTLs, clears and old tombstones, in bounded batches, by
        every node (see PgStore.housekeeping)."""
        while True:
            await asyncio.sleep(max(1.0, self.config.expire_interval))
            try:
                await db.housekeeping(self.clock.wall())
            except StorageUnavailable:
                continue  # the requests say so; the next round tries again
            except Exception:  # a bug must not stop the purges for good
                self._bug("database purge")

    def reclaim_expired(self) -> int:
        """One bounded round of TTL reclamation; the loop's next round continues a backlog."""
        return self.store.reclaim_expired(self.clock.wall(), budget=5000)

    async def tombstone_loop(self) -> None:
        """Purge tombstones every member has seen. A mesh of one has seen its own writes."""
        if self.db is not None:
            return  # database mode: database_loop purges them
        while True:
            await asyncio.sleep(self.config.tombstone_interval)
            if not self.ready:
                continue  # still streaming a snapshot: what is older than others' stable
                # points may not be here yet, so this node must not refuse it as stale
            try:
                self.store.purge_tombstones(self.purge_watermark())
                self.note_covered()
            except Exception:  # a bug must not stop purging for good
                self._bug("tombstone purge")

    def purge_watermark(self) -> int:
        return self.replicator.purge_watermark(self.member_names())

    def note_covered(self) -> None:
        """Move `covered` up to the least stable point every live peer has published to us
        (unchanged while one has not, or alone), and keep it with the data."""
        published = self.replicator.peer_stable
        peers = [m.name for m in self.gossip.alive_peers() if m.name != self.name]
        if not peers or any(p not in published for p in peers):
            return
        covered = min(published[p] for p in peers)
        if covered > self.covered:
            self.covered = covered
            if self._on_covered is not None:
                self._on_covered(covered)

    async def antientropy_loop(self) -> None:
        """Every interval, compare digests with one random live peer and repair differences."""
        if self.db is not None:
            return  # database mode: one copy, nothing to repair
        while True:
            await asyncio.sleep(self.config.antientropy_interval)
            if not self.ready:
                continue  # the snapshot being streamed brings everything; repair comes after
            try:
                await self.repair_once()
                self.note_covered()
            except Exception:  # a bug must not stop anti-entropy for good
                self._bug("anti-entropy round")

    async def repair_once(self, peer: str | None = None) -> RepairResult | None:
        """One anti-entropy round, with `peer` or a random live one."""
        links = list(self.replicator.links.values())
        if peer is not None:
            links = [link for link in links if link.name == peer]
        if not links:
            return None
        link = self.rng.choice(links)
        started = self.hlc.last
        try:
            result = await repair_with(
                self.store,
                self.hlc,
                self.peers,
                link.address,
                me=self.name,
                stable=self.replicator.stable(),
            )
        except (PeerError, DecodeError) as exc:
            self.repair_failures += 1
            logger.debug("node=%s peer=%s anti-entropy failed: %s", self.name, link.name, exc)
            return None
        if result.complete:
            link.state.repaired(started)
        if result.peer_stable is not None:
            self.replicator.note_peer_stable(link.name, result.peer_stable)
        if result.differing:
            self.repairs += 1
            self.last_repair = {
                "at": self.clock.wall(),
                "peer": link.name,
                "leaves": result.differing,
                "sent": result.sent,
                "received": result.received,
                "applied": result.applied,
                "bytes": result.bytes,
            }
            logger.info(
                "node=%s peer=%s anti-entropy (%d requests): %s",
                *(self.name, link.name, result.requests, self.last_repair),
            )
        return result
