"""The verdict: after the faults heal and writes stop, is the data what last-writer-wins promises?

What is read, from every alive node directly (never through the balancer):

- `GET /getAll`: the client's view (live keys only, expired ones excluded);
- `GET /internal/snapshot` (paged): every stored version `[key, value|null, ts, node, expires]`,
  tombstones included, and the clear (range tombstone) version. That is how the verdict learns
  the version of values whose write was never acknowledged, and of transactions (the line
  protocol's COMMIT carries no timestamp: each transaction writes a marker key of its own).

Per key, what last-writer-wins allows is decided by `loadtest.oracle` (the same oracle
`loadtest.check` and the data-plane simulation ask), given the key's writes as the history shows
them (`_oracle_writes`: acknowledged clears write every key, an expired TTL write is a delete at
its version) and the node's entry at the version its snapshot shows. Counted here:

- lost:        an acknowledged value is gone: the node shows an older version, or nothing (no
               newer tombstone, clear or attempted delete explains the absence); also an
               acknowledged clear the node's clear version does not reach;
- resurrected: the newest acknowledged write is a delete, a clear or an expired TTL write, and
               the node shows a live value of an older version;
- phantom:     a live value no write that may be in the store produced (at that version);
- partial:     a batch or transaction (acknowledged or not) of which some key shows its value
               while another of its keys shows a version *older* than it (torn);
- an unacknowledged write may win: a value whose version is at least the newest acknowledged
  one is fine;
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
from loadtest import oracle
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


def _live_at(w: Write, ts: int, now: float) -> bool | None:
    """Should `w`'s value, stamped `ts`, still be visible at wall time `now`? None: too close to
    call (its TTL runs out within TTL_MARGIN of `now`: clock skew and scheduling decide)."""
    if w.ttl is None:
        return True
    expires = wall_seconds_of(ts) + w.ttl
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


def _label(w: Write) -> str:
    return f"{'acknowledged' if w.acked else 'attempted'} {w.kind} #{w.id} via {w.via}"


def _oracle_writes(
    writes: Sequence[Write], txn_ts: dict[int, int], now: float
) -> tuple[dict[str, list[oracle.Write]], list[oracle.Write]]:
    """What the history tells `loadtest.oracle`: each key's writes, and the clears (every key's).

    Only writes that may be in the store count (a refused or no-op one wrote nothing). An
    acknowledged write with a timestamp (X-Timestamp, or its transaction's marker) is certain at
    (that timestamp, the node that answered, None if unknown); without one it may explain a value
    or an absence, never has to. An unacknowledged write may or may not have been applied, at a
    version never seen; its span lets the oracle rule it out against a write sent after it was
    answered. A TTL write is a value while its TTL runs, then a delete at its version (its value
    may still show where the expiry has not been applied yet); too close to call, either. A value
    sent through the balancer may also have been stored by an attempt nginx gave up on (a broken
    connection), at a version the answer did not report: that twin can explain where the value
    shows, never has to, and never explains an absence.
    """
    per_key: dict[str, list[oracle.Write]] = {}
    clears: list[oracle.Write] = []
    for w in writes:
        if not w.maybe_applied:
            continue
        label, span = _label(w), (w.start, w.end)
        ts = w.ts if w.ts is not None else txn_ts.get(w.id)
        version = (ts, w.node) if w.acked and ts is not None else None
        if w.kind == "clear":
            clears.append(oracle.Write(version, None, w.acked, label, span))
            continue
        for key, value in zip(w.keys, w.values, strict=True):
            out = per_key.setdefault(key, [])
            if version is None or value is None:
                out.append(oracle.Write(version, value, w.acked, label, span))
                continue
            assert ts is not None
            live = _live_at(w, ts, now)
            out.append(oracle.Write(version, value, live is not False, label, span))
            if live is not True:
                out.append(oracle.Write(version, None, True, f"{label}, expired", span))
            if w.via == "lb" and w.kind != "txn":
                out.append(oracle.Write(None, value, False, f"{label}, an earlier attempt", span))
    return per_key, clears


def judge(writes: Sequence[Write], state: NodeState, now: float | None = None) -> Verdict:
    """Judge one node's converged state against the history of writes (see the module doc).

    Per key, `loadtest.oracle` decides from the node's entry (the live value or a tombstone, at
    the version its snapshot shows; nothing at all if absent and purged): this counts. Only an
    absence is unverified: where an entry exists its version settles the question.
    """
    now = time.time() if now is None else now
    v = Verdict(
        acked=sum(1 for w in writes if w.acked),
        attempted=sum(1 for w in writes if w.outcome != "noop"),
    )
    txn_ts = _transaction_versions(writes, state)
    # Every clear that may be in the store: a transaction sent before the clear is judged
    # against it.
    clear_writes = [w for w in writes if w.kind == "clear" and w.maybe_applied]
    for w in writes:
        if w.kind == "txn" and w.acked and w.ts is None and w.id not in txn_ts:
            _judge_lost_transaction(w, state, clear_writes, v)
    acked_clears = [w for w in clear_writes if w.acked and w.ts is not None]
    newest_clear = max(acked_clears, key=lambda w: (w.ts or 0, w.node or ""), default=None)
    if newest_clear is not None and state.clear < (newest_clear.ts or 0, newest_clear.node or ""):
        v.lost += 1
        v.note(f"clear at ts={newest_clear.ts} lost: the node's clear version is {state.clear}")
    per_key, clears = _oracle_writes(writes, txn_ts, now)
    for key in sorted(set(per_key) | set(state.live)):
        live, entry = state.live.get(key), state.stored.get(key)
        decision = oracle.decide(
            key, per_key.get(key, []) + clears, live, entry.version if entry else None
        )
        if decision.violation is not None:
            rule = decision.violation.rule
            if rule == "phantom":
                v.phantom += 1
            elif rule == "resurrected":
                v.resurrected += 1
            else:
                v.lost += 1
            v.note(f"{key}: {decision.violation.detail}")
        elif decision.uncertain and live is None and entry is None:
            v.unverified += 1  # only a delete or clear of unknown version may explain it
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


def _judge_lost_transaction(
    w: Write, state: NodeState, clear_writes: Sequence[Write], v: Verdict
) -> None:
    """An acknowledged transaction whose marker is not there: lost, unless a clear that may have
    ordered after it removed it.

    The store drops every entry at or below its clear version (ts, node). If another key of the
    transaction still shows the transaction's value, that entry carries the transaction's
    version, and the node's clear is compared with it as the store compares them. Otherwise the
    version is unknown (COMMIT carries none, the marker is gone) and only the timing can tell, as
    the oracle tells it by their spans for a delete or clear of unknown version: a clear stamped
    before the transaction began cannot cover it, so only a clear that ended at or after the
    transaction's start may have. (A clear that ended earlier was stamped earlier, as far as the
    nodes' clocks agree; the suite clears only in scenarios without clock skew.) Such a clear,
    acknowledged, makes the transaction `cleared`; only attempted, `unverified`.
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
