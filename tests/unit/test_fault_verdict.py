"""The fault suite's verdict (loadtest.faults.verdict.judge) on hand-made histories and states.

The judge decides whether the fault suite passes, so it gets tests of its own: each rule once
with the state that satisfies it and once with the state that breaks it. What last-writer-wins
allows for one key is loadtest.oracle's decision (its rules are tested in test_oracle.py); here,
how the verdict models the history for it (outcomes, TTLs, clears, transactions, the balancer's
retries) and what it counts.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from loadtest.faults.load import Write
from loadtest.faults.scenarios import QUICK, Result, markdown, take_verdicts
from loadtest.faults.verdict import NodeState, Stored, Verdict, judge

NOW = 1_700_000_100.0  # seconds; every timestamp below is a few seconds before this


def ts(second: float, logical: int = 0) -> int:
    """An HLC timestamp `second` seconds after 1_700_000_000."""
    return (int((1_700_000_000 + second) * 1000) << 16) | logical


class History:
    def __init__(self) -> None:
        self.writes: list[Write] = []

    def add(
        self,
        kind: str,
        keys: tuple[str, ...],
        values: tuple[str | None, ...],
        at: float | None,
        outcome: str = "ok",
        ttl: float | None = None,
        start: float = 0.0,
    ) -> Write:
        w = Write(len(self.writes) + 1, kind, keys, values, "lb", start, start + 0.01)
        w.outcome, w.ts, w.ttl = outcome, (ts(at) if at is not None else None), ttl
        self.writes.append(w)
        return w

    def set(self, key: str, value: str, at: float | None, **kw: object) -> Write:
        return self.add("set", (key,), (value,), at, **kw)  # type: ignore[arg-type]

    def delete(self, key: str, at: float | None, **kw: object) -> Write:
        return self.add("delete", (key,), (None,), at, **kw)  # type: ignore[arg-type]


def state(
    stored: dict[str, tuple[str | None, float, str]] | None = None,
    clear: tuple[float, str] | None = None,
    expires: dict[str, float] | None = None,
) -> NodeState:
    """A node holding `stored` (key -> (value or None, second, node)); live = non-tombstones."""
    entries = {
        k: Stored(v, ts(at), node, (expires or {}).get(k))
        for k, (v, at, node) in (stored or {}).items()
    }
    live = {
        k: e.value
        for k, e in entries.items()
        if e.value is not None and (e.expires is None or e.expires > NOW)
    }
    return NodeState("n1", live, entries, (ts(clear[0]), clear[1]) if clear else (0, ""))


def verdict(h: History, s: NodeState) -> Verdict:
    return judge(h.writes, s, now=NOW)


def test_the_newest_acknowledged_write_held_is_fine() -> None:
    h = History()
    h.set("a", "v1", 1)
    h.set("a", "v2", 2)
    v = verdict(h, state({"a": ("v2", 2, "n1")}))
    assert v.ok
    assert (v.acked, v.lost) == (2, 0)


def _lost_rule(h: History) -> None:
    h.set("a", "v1", 1)
    h.set("a", "v2", 2)


def _deleted(h: History) -> None:
    h.set("a", "v1", 1)
    h.delete("a", 2)


def _late(h: History) -> None:
    h.set("a", "v1", 2)
    h.set("a", "late", None, outcome="timeout")


@pytest.mark.parametrize(
    ("history", "stored", "counts"),
    [
        (_lost_rule, {"a": ("v1", 1, "n1")}, (1, 0, 0)),  # an older value over a newer ack
        (_lost_rule, {}, (1, 0, 0)),  # the acknowledged value missing altogether
        (_deleted, {"a": (None, 2, "n1")}, (0, 0, 0)),
        (_deleted, {"a": ("v1", 1, "n1")}, (0, 1, 0)),  # a value over a newer delete
        (_lost_rule, {"a": ("forged", 5, "n9")}, (0, 0, 1)),  # no write produced it
        (_late, {"a": ("late", 3, "n2")}, (0, 0, 0)),  # an unacknowledged write newer: it won
        (_late, {"a": ("late", 1, "n2")}, (1, 0, 0)),  # older than an ack: it may not win
    ],
    ids=["older", "missing", "deleted", "resurrected", "phantom", "late-newer", "late-older"],
)
def test_the_oracles_rules_reach_the_counters(
    history: Callable[[History], None],
    stored: dict[str, tuple[str | None, float, str]],
    counts: tuple[int, int, int],
) -> None:
    h = History()
    history(h)
    v = verdict(h, state(stored))
    assert (v.lost, v.resurrected, v.phantom) == counts, v.details


def test_a_refused_write_explains_no_value() -> None:
    h = History()
    h.set("a", "v1", 1)
    h.set("a", "nope", None, outcome="refused")  # a 4xx: nothing was written
    assert verdict(h, state({"a": ("nope", 3, "n2")})).phantom == 1


def test_a_value_shows_at_its_acknowledged_version_unless_nginx_may_have_retried() -> None:
    # Sent to a node directly, a write has one version: its value elsewhere was stored by no one.
    h = History()
    direct = h.set("a", "v1", 2)
    direct.via = direct.node = "n1"
    assert verdict(h, state({"a": ("v1", 2, "n1")})).ok
    assert verdict(h, state({"a": ("v1", 3, "n1")})).phantom == 1
    # Through the balancer an earlier attempt (a broken connection, retried on another node) may
    # have stored it at a version the answer did not report.
    h = History()
    h.set("a", "v1", 2)
    assert verdict(h, state({"a": ("v1", 3, "n2")})).ok


def test_a_ttl_too_close_to_call_may_show_or_not_but_nothing_older() -> None:
    h = History()
    h.set("a", "old", 1)
    h.set("a", "short", 2, ttl=NOW - 1_700_000_002)  # runs out right now
    assert verdict(h, state({"a": ("short", 2, "n1")})).ok
    assert verdict(h, state({"a": (None, 2, "n1")})).ok
    assert verdict(h, state({})).ok
    assert not verdict(h, state({"a": ("old", 1, "n1")})).ok


def test_an_acknowledged_clear_without_a_timestamp_leaves_absences_unverified() -> None:
    h = History()
    h.set("a", "v1", 1)
    h.add("clear", (), (), None, start=0.005)  # acknowledged, but no X-Timestamp came back
    v = verdict(h, state({}))
    assert (v.lost, v.unverified) == (0, 1)


def test_an_unacknowledged_delete_may_explain_an_absence() -> None:
    h = History()
    h.set("a", "v1", 1)
    h.delete("a", None, outcome="timeout", start=0.005)
    v = verdict(h, state({}))
    assert (v.lost, v.unverified) == (0, 1)


def test_an_expired_ttl_write_must_not_let_an_older_value_back() -> None:
    h = History()
    h.set("a", "old", 1)
    h.set("a", "short", 2, ttl=1.0)  # expired long before NOW
    assert verdict(h, state({"a": (None, 2, "n1")})).ok  # reclaimed into a tombstone
    assert verdict(h, state({})).ok  # and purged
    assert verdict(h, state({"a": ("old", 1, "n1")})).resurrected == 1


def test_a_clear_hides_older_keys_and_must_itself_survive() -> None:
    h = History()
    h.set("a", "v1", 1)
    h.add("clear", (), (), 2)
    h.set("b", "v2", 3)
    assert verdict(h, state({"b": ("v2", 3, "n1")}, clear=(2, "n1"))).ok
    lost_clear = verdict(h, state({"a": ("v1", 1, "n1"), "b": ("v2", 3, "n1")}))
    assert lost_clear.lost >= 1
    assert lost_clear.resurrected == 1


def test_a_batch_is_whole_or_hidden_only_by_newer_writes() -> None:
    h = History()
    h.add("batch", ("a", "b"), ("xa", "xb"), 2)
    h.set("b", "newer", 3)
    assert verdict(h, state({"a": ("xa", 2, "n1"), "b": ("newer", 3, "n2")})).ok
    torn = verdict(h, state({"a": ("xa", 2, "n1"), "b": ("older", 1, "n2")}))
    assert torn.partial == 1


def test_an_unacknowledged_transaction_is_still_all_or_nothing() -> None:
    h = History()
    h.add("txn", ("a", "b", "m1"), ("ta", "tb", "tm"), None, outcome="timeout")
    assert verdict(h, state({})).ok  # never applied
    assert verdict(h, state({"a": ("ta", 2, "n1"), "b": ("tb", 2, "n1"), "m1": ("tm", 2, "n1")})).ok
    torn = verdict(h, state({"a": ("ta", 2, "n1"), "m1": ("tm", 2, "n1")}))
    assert torn.partial == 1


def test_an_acknowledged_transaction_is_versioned_by_its_marker() -> None:
    h = History()
    h.set("a", "before", 1)
    h.add("txn", ("a", "b", "m1"), ("ta", "tb", "tm"), None)  # COMMIT has no timestamp
    whole = state({"a": ("ta", 2, "n1"), "b": ("tb", 2, "n1"), "m1": ("tm", 2, "n1")})
    assert verdict(h, whole).ok
    # The marker proves the transaction is at second 2: "a" at second 1 lost its write.
    torn = verdict(
        h, state({"a": ("before", 1, "n1"), "b": ("tb", 2, "n1"), "m1": ("tm", 2, "n1")})
    )
    assert torn.partial == 1
    assert torn.lost == 1
    assert verdict(h, state({"a": ("before", 1, "n1")})).lost == 1  # the marker is gone too


def test_a_transaction_wiped_by_a_clear_is_counted_apart() -> None:
    h = History()
    h.add("txn", ("a", "m1"), ("ta", "tm"), None)
    h.add("clear", (), (), 5)
    v = verdict(h, state({}, clear=(5, "n1")))
    assert v.ok
    assert v.cleared == 1


def test_a_clear_at_the_same_timestamp_wins_or_loses_by_node_name() -> None:
    # Two nodes' HLCs can issue the same timestamp: (ts, node) orders them, as the store does.
    h = History()
    put = h.set("a", "v1", 5)
    put.node = "n1"
    clear = h.add("clear", (), (), 5)
    clear.node = "n3"
    assert verdict(h, state({}, clear=(5, "n3"))).ok  # (5, n3) > (5, n1): the clear wins
    put.node, clear.node = "n3", "n1"
    assert verdict(h, state({"a": ("v1", 5, "n3")}, clear=(5, "n1"))).ok
    assert verdict(h, state({}, clear=(5, "n1"))).lost == 1


def test_a_transaction_committed_after_a_clear_and_then_lost_is_lost() -> None:
    # The clear ended (at 0.01 s) before the transaction began (1.0 s): it cannot have wiped it.
    h = History()
    h.add("clear", (), (), 5, start=0.0)
    h.add("txn", ("a", "m1"), ("ta", "tm"), None, start=1.0)  # COMMIT has no timestamp
    v = verdict(h, state({}, clear=(5, "n1")))
    assert (v.lost, v.cleared, v.unverified) == (1, 0, 0)
    assert "transaction #2" in v.details[0]


def test_a_transaction_overlapping_a_clear_is_still_excused() -> None:
    # The transaction runs from 1.0 to 1.01 s; its version is unknown (COMMIT has no timestamp,
    # the marker is gone), so any clear that ended at or after 1.0 s may have ordered after it.
    for clear_start, clear_end in ((0.995, 1.005), (0.99, 1.0), (2.0, 2.01)):
        h = History()
        h.add("txn", ("a", "m1"), ("ta", "tm"), None, start=1.0)
        clear = h.add("clear", (), (), 5, start=clear_start)
        clear.end = clear_end
        v = verdict(h, state({}, clear=(5, "n1")))
        assert v.ok, (clear_start, clear_end, v.details)
        assert (v.cleared, v.unverified) == (1, 0)


def test_a_transaction_overlapping_only_an_unacknowledged_clear_is_unverified() -> None:
    h = History()
    h.add("clear", (), (), 5, start=0.0)  # acknowledged, ended before the transaction began
    h.add("txn", ("a", "m1"), ("ta", "tm"), None, start=1.0)
    h.add("clear", (), (), None, outcome="timeout", start=1.005)  # may or may not have applied
    v = verdict(h, state({}, clear=(6, "n1")))  # a clear newer than the acknowledged one
    assert v.ok
    assert (v.lost, v.cleared, v.unverified) == (0, 0, 1)


def test_a_transaction_still_showing_on_a_key_is_ordered_against_the_clear() -> None:
    # "a" shows the transaction's value: its entry carries the transaction's version, compared
    # with the node's clear by (ts, node) as the store does, whatever the timing says.
    h = History()
    h.add("txn", ("a", "m1"), ("ta", "tm"), None, start=1.0)
    h.add("clear", (), (), 5, start=1.0)  # overlaps the transaction in time
    above = verdict(h, state({"a": ("ta", 5, "n2")}, clear=(5, "n1")))
    assert (above.lost, above.cleared) == (1, 0)
    assert "above the node's clear" in above.details[0]
    assert above.partial == 1  # and "a" without its marker is a torn transaction
    covered = verdict(h, state({"a": ("ta", 5, "n0")}, clear=(5, "n1")))
    assert covered.ok
    assert covered.cleared == 1


def test_unverified_absences_are_counted_and_shown_in_the_table() -> None:
    h = History()
    h.set("a", "v1", 1)
    h.delete("a", None, outcome="timeout", start=0.005)  # may explain "a"'s absence, or not
    h.set("b", "v2", 2)
    h.delete("b", None, outcome="failed", start=0.005)
    h.add("txn", ("c", "m1"), ("tc", "tm"), None, start=1.0)
    h.add("clear", (), (), None, outcome="timeout", start=1.0)  # may have wiped the transaction
    v = verdict(h, state({}, clear=(5, "n1")))
    assert v.ok
    assert v.unverified == 3
    result = Result("isolate", "isolate one node", 3)
    take_verdicts(result, [v])
    assert (result.unverified, result.lost, result.failures) == (3, 0, [])  # not a failure
    skipped = Result("split", "split brain", 5, skipped="needs root")
    table = [
        line for line in markdown([result, skipped], QUICK).splitlines() if line.startswith("|")
    ]
    header, _, row, skipped_row = (
        [c.strip() for c in line.strip("|").split("|")] for line in table
    )
    column = header.index("unverified")
    assert header[column - 1] == "torn batch/txn"
    assert row[column] == "3"
    assert len(row) == len(header) == len(skipped_row)
    assert any("3 absences unverified" in note for note in result.notes)
