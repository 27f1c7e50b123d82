"""The IO layer of membership: datagrams in and out, the tick loop, and push/pull.

Everything that decides lives in `cluster.membership.swim` (pure); this module only moves bytes
and time in and out of it, through the two transports of `cluster.core.ports`:

- datagrams (`Transport`: UDP in production, the in-memory network in the simulation): each one
  is authenticated and decoded (`cluster.membership.messages`), its messages fed to
  `Membership.handle`, and whatever comes back is encoded and sent; undecodable,
  unauthenticated and stale datagrams are dropped and counted (`on_datagram`);
- a loop calling `Membership.tick(clock.monotonic())` at the next deadline (at most a tenth of a
  probe interval apart, and at once after each received datagram);
- push/pull as a request to `PUSH_PULL_ROUTE` through the `PeerTransport` (HTTP in production);
  `handle_push_pull` answers one. Bodies are packets of `cluster.membership.messages`, signed in
  the body with the cluster key when one is set;
- membership events are logged at INFO (`node=%s peer=%s`) and passed to listeners.

Why the incarnation starts at the wall clock in ms: a restarted process must outbid everything the
mesh remembers of its previous life, which refuted at most a handful of times per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from cluster.core.addresses import format_hostport, parse_hostport
from cluster.core.clock import Clock
from cluster.core.ports import PeerError, PeerTransport, Transport
from cluster.errors import BadRequest, BodyTooLarge, DecodeError, Unauthorized
from cluster.membership.messages import (
    MAX_DATAGRAM,
    MAX_PUSH_PULL,
    Packet,
    PushPull,
    decode_packet,
)
from cluster.membership.messages import encode_packet as _encode
from cluster.membership.suspicion import GossipParams
from cluster.membership.swim import Member, MemberEvent, Membership, Outgoing
from cluster.net.auth import KEYS_DIFFER, RefusalLog

__all__ = ["PUSH_PULL_ROUTE", "Gossip", "GossipParams", "GossipStats", "Member", "MemberEvent"]

logger = logging.getLogger(__name__)

PUSH_PULL_ROUTE = "/internal/gossip/pushpull"
REFUSAL_LOG_INTERVAL = 10.0  # seconds between log lines about one refused sender

Listener = Callable[[MemberEvent], Any]  # may return an awaitable: it is run as a task


@dataclass(slots=True)
class GossipStats:
    """Counters for /metrics (monotonic; see `Gossip.counters`)."""

    datagrams_received: int = 0
    datagrams_sent: int = 0  # handed to the datagram transport
    dropped_malformed: int = 0  # garbage, truncated, wrong version, wrong shape
    dropped_auth: int = 0  # missing or bad HMAC: another key, or none
    dropped_stale: int = 0  # signed, but older than the replay window
    dropped_oversized: int = 0
    push_pull_ok: int = 0
    push_pull_failed: int = 0
    push_pull_served: int = 0
    push_pull_refused: int = 0


class Gossip:
    """Runs one node's membership: datagrams, the tick loop, push/pull, listeners."""

    def __init__(
        self,
        name: str,
        advertise_address: str,
        clock: Clock,
        rng: random.Random,
        cluster_key: str | None,
        params: GossipParams,
        datagrams: Transport,
        peers: PeerTransport,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.name = name
        self.key = cluster_key
        self.params = (params or GossipParams()).validate()
        self.stats = GossipStats()
        self.membership = self._new_membership(advertise_address)
        self._listeners: list[Listener] = []
        self.datagrams = datagrams
        self.peers = peers
        self._loop_task: asyncio.Task[None] | None = None
        # Insertion-ordered (a dict, not a set), so a seeded simulation replays exactly.
        self._tasks: dict[asyncio.Task[Any], None] = {}
        self._wake = asyncio.Event()
        self._refusals = RefusalLog(REFUSAL_LOG_INTERVAL)
        # Seeds that answered the last join but would not take us in: seed -> why.
        self.refused_by: dict[str, str] = {}

    def _new_membership(self, address: str) -> Membership:
        incarnation = int(self.clock.wall() * 1000)
        return Membership(self.name, address, self.params, self.rng, incarnation)

    @property
    def address(self) -> str:
        """The advertised "host:port" (HTTP and UDP)."""
        return self.membership.address

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, port: int | None = None) -> None:
        """Start the loop (the datagram transport is bound by the caller).

        `port`: the bound port when the configured one was 0; an advertised port of 0 is then
        replaced by it.
        """
        host, adv_port = parse_hostport(self.address, allow_zero=True)
        if port is not None and adv_port == 0:
            # Nothing happened yet: start over under the real address.
            self.membership = self._new_membership(format_hostport(host, port))
        self._loop_task = asyncio.create_task(self._run(), name=f"gossip-{self.name}")
        logger.info(
            "node=%s gossip started, advertising %s (incarnation %d)",
            self.name,
            self.address,
            self.membership.incarnation,
        )

    async def stop(self) -> None:
        """Stop without leaving (a crash, as far as the others can tell)."""
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loop_task = None
        self._tasks.clear()

    async def join(self, seeds: Iterable[str], timeout: float) -> bool:  # noqa: ASYNC109
        """Push/pull with every seed; True as soon as one answered (we are then a member).

        `timeout` bounds the whole join (the seeds are tried at once); answers arriving later
        are still merged. Seeds that answered but refused us (another cluster key) are listed in
        `refused_by`, so the caller can tell a misconfiguration from a network problem.
        """
        self.refused_by = {}
        outgoing = self.membership.start_join(list(seeds), self.clock.monotonic())
        self._after()
        if not outgoing:
            return False
        attempts = [self._spawn(self._push_pull(out)) for out in outgoing]
        try:
            async with asyncio.timeout(timeout):
                for attempt in asyncio.as_completed(attempts):
                    if await attempt:
                        return True
        except TimeoutError:
            pass
        return False

    async def leave(self) -> None:
        """Leave gracefully: every member is told (peers see `left`); we stay a mesh of one."""
        self._dispatch(self.membership.leave(self.clock.monotonic()))
        self._after()
        await asyncio.sleep(0)  # let the datagrams go out before a stop()

    def remove(self, name: str) -> bool:
        """Remove `name` from the mesh everywhere; False if we never heard of it."""
        if name not in self.membership:
            return False
        self._dispatch(self.membership.remove(name, self.clock.monotonic()))
        self._after()
        return True

    # --- views ----------------------------------------------------------------------------------

    def members(self) -> list[Member]:
        """Every known member, self included (`Member.as_dict()` is the contract's shape)."""
        return self.membership.members()

    def alive_peers(self) -> list[Member]:
        """Other members currently alive (not suspect, dead or left)."""
        return self.membership.alive_peers()

    def add_listener(self, callback: Listener) -> None:
        """Call `callback(event)` on every membership change; an awaitable result is run as a
        task. Exceptions are logged, never raised into gossip."""
        self._listeners.append(callback)

    def counters(self) -> dict[str, int]:
        """Counters and gauges for /metrics, named gossip_* (described in cluster.api.metrics)."""
        out = {f"gossip_{k}": v for k, v in asdict(self.stats).items()}
        out["gossip_health_score"] = self.membership.health_score
        out["gossip_pending_broadcasts"] = self.membership.pending_broadcasts()
        return out

    # --- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        cap = self.params.probe_interval / 10
        while True:
            try:
                self._dispatch(self.membership.tick(self.clock.monotonic()))
                self._after()
            except Exception:  # a bug must not silence membership for good
                logger.exception("node=%s gossip tick failed", self.name)
            delay = self.membership.next_deadline() - self.clock.monotonic()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(max(delay, 0.001), cap)):
                    await self._wake.wait()

    def _after(self) -> None:
        """Log and deliver membership events; let the loop look at the new deadlines."""
        for event in self.membership.take_events():
            logger.info(
                "node=%s peer=%s %s -> %s (incarnation %d, %s)",
                self.name,
                event.name,
                event.old_state or "unknown",
                event.new_state or "forgotten",
                event.incarnation,
                event.address,
            )
            for listener in self._listeners:
                try:
                    result = listener(event)
                    if inspect.isawaitable(result):
                        self._spawn(_await(result))
                except Exception:
                    logger.exception("node=%s membership listener failed", self.name)
        self._wake.set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[task] = None
        task.add_done_callback(self._discard)
        return task

    def _discard(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)

    # --- datagrams ------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock.wall() * 1000)

    def _check(self, data: bytes, max_size: int) -> Packet | str:
        """Decode and authenticate: the packet, or the reason it was dropped (and counted)."""
        try:
            packet = decode_packet(data, self.key, max_size)
        except DecodeError as exc:
            counter = {"auth": "dropped_auth", "oversized": "dropped_oversized"}.get(
                exc.reason, "dropped_malformed"
            )
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            logger.debug("node=%s dropped a packet: %s", self.name, exc)
            return exc.reason
        if self.key is not None:
            age = abs(self._now_ms() - packet.sent_ms) / 1000.0
            if age > self.params.replay_window:
                self.stats.dropped_stale += 1
                logger.debug("node=%s dropped a packet %.0f s off our clock", self.name, age)
                return "stale"
        return packet

    def on_datagram(self, data: bytes, source: str) -> None:
        """One datagram arrived from `source` ("host:port")."""
        self.stats.datagrams_received += 1
        packet = self._check(data, MAX_DATAGRAM)
        if isinstance(packet, str):
            self._note_refused(source, packet)
            return
        now = self.clock.monotonic()
        out: list[Outgoing] = []
        for msg in packet.messages:
            if isinstance(msg, PushPull):
                self.stats.dropped_malformed += 1  # full state travels over HTTP only
                continue
            out += self.membership.handle(source, msg, now)
        self._dispatch(out)
        self._after()

    def _dispatch(self, outgoing: list[Outgoing]) -> None:
        for out in outgoing:
            if out.push_pull:
                self._spawn(self._push_pull(out))
            else:
                self._send(out.address, _encode(out.messages, self.key, self._now_ms()))

    def _send(self, address: str, data: bytes) -> None:
        self.stats.datagrams_sent += 1
        self.datagrams.send(address, data)

    def _note_refused(self, source: str, reason: str) -> None:
        """Log a sender whose packets fail authentication, once per interval per address."""
        if reason not in ("auth", "stale"):
            return  # garbage is counted, not logged: it says nothing about a misconfiguration
        count = self._refusals.refused(source, self.clock.monotonic())
        if count is None:
            return
        why = (
            "not signed with our cluster key (the cluster keys differ)"
            if reason == "auth"
            else f"signed more than {self.params.replay_window:.0f} s away from our clock"
        )
        logger.warning("node=%s refused %d packet(s) from %s: %s", self.name, count, source, why)

    # --- push/pull over HTTP --------------------------------------------------------------------

    async def _push_pull(self, out: Outgoing) -> bool:
        """Send a push/pull request and merge the answer; False if it failed."""
        body = _encode(out.messages, self.key, self._now_ms())
        try:
            data = await self.peers.request(
                "POST", out.address, PUSH_PULL_ROUTE, body, within=self.params.push_pull_timeout
            )
        except PeerError as exc:
            self.stats.push_pull_failed += 1
            if exc.status == 401:  # the seed refused our signature
                self.refused_by[out.address] = KEYS_DIFFER
            logger.debug("node=%s peer=%s push/pull failed: %s", self.name, out.address, exc)
            return False
        packet = self._check(data, MAX_PUSH_PULL)
        if isinstance(packet, str) or (reply := _the_push_pull(packet, reply=True)) is None:
            self.stats.push_pull_failed += 1
            why = _refusal_reason(packet, self.params.replay_window)
            if why is not None:
                self.refused_by[out.address] = why
            logger.debug("node=%s peer=%s push/pull refused: %s", self.name, out.address, packet)
            return False
        self.stats.push_pull_ok += 1
        self._dispatch(self.membership.handle(out.address, reply, self.clock.monotonic()))
        self._after()
        return True

    def handle_push_pull(self, body: bytes, remote: str) -> bytes:
        """Answer a push/pull request (POST PUSH_PULL_ROUTE): merge the caller's state, reply
        with ours. Raises the KVError to answer with when the body is refused."""
        packet = self._check(body, MAX_PUSH_PULL)
        msg = None if isinstance(packet, str) else _the_push_pull(packet, reply=False)
        if msg is None:
            self.stats.push_pull_refused += 1
            if isinstance(packet, str):
                self._note_refused(remote, packet)
            if packet == "oversized":
                raise BodyTooLarge("the push/pull body is too large")
            if packet in ("auth", "stale"):
                raise Unauthorized("not signed with the cluster key, or stale")
            raise BadRequest("not a push/pull request", "INVALID_BODY")
        reply, out = self.membership.push_pull_reply(msg, self.clock.monotonic())
        self.stats.push_pull_served += 1
        self._dispatch(out)
        self._after()
        return _encode([reply], self.key, self._now_ms())


def _the_push_pull(packet: Packet, reply: bool) -> PushPull | None:
    """The packet's one PushPull if it is a request (reply=False) or an answer (reply=True)."""
    msgs = packet.messages
    if len(msgs) == 1 and isinstance(msgs[0], PushPull) and msgs[0].reply is reply:
        return msgs[0]
    return None


def _refusal_reason(problem: object, replay_window: float) -> str | None:
    """Why a seed's push/pull answer means it will not take us in, or None (a plain failure)."""
    if problem == "auth":
        return KEYS_DIFFER
    if problem == "stale":
        return f"answered with a signature more than {replay_window:.0f} s away from our clock"
    return None


async def _await(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("membership listener failed")
