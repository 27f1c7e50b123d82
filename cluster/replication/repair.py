"""The requesting side of anti-entropy and snapshots: it talks to a peer through the peer
transport (real HTTP in production, the in-memory network in the simulation)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from cluster.core.digests import LEAF_LEVEL
from cluster.core.hlc import HybridClock
from cluster.core.ports import PeerTransport
from cluster.core.store import Store
from cluster.errors import ClockSkewError, DecodeError
from cluster.replication import merkle
from cluster.replication.antientropy import (
    DIGESTS_PATH,
    SNAPSHOT_PATH,
    checked_entries,
    decode_clear,
    encode_entries,
    loads,
    merge_clear,
    merge_entries,
)

MERGE_SLICE = 1000  # snapshot entries merged between two yields to the event loop


@dataclass(frozen=True, slots=True)
class RepairResult:
    differing: int  # leaves of the hash tree that differed (or changed while the round ran)
    sent: int  # entries we sent
    received: int  # entries the peer sent
    applied: int  # of those, how many won here
    complete: bool  # both sides now hold everything the other sent (nothing refused for skew)
    peer_stable: int | None = None  # the stable timestamp the peer published
    bytes: int = 0  # request and reply bodies of the round, both ways
    requests: int = 0


class _Counting:
    """The peer transport, counting the bodies a round sends and receives."""

    def __init__(self, client: PeerTransport, address: str, within: float) -> None:
        self.client, self.address, self.within = client, address, within
        self.bytes = 0
        self.requests = 0

    async def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        reply = await self.client.request(method, self.address, path, body, self.within)
        self.bytes += len(body) + len(reply)
        self.requests += 1
        return reply


def _int_field(raw: dict[str, Any], name: str) -> int:
    value = raw.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DecodeError(f"digests reply without a valid {name}")
    return value


async def repair_with(
    store: Store,
    hlc: HybridClock,
    client: PeerTransport,
    address: str,
    within: float = 10.0,
    me: str = "",
    stable: int = 0,
) -> RepairResult:
    """One anti-entropy round with the peer at `address` (raises PeerError or DecodeError): the
    hash-tree descent of merkle.py, then each side sends what the other lacks.

    `me` and `stable` publish our stable timestamp to the peer (see replication.py).
    """
    peer = _Counting(client, address, within)
    raw = loads(
        await peer.request("GET", f"{DIGESTS_PATH}?from={quote(me, safe='')}&stable={stable}")
    )
    if not isinstance(raw, dict):
        raise DecodeError("digests reply must be an object")
    peer_stable = raw.get("stable")
    if not isinstance(peer_stable, int) or isinstance(peer_stable, bool):
        peer_stable = None
    merge_clear(store, hlc, decode_clear(raw.get("clear")))
    their_root, their_seq = _int_field(raw, "root"), _int_field(raw, "seq")
    start = store.seq  # what changes here from now on goes along whole (merkle.py)
    if their_root == merkle.root_hash(store):
        return RepairResult(0, 0, 0, 0, True, peer_stable, peer.bytes, peer.requests)
    frontier = [0]
    for level in range(LEAF_LEVEL):
        body = merkle.encode_descend(level, frontier, merkle.child_hashes(store, level, frontier))
        frontier = merkle.differing_children(
            level, frontier, await peer.request("POST", merkle.DESCEND_PATH, body)
        )
        if not frontier:
            break
    # Our part, read in one step: the differing leaves and every leaf changed since we began.
    leaves = set(frontier).union(store.changed_leaves(start))
    found = store.leaf_entries(leaves)
    mine = {leaf: found.get(leaf, []) for leaf in sorted(leaves)}
    body, summarized = merkle.encode_summaries(their_seq, store.clear_version, mine)
    reply = loads(await peer.request("POST", merkle.RECONCILE_PATH, body))
    clear, theirs, want = merkle.decode_reconcile(reply)
    merge_clear(store, hlc, clear)
    applied, refused_here = merge_entries(store, hlc, theirs)
    give = [summarized[h] for h in want if h in summarized]
    refused_there = 0
    if give:
        body = orjson.dumps({"entries": encode_entries(give)})
        answer = loads(await peer.request("POST", merkle.GIVE_PATH, body))
        count = answer.get("refused") if isinstance(answer, dict) else None
        if not isinstance(count, int):
            raise DecodeError("a give reply has the number of entries refused")
        refused_there = count
    return RepairResult(
        len(leaves),
        len(give),
        len(theirs),
        applied,
        refused_here == 0 and refused_there == 0,
        peer_stable,
        peer.bytes,
        peer.requests,
    )


async def peer_purged_max(client: PeerTransport, address: str, within: float = 10.0) -> int:
    """The newest tombstone the peer has purged (0: none): a replica that does not hold every
    write up to it may hold keys the purged tombstones deleted."""
    raw = loads(await client.request("GET", address, DIGESTS_PATH, within=within))
    value = raw.get("purged_max", 0) if isinstance(raw, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DecodeError("digests reply without a valid purged_max")
    return value


async def pull_snapshot(
    store: Store,
    hlc: HybridClock,
    client: PeerTransport,
    address: str,
    page: int = 10_000,
    within: float = 10.0,
    since: int = 0,
) -> int:
    """Stream a peer's whole data set into the store, page by page; returns entries received.

    The next page is requested before the current one is merged, so the peer serializes while
    we apply: the two processes work in parallel. A page that takes longer than `within` (a
    peer behind a partition, or stopped) fails the pull, and the caller tries another peer:
    a page of 10,000 entries takes a fraction of a second, so 10 s only ever waits on the dead.
    With `since`, only entries stamped after it come (a restarted node catching up).
    """

    async def fetch(cursor: str | None) -> dict[str, Any]:
        path = f"{SNAPSHOT_PATH}?limit={page}" + (f"&after={cursor}" if cursor else "")
        if since:
            path += f"&since={since}"
        reply = loads(await client.request("GET", address, path, within=within))
        if not isinstance(reply, dict):
            raise DecodeError("snapshot page must be an object")
        cursor = reply.get("next")
        if cursor is not None and not isinstance(cursor, str):
            raise DecodeError("bad snapshot cursor")
        return reply

    received = 0
    reply = await fetch(None)
    while True:
        cursor = reply.get("next")
        pending = asyncio.create_task(fetch(cursor)) if cursor is not None else None
        try:
            merge_clear(store, hlc, decode_clear(reply.get("clear")))
            entries = checked_entries(reply.get("entries"))
            if max((e[2] for e in entries), default=0) > hlc.limit():
                # Serving part of the data set would be worse than waiting for the clocks.
                raise ClockSkewError(
                    f"the snapshot from {address} is ahead of our clock by more than the maximum "
                    "offset; retrying"
                )
            # In slices, yielding between them: the request for the next page goes out and the
            # peer reads and encodes it while this one merges. (A joiner serves no one yet, so
            # no client sees a page half merged; the limit passed above only grows.)
            for i in range(0, len(entries), MERGE_SLICE):
                merge_entries(store, hlc, entries[i : i + MERGE_SLICE])
                await asyncio.sleep(0)
            received += len(entries)
        except BaseException:
            if pending is not None:
                pending.cancel()
            raise
        if pending is None:
            return received
        reply = await pending


@dataclass(frozen=True, slots=True)
class CatchUp:
    """How a replica that held data already caught up with a peer."""

    full: bool  # it could not trust its copy and streamed everything
    received: int  # entries it received
    dropped: int = 0  # entries it dropped first (full only)
    purged: int = 0  # the peer's newest purged tombstone
    repaired_leaves: int = 0  # leaves the anti-entropy round after it found different

    def as_dict(self) -> dict[str, object]:
        return {"full": self.full, "received": self.received, "dropped": self.dropped}

    def describe(self, covered: int) -> str:
        if self.full:
            return (
                f"purged tombstones up to {self.purged}, beyond what this replica is known to hold "
                f"({covered}): dropped {self.dropped} entries that old, streamed the whole data "
                f"set ({self.received} entries)"
            )
        return (
            f"caught up: {self.received} entries newer than {covered} or in the "
            f"{self.repaired_leaves} leaves anti-entropy found different"
        )


async def catch_up(
    store: Store,
    hlc: HybridClock,
    client: PeerTransport,
    address: str,
    covered: int,
    me: str,
    stable: int,
) -> CatchUp:
    """A replica that holds data already (its disk copy, or what it kept after a leave) fetches
    only the entries stamped after `covered` (every peer's writes up to it are known to be here),
    then repairs anything else by one anti-entropy round.

    Unless the peer purged a tombstone newer than `covered`: this replica may then hold a key that
    tombstone deleted, and nothing left in the mesh would delete it again. It drops every entry
    that old and streams the whole data set instead: never a resurrection.
    """
    purged = await peer_purged_max(client, address)
    if purged > covered:
        dropped = store.drop_up_to(purged)
        got = await pull_snapshot(store, hlc, client, address)
        return CatchUp(True, got, dropped, purged)
    got = await pull_snapshot(store, hlc, client, address, since=covered)
    result = await repair_with(store, hlc, client, address, me=me, stable=stable)
    return CatchUp(False, got + result.received, 0, purged, result.differing)
