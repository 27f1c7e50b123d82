"""Replication of local writes to every peer: the per-peer sender tasks and sync acknowledgement.

Outbound, each peer has a `PeerLink`: a FIFO queue of batches (`links.LinkQueue`) and one request
in flight. Under load the queue fills while a request is out, so the next request carries many
batches (batching by back-pressure, as Kafka producers do); when idle each write goes out at once. A
peer that does not answer keeps a bounded queue (the hints) that is retried with jittered backoff;
past the bound, or when the peer is declared dead, the hints are dropped and anti-entropy repairs
the difference.

In `sync` mode the client's answer waits until every live peer acknowledged the batch or the
replication timeout passed (the write stays applied here; the missing peers get it later).

Tombstone purging needs proof that every member has a tombstone. A node's `stable` timestamp is the
minimum over its members of what each link proves (`LinkQueue.stable`; its own last timestamp for
peers with nothing pending); nodes publish it with every replication request, and a tombstone older
than the minimum of all members' stable timestamps is on every member (`purge_watermark`).

Peers are reached only through a `PeerTransport`, so the simulation runs this very code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable

from cluster.core.backoff import backoff
from cluster.core.hlc import HybridClock
from cluster.core.kv import Batch
from cluster.core.ports import PeerError, PeerTransport
from cluster.core.store import Store
from cluster.errors import DecodeError
from cluster.replication.links import LinkQueue
from cluster.replication.wire import (
    REPLICATE_PATH,
    apply_batches,
    decode_batches,
    encode_batches,
    refused_of,
)

logger = logging.getLogger(__name__)


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


class PeerLink:
    """Outbound replication to one peer: the task that moves its queue's head, one request at a
    time, and retries with backoff."""

    def __init__(self, replicator: Replicator, name: str, address: str, state: LinkQueue) -> None:
        self.r = replicator
        self.name = name
        self.address = address
        self.state = state
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def failing(self) -> bool:
        """The last request failed: the peer is probably down (see `Replicator.replicate`)."""
        return self.state.failures > 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"replicate->{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.state.drop_all()

    def enqueue(self, batch: Batch, waiter: AckGroup | None) -> None:
        if not self.state.enqueue(batch, waiter):
            logger.warning(
                "node=%s peer=%s hint queue full: dropped it, anti-entropy repairs",
                self.r.node,
                self.name,
            )
            return
        self._wakeup.set()

    async def _run(self) -> None:
        r, state = self.r, self.state
        while True:
            if not state.queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            items = state.take(r.max_request_mutations)
            body = encode_batches(r.node, r.stable(), (i.batch for i in items))
            try:
                reply = await r.client.request(
                    "POST", self.address, REPLICATE_PATH, body, r.timeout
                )
                refused = refused_of(reply)
            except (PeerError, DecodeError) as exc:
                state.failures += 1
                r.failed_requests += 1
                logger.debug("node=%s peer=%s replication failed: %s", r.node, self.name, exc)
                await asyncio.sleep(backoff(state.failures, r.retry_base, r.retry_max, r.rng))
                continue
            r.sent_requests += 1
            state.delivered(items, refused)


class Replicator:
    """Sends local writes to every live peer and merges what peers send."""

    def __init__(
        self,
        node: str,
        store: Store,
        hlc: HybridClock,
        client: PeerTransport,
        *,
        rng: random.Random | None = None,
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
        self.rng = rng if rng is not None else random.Random(0)
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
        # A new peer (a joiner streaming its snapshot) or one coming back after being down does
        # not hold our earlier writes on the strength of this link: until an anti-entropy round
        # with it completes, our stable point (and so tombstone purging) stays where it was.
        acked = self.frozen_stable.pop(name, 0)
        link = PeerLink(self, name, address, LinkQueue(self.max_hints, acked, acked + 1))
        self.links[name] = link
        link.start()
        logger.info("node=%s peer=%s replicating to %s", self.node, name, address)

    async def peer_down(self, name: str, forget: bool = False) -> None:
        """A peer is dead (or left, or was removed: `forget`): stop and drop its hints."""
        link = self.links.pop(name, None)
        if link is not None:
            await link.stop()
            if not forget:
                self.frozen_stable[name] = link.state.stable(self.hlc.last)
        if forget:
            self.frozen_stable.pop(name, None)
            self.peer_stable.pop(name, None)

    def has_peers(self) -> bool:
        """Must a write be handed to replication at all? Not in a mesh of one."""
        return bool(self.links)

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
        waiting = [link for link in links if not link.failing]
        group = AckGroup(loop, len(waiting))
        for link in links:
            # A link whose last request failed (refused, reset, timed out) is probably down and
            # about to be declared dead: queue the write as a hint, but do not make every client
            # wait the full timeout for it meanwhile; X-Replicas shows the shortfall.
            link.enqueue(batch, group if not link.failing else None)
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
            s = min(s, link.state.stable(last))
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

    def peer_report(self, now_ms: int) -> list[dict[str, object]]:
        """Each peer's link, for the dashboard: writes queued for it (the hints), how long the
        oldest has waited (the replication lag, 0 when nothing waits), whether it is failing."""
        out: list[dict[str, object]] = []
        for name, link in sorted(self.links.items()):
            queue = link.state.queue
            oldest_ms = queue[0].batch.ts >> 16 if queue else now_ms
            out.append(
                {
                    "name": name,
                    "address": link.address,
                    "queued": link.state.queued_mutations,
                    "lag_ms": max(0, now_ms - oldest_ms),
                    "failing": link.failing,
                }
            )
        return out

    def stats(self) -> dict[str, float]:
        """Counters and gauges for /metrics, named replication_* (see cluster.api.metrics)."""
        return {
            "replication_peers": len(self.links),
            "replication_queued_writes": sum(
                link.state.queued_mutations for link in self.links.values()
            ),
            "replication_sent_requests": self.sent_requests,
            "replication_failed_requests": self.failed_requests,
            "replication_received_batches": self.received_batches,
            "replication_refused_batches": self.refused_batches,
        }
