"""The consistency checker's decisions (loadtest.check.judge) on synthetic histories.

Each rule is shown passing on a correct history and failing on one that breaks it, so the checker
provably can fail: lost acknowledged writes, resurrected deletes, phantom values, divergence, an
unreadable node and stale reads; and the cases it must accept (a write whose answer was lost may
win, ties it cannot break, stale reads after a partially acknowledged write).

What last-writer-wins allows for one key is loadtest.oracle's decision, tested in test_oracle.py;
here, how the checker turns ops into the oracle's writes (outcomes, timestamps, nodes) and counts
its answers.
"""

from __future__ import annotations

import pytest

from loadtest.check import ACKED, REJECTED, UNKNOWN, Op, Read, judge, parse_seconds

_ids = iter(range(1, 10_000))


def op(
    changes: dict[str, str | None],
    ts: int | None = None,
    node: str | None = "n1",
    status: int | None = 200,
    replicas: tuple[int, int] | None = (3, 3),
    upstreams: int = 1,
) -> Op:
    kind = "batch" if len(changes) > 1 else ("delete" if None in changes.values() else "set")
    return Op(
        next(_ids),
        kind,
        changes,
        status=status,
        ts=ts if status == 200 else None,
        node=node,
        replicas=replicas if status == 200 else None,
        upstreams=upstreams,
    )


def same(view: dict[str, str], nodes: int = 3) -> dict[str, dict[str, str]]:
    return {f"n{i}": dict(view) for i in range(1, nodes + 1)}


def rules(report: object) -> list[tuple[str, str]]:
    return [(v.rule, v.key) for v in report.violations]  # type: ignore[attr-defined]


def test_outcomes() -> None:
    assert op({"k": "a"}, ts=1).outcome == ACKED
    assert op({"k": "a"}, status=None).outcome == UNKNOWN  # no answer: may have been applied
    assert op({"k": "a"}, status=502).outcome == UNKNOWN
    assert op({"k": "a"}, status=400).outcome == REJECTED
    assert op({"k": None}, status=404).outcome == REJECTED  # nothing to delete
    # A delete retried by nginx that answers 404: the first attempt may have deleted it.
    assert op({"k": None}, status=404, upstreams=2).outcome == UNKNOWN


def test_the_latest_acknowledged_write_wins() -> None:
    ops = [op({"k": "a"}, ts=10), op({"k": "b"}, ts=20), op({"j": "c"}, ts=5)]
    report = judge(ops, same({"k": "b", "j": "c"}))
    assert report.ok, report.violations
    assert (report.keys_present, report.keys_absent) == (2, 0)


@pytest.mark.parametrize(
    ("ops", "view", "expected"),
    [
        ([op({"k": "a"}, ts=10), op({"k": "b"}, ts=20)], {"k": "a"}, [("lost-write", "k")]),
        ([op({"k": None}, ts=10), op({"k": "b"}, ts=20)], {}, [("lost-write", "k")]),
        ([op({"k": "a"}, ts=10), op({"k": None}, ts=20)], {}, []),
        ([op({"k": "a"}, ts=10), op({"k": None}, ts=20)], {"k": "a"}, [("resurrected", "k")]),
        # X-Upstream names the node: equal timestamps order by it.
        ([op({"k": "a"}, ts=10, node="n1"), op({"k": "b"}, ts=10, node="n2")], {"k": "b"}, []),
        (
            [op({"k": "a"}, ts=10, node="n1"), op({"k": "b"}, ts=10, node="n2")],
            {"k": "a"},
            [("lost-write", "k")],
        ),
    ],
    ids=["older-value", "absent", "deleted", "resurrected", "node-orders", "node-lost"],
)
def test_the_oracles_rules_reach_the_report(
    ops: list[Op], view: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    assert rules(judge(ops, same(view))) == expected


def test_a_value_nobody_wrote_is_a_phantom() -> None:
    ops = [op({"k": "a"}, ts=10)]
    assert rules(judge(ops, same({"k": "zzz"}))) == [("phantom", "k")]
    assert rules(judge(ops, same({"k": "a", "other": "x"}))) == [("phantom", "other")]
    # A write that was certainly not applied cannot explain a value either.
    assert rules(judge([op({"k": "a"}, status=400)], same({"k": "a"}))) == [("phantom", "k")]


def test_a_batch_is_judged_key_by_key() -> None:
    batch = op({"x": "b1", "y": "b1"}, ts=20)
    ops = [op({"x": "a"}, ts=10), batch, op({"y": "c"}, ts=30)]
    assert judge(ops, same({"x": "b1", "y": "c"})).ok
    assert rules(judge(ops, same({"x": "a", "y": "c"}))) == [("lost-write", "x")]


def test_a_write_whose_answer_was_lost_may_win() -> None:
    ops = [op({"k": "a"}, ts=10), op({"k": "u"}, status=None)]
    report = judge(ops, same({"k": "u"}))
    assert report.ok
    assert report.won_by_unknown == 1
    assert judge(ops, same({"k": "a"})).ok  # or not have been applied at all
    # An unanswered delete may have won too.
    assert judge([op({"k": "a"}, ts=10), op({"k": None}, status=504)], same({})).ok


def test_a_tie_with_an_unknown_node_accepts_either_value() -> None:
    ops = [op({"k": "a"}, ts=10, node=None), op({"k": "b"}, ts=10, node="n2")]
    for value in ("a", "b"):
        report = judge(ops, same({"k": value}))
        assert report.ok
        assert report.ties == 1


def test_nodes_that_disagree_diverged() -> None:
    ops = [op({"k": "a"}, ts=10), op({"k": "b"}, ts=20)]
    data = {"n1": {"k": "b"}, "n2": {"k": "b"}, "n3": {"k": "a"}}
    report = judge(ops, data)
    assert ("diverged", "k") in rules(report)
    # The stale node's view is judged on its own too.
    assert ("lost-write", "k") in rules(report)
    assert any("on n3" in v.detail for v in report.violations if v.rule == "lost-write")


def test_a_node_that_cannot_be_read_fails_the_run() -> None:
    report = judge([op({"k": "a"}, ts=10)], {"n1": {"k": "a"}}, unavailable=["n2"])
    assert rules(report) == [("unavailable", "n2")]


def test_reads_of_ones_own_writes() -> None:
    full = op({"p": "v1"}, ts=10)
    partial = op({"q": "w1"}, ts=11, replicas=(2, 3))
    ops = [full, partial]
    data = same({"p": "v1", "q": "w1"})
    fresh = [Read(full.id, "p", "v1", "v1", 200)]
    assert judge(ops, data, fresh).ok
    stale = [Read(full.id, "p", "v1", None, 404)]
    assert rules(judge(ops, data, stale)) == [("read-your-writes", "p")]
    # After a write only some nodes acknowledged, a stale read is reported, not a violation.
    report = judge(ops, data, [Read(partial.id, "q", "w1", None, 404)])
    assert report.ok
    assert report.stale_after_partial == 1


@pytest.mark.parametrize(
    ("text", "seconds"), [("20", 20.0), ("20s", 20.0), ("1m", 60.0), ("1m30s", 90.0), ("2.5", 2.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds
