"""Replication of local writes to every peer, and the merge of writes from peers.

Outbound, each peer has a `PeerLink`: a FIFO queue of batches and one request in flight. Under
load the queue fills while a request is out, so the next request carries many batches (batching
by back-pressure, as Kafka producers do); when idle each write goes out at once. A peer that does
not answer keeps a bounded queue (the hints) that is retried with backoff; past the bound, or
when the peer is declared dead, the hints are dropped and anti-entropy repairs the difference.

In `sync` mode the client's answer waits until every live peer acknowledged the batch or the
replication timeout passed (the write stays applied here; the missing peers get it later).

Tombstone purging needs proof that every member has a tombstone. Each link is FIFO, so when a
peer acknowledges a request it has every earlier batch of ours: `acked_upto` is the greatest
timestamp of ours the peer is known to hold everything up to. A node's `stable` timestamp is the
minimum over its members of that (its own last timestamp for peers with nothing pending); nodes
publish it with every replication request, and a tombstone older than the minimum of all members'
stable timestamps is on every member (`purge_watermark`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from cluster.core.hlc import HybridClock
from cluster.core.kv import Batch
from cluster.core.store import Mutation, Store
from cluster.errors import ClockSkewError
from cluster.net.http_peers import PeerClient, PeerError

logger = logging.getLogger(__name__)

REPLICATE_PATH = "/internal/replicate"
WIRE_VERSION = 1


class DecodeError(ValueError):
    """A replication body that is not one this version understands."""


# --- wire format (pure) ---------------------------------------------------------------------------
# {"v": 1, "from": name, "stable": ts, "batches": [[ts, node, clear, [[key, value|null,
#  expires|null], ...]], ...]}: lists, not objects, because a busy link sends thousands per request.


def encode_batches(sender: str, stable: int, batches: Iterable[Batch]) -> bytes:
    return orjson.dumps(
        {
            "v": WIRE_VERSION,
            "from": sender,
            "stable": stable,
            "batches": [
                [b.ts, b.node, b.clear, [[m.key, m.value, m.expires] for m in b.mutations]]
                for b in batches
            ],
        }
    )


def decode_batches(body: bytes) -> tuple[str, int, list[Batch]]:
    """Parse and check a replication body; DecodeError on anything malformed."""
    try:
        msg = orjson.loads(body)
        if not isinstance(msg, dict) or msg.get("v") != WIRE_VERSION:
            raise DecodeError("not a replication message of version 1")
        sender, stable, raw = msg["from"], msg["stable"], msg["batches"]
        if not isinstance(sender, str) or not isinstance(stable, int) or not isinstance(raw, list):
            raise DecodeError("bad header fields")
        batches = []
        for ts, node, clear, muts in raw:
            if not (isinstance(ts, int) and ts >= 0 and isinstance(node, str) and node):
                raise DecodeError("bad batch timestamp or node")
            mutations = []
            for key, value, expires in muts:
                if not isinstance(key, str) or not key:
                    raise DecodeError("bad key")
                if value is not None and not isinstance(value, str):
                    raise DecodeError("bad value")
                if expires is not None and not isinstance(expires, int | float):
                    raise DecodeError("bad expiry")
                mutations.append(Mutation(key, value, ts, node, expires))
            batches.append(Batch(ts, node, tuple(mutations), bool(clear)))
        return sender, stable, batches
    except DecodeError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"malformed replication body: {exc}") from None


def refused_of(reply: bytes) -> set[int]:
    """The timestamps of the batches a peer's reply says it refused."""
    try:
        msg = orjson.loads(reply)
        refused = msg.get("refused", []) if isinstance(msg, dict) else None
    except orjson.JSONDecodeError:
        refused = None
    if not isinstance(refused, list) or not all(isinstance(t, int) for t in refused):
        raise DecodeError("a replication reply must be {'applied': n, 'refused': [ts, ...]}")
    return set(refused)


def apply_batches(
    store: Store, hlc: HybridClock, batches: Iterable[Batch]
) -> tuple[int, list[int]]:
    """Merge remote batches into the store; returns (applied mutations, refused batches' ts).

    A batch whose timestamp is further ahead than the maximum clock offset is refused and
    logged: adopting it would drag this node's clock into the future. The sender is told which,
    so that it neither counts them as replicated nor as acknowledged for tombstone purging. No
    await in here, so every batch (a transaction) becomes visible all at once.
    """
    applied = 0
    refused: list[int] = []
    for b in batches:
        try:
            hlc.observe(b.ts)
        except ClockSkewError as exc:
            refused.append(b.ts)
            logger.warning("refused a batch from node=%s: %s", b.node, exc)
            continue
        if b.clear:
            applied += store.apply_clear(b.ts, b.node)
        for m in b.mutations:
            applied += store.apply(m.key, m.value, m.ts, m.node, m.expires)
    return applied, refused


# --- outbound ------------------------------------------------------------------------------------


class AckGroup:
    """The acknowledgements one sync write waits for: one future and two counters per write,
    whatever the number of peers (cheaper on the hot path than a future per peer and
    asyncio.wait). Each peer's link answers exactly once: `ack(True)` applied, `ack(False)`
    refused or dropped."""

    __slots__ = ("acked", "future", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, pending: int) -> None:
        self.acked = 0
        self.pending = pending
        self.future: asyncio.Future[None] = loop.create_future()

    def ack(self, ok: bool) -> None:
        self.pending -= 1
        self.acked += ok
        if self.pending <= 0:
            self.expire()

    def expire(self) -> None:
        """Stop waiting (all answered, or the timeout passed); later answers are only counted."""
        if not self.future.done():
            self.future.set_result(None)


@dataclass(slots=True)
class _Item:
    batch: Batch
    waiter: AckGroup | None


class PeerLink:
    """Outbound replication to one peer: FIFO, one request in flight, bounded hints."""

    def __init__(self, replicator: Replicator, name: str, address: str) -> None:
        self.r = replicator
        self.name = name
        self.address = address
        self.queue: deque[_Item] = deque()
        self.queued_mutations = 0
        self.acked_upto = 0  # every batch of ours with ts <= this is on the peer
        self.lost_since: int | None = None  # ts of the first batch dropped (hints overflow)
        self.failures = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"replicate->{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.drop_all()

    def enqueue(self, batch: Batch, waiter: AckGroup | None) -> None:
        size = max(1, len(batch.mutations))
        if self.queued_mutations + size > self.r.max_hints:
            # The peer is too far behind: drop the hints; anti-entropy takes over.
            logger.warning(
                "node=%s peer=%s hint queue full (%d writes): dropping it, anti-entropy repairs",
                self.r.node,
                self.name,
                self.queued_mutations,
            )
            self.drop_all()
            self.lost_since = batch.ts if self.lost_since is None else self.lost_since
            if waiter is not None:
                waiter.ack(False)
            return
        self.queue.append(_Item(batch, waiter))
        self.queued_mutations += size
        self._wakeup.set()

    def drop_all(self) -> None:
        if self.queue and self.lost_since is None:
            self.lost_since = self.queue[0].batch.ts
        while self.queue:
            item = self.queue.popleft()
            if item.waiter is not None:
                item.waiter.ack(False)
        self.queued_mutations = 0

    def stable(self, last: int) -> int:
        """Greatest ts such that every batch of ours up to it is known to be on this peer."""
        if self.lost_since is not None:
            return min(self.acked_upto, self.lost_since - 1)
        if not self.queue:
            return max(self.acked_upto, last)
        return max(self.acked_upto, self.queue[0].batch.ts - 1)

    def repaired(self, upto: int) -> None:
        """Anti-entropy pushed everything we held at `upto` to this peer."""
        if self.lost_since is not None and self.lost_since <= upto:
            self.lost_since = None
        self.acked_upto = max(self.acked_upto, upto if not self.queue else self.acked_upto)

    async def _run(self) -> None:
        r = self.r
        while True:
            if not self.queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Take what is queued, up to a bound, as one request.
            items: list[_Item] = []
            count = 0
            for item in self.queue:
                items.append(item)
                count += max(1, len(item.batch.mutations))
                if count >= r.max_request_mutations:
                    break
            body = encode_batches(r.node, r.stable(), (i.batch for i in items))
            try:
                reply = await r.client.request(
                    "POST", self.address, REPLICATE_PATH, body, r.timeout
                )
                refused = refused_of(reply)
            except (PeerError, DecodeError) as exc:
                self.failures += 1
                r.failed_requests += 1
                delay = min(r.retry_max, r.retry_base * 2 ** min(self.failures, 10))
                logger.debug("node=%s peer=%s replication failed: %s", r.node, self.name, exc)
                await asyncio.sleep(delay)
                continue
            self.failures = 0
            r.sent_requests += 1
            for sent in items:
                # The queue may have been dropped meanwhile (peer died); only pop what we sent.
                if not self.queue or self.queue[0] is not sent:
                    break
                done = self.queue.popleft()
                self.queued_mutations -= max(1, len(done.batch.mutations))
                ok = done.batch.ts not in refused
                if ok:
                    self.acked_upto = max(self.acked_upto, done.batch.ts)
                elif self.lost_since is None or done.batch.ts < self.lost_since:
                    # The peer refused it (our clock is too far ahead of its own): it does not
                    # hold it, so our stable point stays below it until a repair succeeds.
                    self.lost_since = done.batch.ts
                if done.waiter is not None:
                    done.waiter.ack(ok)


class Replicator:
    """Sends local writes to every live peer and merges what peers send."""

    def __init__(
        self,
        node: str,
        store: Store,
        hlc: HybridClock,
        client: PeerClient,
        *,
        sync: bool = True,
        timeout: float = 2.0,
        max_hints: int = 100_000,
        max_request_mutations: int = 5_000,
        retry_base: float = 0.05,
        retry_max: float = 2.0,
    ) -> None:
        self.node = node
        self.store = store
        self.hlc = hlc
        self.client = client
        self.sync = sync
        self.timeout = timeout
        self.max_hints = max_hints
        self.max_request_mutations = max_request_mutations
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.links: dict[str, PeerLink] = {}
        # Members that are down (dead, suspect-too-long) still count for tombstone purging.
        self.frozen_stable: dict[str, int] = {}
        self.peer_stable: dict[str, int] = {}  # what each peer published as its stable ts
        self.sent_requests = 0
        self.failed_requests = 0
        self.refused_batches = 0
        self.received_batches = 0

    # --- membership hooks -------------------------------------------------------------------------

    def peer_up(self, name: str, address: str) -> None:
        """A peer is alive (again): start replicating to it."""
        link = self.links.get(name)
        if link is not None and link.address == address:
            return
        if link is not None:
            asyncio.get_running_loop().create_task(link.stop())
        link = PeerLink(self, name, address)
        # A new peer (a joiner streaming its snapshot) or one coming back after being down does
        # not hold our earlier writes on the strength of this link: until an anti-entropy round
        # with it completes, our stable point (and so tombstone purging) stays where it was.
        link.acked_upto = self.frozen_stable.pop(name, 0)
        link.lost_since = link.acked_upto + 1
        self.links[name] = link
        link.start()
        logger.info("node=%s peer=%s replicating to %s", self.node, name, address)

    async def peer_down(self, name: str, forget: bool = False) -> None:
        """A peer is dead (or left, or was removed: `forget`): stop and drop its hints."""
        link = self.links.pop(name, None)
        if link is not None:
            await link.stop()
            if not forget:
                self.frozen_stable[name] = link.stable(self.hlc.last)
        if forget:
            self.frozen_stable.pop(name, None)
            self.peer_stable.pop(name, None)

    async def close(self) -> None:
        for name in list(self.links):
            await self.peer_down(name, forget=True)

    # --- outbound ---------------------------------------------------------------------------------

    async def replicate(self, batch: Batch) -> tuple[int, int]:
        """Queue a local batch for every peer; in sync mode wait for their acks (or the timeout).

        Returns (nodes holding it, nodes expected), this one included.
        """
        links = list(self.links.values())
        if not links:
            return 1, 1
        if not self.sync:
            for link in links:
                link.enqueue(batch, None)
            return 1, 1 + len(links)
        loop = asyncio.get_running_loop()
        waiting = [link for link in links if not link.failures]
        group = AckGroup(loop, len(waiting))
        for link in links:
            # A link whose last request failed (refused, reset, timed out) is probably down and
            # about to be declared dead: queue the write as a hint, but do not make every client
            # wait the full timeout for it meanwhile; X-Replicas shows the shortfall.
            link.enqueue(batch, group if not link.failures else None)
        if group.pending > 0:
            timer = loop.call_later(self.timeout, group.expire)
            try:
                await group.future
            finally:
                timer.cancel()
        acked = group.acked
        return 1 + acked, 1 + len(links)

    def stable(self) -> int:
        """Our writes up to this timestamp are on every member we know (see module doc)."""
        last = self.hlc.last
        s = last
        for link in self.links.values():
            s = min(s, link.stable(last))
        for frozen in self.frozen_stable.values():
            s = min(s, frozen)
        return s

    def purge_watermark(self, members: Iterable[str]) -> int:
        """Tombstones older than this are on every member: the minimum of everyone's stable.

        0 (purge nothing) while any member has not published its stable timestamp yet.
        """
        w = self.stable()
        for name in members:
            if name == self.node:
                continue
            published = self.peer_stable.get(name)
            if published is None:
                return 0
            w = min(w, published)
        return w

    # --- inbound ----------------------------------------------------------------------------------

    def receive(self, body: bytes) -> tuple[int, list[int]]:
        """Merge a peer's replication request: (mutations applied, refused batches' ts).

        DecodeError if the body is malformed.
        """
        sender, stable, batches = decode_batches(body)
        applied, refused = apply_batches(self.store, self.hlc, batches)
        self.received_batches += len(batches)
        self.refused_batches += len(refused)
        self.note_peer_stable(sender, stable)
        return applied, refused

    def note_peer_stable(self, sender: str, stable: int) -> None:
        """Record the stable timestamp a peer published (it only grows)."""
        if sender != self.node:
            self.peer_stable[sender] = max(stable, self.peer_stable.get(sender, 0))

    def stats(self) -> dict[str, float]:
        return {
            "replication_peers": len(self.links),
            "replication_queued_writes": sum(link.queued_mutations for link in self.links.values()),
            "replication_sent_requests": self.sent_requests,
            "replication_failed_requests": self.failed_requests,
            "replication_received_batches": self.received_batches,
            "replication_refused_batches": self.refused_batches,
        }
