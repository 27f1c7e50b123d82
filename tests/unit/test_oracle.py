"""The last-writer-wins oracle (loadtest.oracle.decide) on tables of one key's writes.

The checker, the fault verdict and the data-plane simulation all ask this oracle whether a key's
final value is one last-writer-wins allows, so its rules are tested here, once, as tables: each
row a history, a final value (and, in exact mode, its version) and the expected answer. The
callers' own tests cover only how they turn what they observed into `Write`s and count answers.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from loadtest.oracle import Decision, Stamp, Version, Write, decide, judge_key


def acked(
    ts: int,
    value: str | None,
    node: str | None = "n1",
    span: tuple[float, float] | None = None,
) -> Write:
    """A certain write at (ts, node); node None: only the timestamp is known."""
    return Write((ts, node), value, True, f"w{ts}", span)


def unknown(
    value: str | None, version: Stamp | None = None, span: tuple[float, float] | None = None
) -> Write:
    """A write whose outcome is unknown, at an unknown version unless given."""
    return Write(version, value, False, "u", span)


class Case(NamedTuple):
    writes: list[Write]
    final: str | None
    final_version: Version | None = None
    rule: str | None = None  # the violation expected, None: allowed
    uncertain: bool = False
    tie: bool = False


def run(case: Case) -> Decision:
    return decide("k", case.writes, case.final, case.final_version)


def check(case: Case) -> None:
    got = run(case)
    assert (got.violation.rule if got.violation else None) == case.rule, got
    assert (got.uncertain, got.tie) == (case.uncertain, case.tie), got
    # judge_key is decide without the counts.
    assert judge_key("k", case.writes, case.final, case.final_version) == got.violation


LATEST = [acked(10, "a"), acked(20, "b")]
DELETED = [acked(10, "a"), acked(20, None)]

RULES = {
    "the newest certain write holds": Case(LATEST, "b"),
    "lost-write: an older value won": Case(LATEST, "a", rule="lost-write"),
    "lost-write: absent although the newest certain write is a set": Case(
        [acked(10, None), acked(20, "b")], None, rule="lost-write"
    ),
    "absent after the newest certain write, a delete": Case(DELETED, None),
    "resurrected: a value over a newer certain delete": Case(DELETED, "a", rule="resurrected"),
    "phantom: a value no write stored": Case([acked(10, "a")], "zzz", rule="phantom"),
    "phantom: no writes at all": Case([], "a", rule="phantom"),
    "absent, and nothing was written": Case([], None),
}

UNKNOWN_OUTCOMES = {
    "an unknown outcome may have won": Case([acked(10, "a"), unknown("u")], "u", uncertain=True),
    "or not have been applied at all": Case([acked(10, "a"), unknown("u")], "a"),
    "an unknown delete may explain an absence": Case(
        [acked(10, "a"), unknown(None)], None, uncertain=True
    ),
    "nothing certain: absent is fine, and not uncertain": Case([unknown("u")], None),
    "nothing certain: an unknown outcome's value": Case([unknown("u")], "u", uncertain=True),
    "an unknown outcome at a version below the newest certain one cannot win": Case(
        [acked(20, "a"), unknown("u", (10, "n1"))], "u", rule="lost-write"
    ),
    "an unknown outcome at a version above it may": Case(
        [acked(20, "a"), unknown("u", (30, "n2"))], "u", uncertain=True
    ),
    "a certain write of unknown version may explain a value, never has to": Case(
        [acked(10, "a"), Write(None, "c", True, "c")], "c", uncertain=True
    ),
    "and is not required": Case([acked(10, "a"), Write(None, "c", True, "c")], "a"),
}

ABSENCES = {
    "absent: explained by a delete above the newest certain version": Case(
        [acked(20, "a"), unknown(None, (30, "n1"))], None, uncertain=True
    ),
    "absent: a delete at the newest certain version (a TTL too close to call)": Case(
        [acked(20, "a"), acked(20, None)], None
    ),
    "absent: a delete below it explains nothing": Case(
        [acked(20, "a"), unknown(None, (10, "n2"))], None, rule="lost-write"
    ),
    "absent: an unknown delete answered before the newest certain write was sent": Case(
        [acked(10, "a", span=(5.0, 6.0)), unknown(None, span=(1.0, 2.0))],
        None,
        rule="lost-write",
    ),
    "absent: an unknown delete overlapping it may be newer": Case(
        [acked(10, "a", span=(5.0, 6.0)), unknown(None, span=(1.0, 5.0))], None, uncertain=True
    ),
    "absent: without spans an unknown delete may be anywhere": Case(
        [acked(10, "a", span=(5.0, 6.0)), unknown(None)], None, uncertain=True
    ),
}

TIES = {
    "equal timestamps: the greater node name won": Case(
        [acked(10, "a", "n1"), acked(10, "b", "n2")], "b"
    ),
    "equal timestamps: the lesser node name lost": Case(
        [acked(10, "a", "n1"), acked(10, "b", "n2")], "a", rule="lost-write"
    ),
    "a tie with an unknown node: its value may have won": Case(
        [acked(10, "a", None), acked(10, "b", "n2")], "a", tie=True
    ),
    "a tie with an unknown node: or the other": Case(
        [acked(10, "a", None), acked(10, "b", "n2")], "b", tie=True
    ),
    "a tie with an unknown node: absent is still lost": Case(
        [acked(10, "a", None), acked(10, "b", "n2")], None, rule="lost-write", tie=True
    ),
    "a tie with an unknown node: a tied delete explains an absence": Case(
        [acked(10, None, None), acked(10, "b", "n2")], None, tie=True
    ),
    "an unknown node on an older timestamp is no tie": Case(
        [acked(9, "a", None), acked(10, "b", "n2")], "a", rule="lost-write"
    ),
    "an unknown node on the newest write alone is no tie": Case(
        [acked(9, "a", "n1"), acked(10, "b", None)], "b"
    ),
}

EXACT = {
    "exact: the newest certain version": Case(LATEST, "b", (20, "n1")),
    "exact: an older version": Case(LATEST, "a", (10, "n1"), rule="lost-write"),
    "exact: a value at a version none of its writes had": Case(
        LATEST, "b", (10, "n1"), rule="phantom"
    ),
    "exact: a value over a newer certain delete": Case(
        DELETED, "a", (10, "n1"), rule="resurrected"
    ),
    "exact: an unknown outcome above the newest certain version, settled": Case(
        [acked(20, "a"), unknown("u")], "u", (30, "n2")
    ),
    "exact: an unknown outcome below it": Case(
        [acked(20, "a"), unknown("u")], "u", (10, "n2"), rule="lost-write"
    ),
    "exact: a newest write of unknown node is reached by any node of its timestamp": Case(
        [acked(20, "a", None), unknown("u")], "u", (20, "n0")
    ),
    "exact: but not by an older timestamp": Case(
        [acked(20, "a", None), unknown("u")], "u", (19, "n9"), rule="lost-write"
    ),
    "exact: its own value matches its timestamp on any node": Case(
        [acked(20, "a", None)], "a", (20, "n3")
    ),
    "exact: a tombstone at or above the newest certain version": Case(
        [acked(10, "a"), unknown(None)], None, (20, "n1")
    ),
    "exact: a tombstone below a certain value, attempted deletes notwithstanding": Case(
        [acked(20, "a"), unknown(None)], None, (10, "n1"), rule="lost-write"
    ),
    "exact: a tombstone below a certain delete still leaves the key absent": Case(
        DELETED, None, (15, "n1")
    ),
}


@pytest.mark.parametrize("case", list(RULES.values()), ids=list(RULES))
def test_the_rules(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("case", list(UNKNOWN_OUTCOMES.values()), ids=list(UNKNOWN_OUTCOMES))
def test_unknown_outcomes_may_or_may_not_survive(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("case", list(ABSENCES.values()), ids=list(ABSENCES))
def test_absences(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("case", list(TIES.values()), ids=list(TIES))
def test_ties(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("case", list(EXACT.values()), ids=list(EXACT))
def test_exact_mode_with_the_final_version(case: Case) -> None:
    check(case)


def test_a_violation_names_the_key_and_the_writes() -> None:
    writes = [Write((10, "n1"), "a", True, "op 1"), Write((20, "n2"), "b", True, "op 2")]
    v = judge_key("k", writes, "a")
    assert v is not None
    assert (v.rule, v.key) == ("lost-write", "k")
    assert "op 1" in v.detail
    assert "op 2 (set 'b' at ts 20 on n2)" in v.detail
