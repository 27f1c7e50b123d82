"""The verdict: after the faults heal and writes stop, is the data what last-writer-wins promises?

Self-contained on purpose: `loadtest/check.py` (the deployment issue's checker, written at the same
time) did not exist when this was written, and its model is simpler (no faults, no timestamps).

What is read, from every alive node directly (never through the balancer):

- `GET /getAll`: the client's view (live keys only, expired ones excluded);
- `GET /internal/snapshot` (paged): every stored version `[key, value|null, ts, node, expires]`,
  tombstones included, and the clear (range tombstone) version. That is how the verdict learns
  the version of values whose write was never acknowledged, and of transactions (the line
  protocol's COMMIT carries no timestamp: each transaction writes a marker key of its own).

The rules (`judge`), per key, with `newest` the acknowledged write (or acknowledged clear) of
greatest timestamp that touched it:

- lost:        `newest` says the key holds value V, and the node shows an older version, or
               nothing (no newer tombstone, clear or attempted delete explains the absence);
- resurrected: `newest` is a delete, a clear or an expired TTL write, and the node shows a live
               value of an older version;
- phantom:     a live value no recorded write produced;
- partial:     a batch or transaction (acknowledged or not) of which some key shows its value
               while another of its keys shows a version *older* than it (torn);
- an unacknowledged write may win: a value whose version is at least `newest` is fine;
- unverified:  an absence the verdict can neither confirm nor refute, because only a delete,
               expiry or clear of unknown version may explain it (unacknowledged, or its
               tombstone purged): not a failure, but counted and shown in the report.

An acknowledged transaction whose marker is gone has no known version (COMMIT carries none): a
clear excuses it only if that clear may have ordered after it (`_judge_lost_transaction`).

Writes through the balancer learn their node from nginx's X-Upstream header, so ties on the
timestamp are broken by node name as the store breaks them; where the node is unknown (the line
protocol through the balancer) an equal timestamp is accepted. The membership verdicts live in
`Monitor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from cluster.core.hlc import wall_seconds_of
from cluster.net import auth
from loadtest.faults.load import Write

Version = tuple[int, str]
ZERO: Version = (0, "")
TTL_MARGIN = 1.5  # seconds of clock skew and scheduling around a TTL's expiry


@dataclass(frozen=True, slots=True)
class Stored:
    value: str | None
    ts: int
    node: str
    expires: float | None

    @property
    def version(self) -> Version:
        return (self.ts, self.node)


@dataclass
class NodeState:
    """What one node holds: its client view and every stored version."""

    name: str
    live: dict[str, str]
    stored: dict[str, Stored]
    clear: Version

    def fingerprint(self) -> tuple[Any, ...]:
        """Equal fingerprints: the same live data at the same versions, the same clear."""
        versions = tuple(sorted((k, self.stored[k].version) for k in self.live if k in self.stored))
        return (tuple(sorted(self.live.items())), versions, self.clear)


# --- reading the nodes ---------------------------------------------------------------------------


async def _get(
    session: aiohttp.ClientSession, url: str, path: str, key: str | None, within: float
) -> bytes:
    headers = {}
    if key is not None:
        sent_ms = int(time.time() * 1000)
        headers[auth.HEADER] = auth.signature(key, "GET", path, b"", sent_ms)
        headers[auth.TIME_HEADER] = str(sent_ms)
    async with asyncio.timeout(within):
        async with session.get(url + path, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=body[:200].decode()
                )
            return body


async def fetch_state(
    session: aiohttp.ClientSession,
    name: str,
    url: str,
    cluster_key: str | None = None,
    within: float = 10.0,
) -> NodeState:
    """Read a node's /getAll and its whole snapshot (tombstones and clear included)."""
    live = orjson.loads(await _get(session, url, "/getAll", None, within))
    stored: dict[str, Stored] = {}
    clear: Version = ZERO
    cursor: str | None = None
    while True:
        path = "/internal/snapshot?limit=5000" + (f"&after={cursor}" if cursor else "")
        page = orjson.loads(await _get(session, url, path, cluster_key, within))
        clear = (int(page["clear"][0]), str(page["clear"][1]))
        for key, value, ts, node, expires in page["entries"]:
            stored[key] = Stored(value, ts, node, expires)
        cursor = page.get("next")
        if not cursor:
            break
    return NodeState(name, dict(live), stored, clear)


async def fetch_all(
    session: aiohttp.ClientSession, nodes: Sequence[tuple[str, str]], within: float = 5.0
) -> dict[str, NodeState | str]:
    """Every node's state, or the reason it could not be read."""

    async def one(name: str, url: str) -> NodeState | str:
        try:
            return await fetch_state(session, name, url, within=within)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
            return f"{type(exc).__name__}: {exc}"[:200]

    results = await asyncio.gather(*(one(n, u) for n, u in nodes))
    return {n: r for (n, _), r in zip(nodes, results, strict=True)}


def identical(states: Iterable[NodeState | str]) -> bool:
    got = list(states)
    if not got or any(isinstance(s, str) for s in got):
        return False
    prints = {s.fingerprint() for s in got if isinstance(s, NodeState)}
    return len(prints) == 1


async def wait_converged(
    session: aiohttp.ClientSession,
    nodes: Sequence[tuple[str, str]],
    limit: float,
    poll: float = 0.25,
) -> tuple[float | None, dict[str, NodeState | str]]:
    """Poll until every node holds the same data; (seconds it took or None if not within
    `limit` seconds, the last states)."""
    start = time.monotonic()
    while True:
        states = await fetch_all(session, nodes)
        if identical(states.values()):
            return time.monotonic() - start, states
        if time.monotonic() - start > limit:
            return None, states
        await asyncio.sleep(poll)


def describe_difference(states: dict[str, NodeState | str], limit: int = 5) -> list[str]:
    """A few keys on which the nodes disagree, for the report."""
    good = {n: s for n, s in states.items() if isinstance(s, NodeState)}
    out = [f"{n}: unreadable ({s})" for n, s in states.items() if isinstance(s, str)]
    keys = sorted({k for s in good.values() for k in s.live})
    for key in keys:
        seen = {n: s.live.get(key) for n, s in good.items()}
        if len(set(seen.values())) > 1:
            versions = {
                n: (s.stored[key].version if key in s.stored else None) for n, s in good.items()
            }
            out.append(f"{key}: {seen} versions {versions}")
            if len(out) >= limit:
                break
    clears = {n: s.clear for n, s in good.items()}
    if len(set(clears.values())) > 1:
        out.append(f"clear versions differ: {clears}")
    return out


# --- judging the data ----------------------------------------------------------------------------


@dataclass
class Verdict:
    acked: int = 0
    attempted: int = 0
    lost: int = 0
    resurrected: int = 0
    phantom: int = 0
    partial: int = 0
    # Absences the verdict can neither confirm nor refute: only a delete, expiry or clear of
    # unknown version (or of unknown order against the write) may explain them.
    unverified: int = 0
    cleared: int = 0  # acknowledged transactions whose marker a clear ordered after them removed
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.resurrected or self.phantom or self.partial)

    def note(self, text: str, limit: int = 12) -> None:
        if len(self.details) < limit:
            self.details.append(text)


@dataclass(frozen=True, slots=True)
class _Op:
    """One write's effect on one key: a value (None: delete; `clear`: a range tombstone)."""

    write: Write
    value: str | None
    ts: int
    clear: bool = False

    def live_at(self, now: float) -> bool | None:
        """Should this op leave the key visible at wall time `now`? None: too close to call."""
        if self.clear or self.value is None:
            return False
        ttl = self.write.ttl
        if ttl is None:
            return True
        expires = wall_seconds_of(self.ts) + ttl
        if expires < now - TTL_MARGIN:
            return False
        if expires > now + TTL_MARGIN:
            return True
        return None


def _transaction_versions(writes: Sequence[Write], state: NodeState) -> dict[int, int]:
    """Timestamps of transactions, read from their marker keys (the last key of a `txn`)."""
    out: dict[int, int] = {}
    for w in writes:
        if w.kind != "txn":
            continue
        marker, value = w.keys[-1], w.values[-1]
        entry = state.stored.get(marker)
        if entry is not None and entry.value == value:
            out[w.id] = entry.ts
    return out


def judge(writes: Sequence[Write], state: NodeState, now: float | None = None) -> Verdict:
    """Judge one node's converged state against the history of writes (see the module doc)."""
    now = time.time() if now is None else now
    v = Verdict(
        acked=sum(1 for w in writes if w.acked),
        attempted=sum(1 for w in writes if w.outcome != "noop"),
    )
    txn_ts = _transaction_versions(writes, state)
    producers: dict[tuple[str, str], Write] = {}
    per_key: dict[str, list[_Op]] = {}
    clears: list[_Op] = []
    attempted_deletes: dict[str, list[Write]] = {}
    # Every clear that may be in the store, known before the loop: a transaction sent before
    # the clear is judged against it.
    clear_writes = [w for w in writes if w.kind == "clear" and w.maybe_applied]
    for w in writes:
        if w.kind == "clear":
            if w.acked and w.ts is not None:
                clears.append(_Op(w, None, w.ts, clear=True))
            continue
        for key, value in zip(w.keys, w.values, strict=True):
            if value is not None:
                producers[(key, value)] = w
            elif not w.acked and w.maybe_applied:
                attempted_deletes.setdefault(key, []).append(w)
        ts = w.ts if w.ts is not None else txn_ts.get(w.id)
        if not w.acked:
            continue
        if ts is None:
            if w.kind == "txn":
                _judge_lost_transaction(w, state, clear_writes, v)
            continue
        for key, value in zip(w.keys, w.values, strict=True):
            per_key.setdefault(key, []).append(_Op(w, value, ts))
    newest_clear = max(clears, key=_version, default=None)
    if newest_clear is not None and state.clear < _version(newest_clear):
        v.lost += 1
        v.note(f"clear at ts={newest_clear.ts} lost: the node's clear version is {state.clear}")
    attempted_clears = [w for w in clear_writes if not w.acked]
    for key in sorted(set(per_key) | set(state.live)):
        _judge_key(key, per_key.get(key, []), newest_clear, state, producers, v, now)
        if key in per_key and key not in state.live and key not in state.stored:
            _judge_absent(
                key, per_key[key], newest_clear, attempted_deletes, attempted_clears, v, now
            )
    deleted = {  # keys that may hold a purged tombstone: deleted, or written with a TTL
        k
        for w in writes
        if w.maybe_applied
        for k, val in zip(w.keys, w.values, strict=True)
        if val is None or w.ttl is not None
    }
    for w in writes:
        if len(w.keys) > 1 and w.maybe_applied:
            _judge_atomic(w, state, deleted, v)
    return v


def _version(op: _Op) -> tuple[int, str]:
    """The order of writes under last-writer-wins: (timestamp, writer node)."""
    return (op.ts, op.write.node or "")


def _newest(ops: list[_Op], clear: _Op | None) -> _Op | None:
    best = max(ops, key=_version, default=None)
    # Equal timestamps happen (two nodes' HLCs in the same millisecond): the node name decides.
    if clear is not None and (best is None or _version(clear) > _version(best)):
        return clear
    return best


def _judge_key(
    key: str,
    ops: list[_Op],
    clear: _Op | None,
    state: NodeState,
    producers: dict[tuple[str, str], Write],
    v: Verdict,
    now: float,
) -> None:
    live = state.live.get(key)
    entry = state.stored.get(key)
    if live is not None and (key, live) not in producers:
        v.phantom += 1
        v.note(f"{key}={live!r}: no recorded write produced this value")
        return
    newest = _newest(ops, clear)
    if newest is None or entry is None:
        return  # nothing acknowledged, or absent (judged by _judge_absent)
    node = newest.write.node
    if entry.ts > newest.ts or (entry.ts == newest.ts and (node is None or entry.node >= node)):
        return  # the newest acknowledged write, or something newer (attempted writes may win)
    expected = newest.live_at(now)
    if live is not None and expected is False:
        v.resurrected += 1
        v.note(
            f"{key}={live!r} (ts={entry.ts} {entry.node}) came back over the {newest.write.kind}"
            f" #{newest.write.id} at ts={newest.ts}"
        )
    elif expected is True:
        v.lost += 1
        shown = repr(live) if live is not None else f"a tombstone/expired {entry.value!r}"
        v.note(
            f"{key}: acknowledged {newest.write.kind} #{newest.write.id} {newest.value!r} "
            f"ts={newest.ts} via {newest.write.via} lost; the node shows {shown} at older "
            f"ts={entry.ts} ({entry.node})"
        )


def _judge_absent(
    key: str,
    ops: list[_Op],
    clear: _Op | None,
    attempted_deletes: dict[str, list[Write]],
    attempted_clears: list[Write],
    v: Verdict,
    now: float,
) -> None:
    """The key has no entry at all: deleted and purged, cleared, or lost."""
    newest = _newest(ops, clear)
    if newest is None or newest.live_at(now) is not True:
        return
    # A purged tombstone of an attempted delete (or an attempted clear) that ended after the
    # newest acknowledged write began may be newer than it: unverifiable, not lost.
    start = newest.write.start
    if any(w.end >= start for w in attempted_deletes.get(key, []) + attempted_clears):
        v.unverified += 1
        return
    v.lost += 1
    v.note(
        f"{key}: acknowledged {newest.write.kind} #{newest.write.id} {newest.value!r} "
        f"ts={newest.ts} via {newest.write.via} lost; the key is absent"
    )


def _judge_lost_transaction(
    w: Write, state: NodeState, clear_writes: Sequence[Write], v: Verdict
) -> None:
    """An acknowledged transaction whose marker is not there: lost, unless a clear that may have
    ordered after it removed it.

    The store drops every entry at or below its clear version (ts, node). If another key of the
    transaction still shows the transaction's value, that entry carries the transaction's
    version, and the node's clear is compared with it as the store compares them. Otherwise the
    version is unknown (COMMIT carries none, the marker is gone) and only the timing can tell, as
    for single writes against an attempted clear in `_judge_absent`: a clear stamped before the
    transaction began cannot cover it, so only a clear that ended at or after the transaction's
    start may have. (A clear that ended earlier was stamped earlier, as far as the nodes' clocks
    agree; the suite clears only in scenarios without clock skew.) Such a clear, acknowledged,
    makes the transaction `cleared`; only attempted, `unverified`.
    """
    marker = w.keys[-1]
    if marker in state.stored:
        return  # a marker is written once: present with another value is judged as phantom
    if state.clear != ZERO:
        for key, value in zip(w.keys[:-1], w.values[:-1], strict=True):
            entry = state.stored.get(key)
            if value is None or entry is None or entry.value != value:
                continue
            if entry.version <= state.clear:
                v.cleared += 1  # at or below the node's clear: removed by it
                return
            v.lost += 1
            v.note(
                f"transaction #{w.id} via {w.via} acknowledged, its marker {marker} is absent; "
                f"{key} shows it at {entry.version}, above the node's clear {state.clear}"
            )
            return
        overlapping = [c for c in clear_writes if c.end >= w.start]
        if any(c.acked for c in overlapping):
            v.cleared += 1  # cleared since (or lost before the clear: cannot tell)
            return
        if overlapping:
            v.unverified += 1  # only a clear that may never have been applied explains it
            return
    v.lost += 1
    cleared_before = " (every clear ended before it began)" if state.clear != ZERO else ""
    v.note(
        f"transaction #{w.id} via {w.via} acknowledged, its marker {marker} is absent"
        + cleared_before
    )


def _judge_atomic(w: Write, state: NodeState, deleted: set[str], v: Verdict) -> None:
    """A batch or transaction shows all of its writes, or what hides one is newer than it.

    A key with no entry at all was cleared, or deleted and its tombstone purged: the latter is
    accepted when some delete of the key was attempted (its version is gone with it).
    """
    visible = [k for k, val in zip(w.keys, w.values, strict=True) if state.live.get(k) == val]
    if not visible:
        return
    version = state.stored[visible[0]].version if visible[0] in state.stored else None
    if version is None:
        return
    for key, val in zip(w.keys, w.values, strict=True):
        if key in visible:
            continue
        entry = state.stored.get(key)
        if entry is not None and entry.version > version:
            continue  # overwritten by something newer
        if entry is None and state.clear > version:
            continue  # cleared after it
        if entry is None and key in deleted:
            v.unverified += 1  # perhaps deleted (or expired) after it, and purged since
            continue
        if entry is not None and entry.version == version and entry.value is None:
            continue  # expired with the write's own version (TTL batches)
        v.partial += 1
        shown = (entry.value, entry.version) if entry is not None else "absent"
        v.note(
            f"{w.kind} #{w.id} via {w.via} torn: {visible[0]} shows it at {version}, "
            f"{key} expected {val!r} but holds {shown}"
        )
        return


# --- membership -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    t: float  # time.monotonic()
    observer: str
    subject: str
    state: str


class Monitor:
    """Polls every node's /cluster/members and keeps each observer's view and its changes.

    `faulted` names the nodes a scenario broke (and when first); a dead verdict about a node
    never faulted, by an observer never faulted, is a false positive.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        nodes: Sequence[tuple[str, str]],
        interval: float = 0.25,
    ) -> None:
        self.session = session
        self.nodes = list(nodes)
        self.interval = interval
        self.views: dict[str, dict[str, str]] = {}
        self.history: list[Seen] = []
        self.faulted: dict[str, float] = {}
        # Nodes cut off by a partition, from when to when (None: not healed yet): what they
        # conclude about the others meanwhile is no false positive.
        self.cut_off: dict[str, list[float | None]] = {}
        self.whole: list[tuple[float, bool]] = []  # (when, every node sees every node alive)
        self._stop = asyncio.Event()

    def mark_faulted(self, *names: str) -> float:
        now = time.monotonic()
        for name in names:
            self.faulted.setdefault(name, now)
        return now

    def mark_cut_off(self, *names: str) -> None:
        now = time.monotonic()
        for name in names:
            self.cut_off.setdefault(name, [now, None])

    def healed(self, until: float) -> None:
        """Partitioned nodes are excused until `until` (the heal plus a grace period)."""
        for window in self.cut_off.values():
            if window[1] is None:
                window[1] = until

    def _excused(self, observer: str, t: float) -> bool:
        window = self.cut_off.get(observer)
        if window is None:
            return False
        start, end = window
        return start is not None and start <= t and (end is None or t <= end)

    def stop(self) -> None:
        self._stop.set()

    async def _poll(self, name: str, url: str) -> None:
        try:
            async with asyncio.timeout(1.0):
                async with self.session.get(url + "/cluster/members") as resp:
                    body = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return  # down, paused or cut off from the clients: no news from it
        now = time.monotonic()
        view = {m["name"]: m["state"] for m in body.get("members", [])}
        old = self.views.get(name, {})
        for subject, st in view.items():
            if old.get(subject) != st:
                self.history.append(Seen(now, name, subject, st))
        for subject in set(old) - set(view):
            self.history.append(Seen(now, name, subject, "forgotten"))
        self.views[name] = view
        whole = self.everyone_alive([n for n, _ in self.nodes])
        if not self.whole or self.whole[-1][1] != whole:
            self.whole.append((now, whole))

    def whole_again(self, since: float) -> float | None:
        """Seconds from `since` until every node saw every node alive again (0: it already did),
        replayed from `history` (the polls, and the nodes' logged transitions once merged)."""
        names = [n for n, _ in self.nodes]
        state = {(o, s): "alive" for o in names for s in names if o != s}
        bad = 0
        last_whole: float | None = None
        for seen in sorted(self.history, key=lambda x: x.t):
            pair = (seen.observer, seen.subject)
            if pair not in state:
                continue
            before = state[pair] == "alive"
            state[pair] = seen.state
            bad += int(before) - int(seen.state == "alive")
            if bad == 0 and last_whole is None:
                last_whole = seen.t
            elif bad:
                last_whole = None
            if seen.t > since and bad == 0:
                return max(0.0, seen.t - since)
        if bad == 0:
            return 0.0 if last_whole is None or last_whole <= since else last_whole - since
        return None

    async def poll_once(self) -> None:
        await asyncio.gather(*(self._poll(n, u) for n, u in self.nodes))

    async def run(self) -> None:
        """Poll every node on its own schedule, so a paused one does not slow the others."""

        async def observer(name: str, url: str) -> None:
            while not self._stop.is_set():
                await self._poll(name, url)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._stop.wait()

        await asyncio.gather(*(observer(n, u) for n, u in self.nodes))

    def _observers(self, subject: str, observers: Iterable[str] | None) -> set[str]:
        if observers is not None:
            return set(observers) - {subject}
        return {n for n, _ in self.nodes if n != subject and n not in self.faulted}

    def first(
        self, subject: str, states: set[str], since: float, observers: Iterable[str] | None = None
    ) -> float | None:
        """Seconds from `since` until one of `observers` (default: the nodes never faulted)
        first saw `subject` in one of `states`."""
        who = self._observers(subject, observers)
        for s in self.history:
            if s.t >= since and s.subject == subject and s.observer in who and s.state in states:
                return s.t - since
        return None

    def all_first(
        self, subject: str, states: set[str], since: float, observers: Iterable[str] | None = None
    ) -> float | None:
        """Seconds from `since` until every one of `observers` had seen `subject` in `states`."""
        who = self._observers(subject, observers)
        firsts: dict[str, float] = {}
        for s in self.history:
            if s.t >= since and s.subject == subject and s.observer in who and s.state in states:
                firsts.setdefault(s.observer, s.t - since)
        if not who or set(firsts) != who:
            return None
        return max(firsts.values())

    def all_see(self, subject: str, states: set[str], observers: Iterable[str]) -> bool:
        return all(self.views.get(o, {}).get(subject) in states for o in observers)

    def false_positives(self, logged: Iterable[Seen] = ()) -> list[Seen]:
        """Dead verdicts about a never-faulted node by an observer that could reach it.

        `logged` adds the transitions the nodes logged (brief ones fall between two polls).
        An observer cut off by a partition is excused until the heal (plus grace); a killed,
        paused or restarted node is not, once it runs again.
        """
        return [
            s
            for s in (*self.history, *logged)
            if s.state == "dead"
            and s.subject not in self.faulted
            and s.observer != s.subject
            and not self._excused(s.observer, s.t)
        ]

    def false_suspicions(self, logged: Iterable[Seen] = ()) -> int:
        return sum(
            1
            for s in (*self.history, *logged)
            if s.state == "suspect"
            and s.subject not in self.faulted
            and s.observer != s.subject
            and not self._excused(s.observer, s.t)
        )

    def everyone_alive(self, names: Sequence[str]) -> bool:
        return all(all(self.views.get(o, {}).get(s) == "alive" for s in names) for o in names)

    async def wait_everyone_alive(self, names: Sequence[str], limit: float) -> float | None:
        """Seconds until every node sees every node alive (None: not within `limit` s)."""
        start = time.monotonic()
        while time.monotonic() - start <= limit:
            await self.poll_once()
            if self.everyone_alive(names):
                return time.monotonic() - start
            await asyncio.sleep(self.interval)
        return None


_TRANSITION = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ \[[^\]]*\] cluster\.gossip: "
    r"node=(\S+) peer=(\S+) (\S+) -> (\S+) "
)


def logged_transitions(log: str, wall_minus_monotonic: float) -> list[Seen]:
    """Membership changes a node logged (`node=A peer=B old -> new`), on the monotonic clock.

    The log's times are the real wall clock (logging does not see --clock-offset)."""
    out = []
    for line in log.splitlines():
        m = _TRANSITION.match(line)
        if m is None:
            continue
        stamp, observer, subject, _, new = m.groups()
        wall = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.append(Seen(wall - wall_minus_monotonic, observer, subject, new))
    return out
