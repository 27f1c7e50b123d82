"""The last-writer-wins oracle: what a key may hold after a history of writes. Pure.

The one place that decides, for one key, whether a final value is one last-writer-wins allows:
`loadtest.check` (a client's history through the balancer), `loadtest.faults.verdict` (the fault
suite, reading every stored version) and the data-plane simulation (`tests.sim.dataplane`) each
turn what they observed into `Write`s and ask `decide` (or `judge_key`); they only count.

The store orders versions `(timestamp, node)` and the highest wins; a delete is a version with no
value; a clear is a delete of every key at its version; an expired TTL write is a delete at the
write's version. Given every write made to a key and which of them were acknowledged (`certain`:
they must survive unless a higher version superseded them), a final value breaks one rule:

- lost-write:  a certain write is gone, and nothing with a higher version replaced it;
- resurrected: a value came back although a certain delete (or clear) with a higher version
               removed it;
- phantom:     a value no write stored.

What the caller knows of a write is often less than its version:

- a write whose outcome is unknown (no answer came back, or its node crashed before it
  replicated) may or may not have survived: it can explain a final value, it never has to;
- a write whose version is unknown (`version` None) may order anywhere, unless its `span` says it
  ended before the newest certain write began (then it is older: a version is stamped while its
  request runs, and the callers that pass spans assume the nodes' clocks agree that far);
- a write whose node is unknown (`version` `(ts, None)`) ties with every version of that
  timestamp: when it is among the newest certain writes, either of them may have won.

The caller may also know the final entry's version (the simulation reads it from the store, the
fault verdict from each node's snapshot): the judgement is then exact, the version settles which
write produced the value and whether it is new enough. When it knows only the value (a client
reading through HTTP), the value must match a write that may have won, and an allowance that only
a write of unknown outcome or version provides is flagged `uncertain`: it is neither confirmed nor
refuted (`check` counts such keys as won by an unanswered write, the verdict counts such absences
as unverified).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Version = tuple[int, str]  # (timestamp, node): how the store orders entries
Stamp = tuple[int, str | None]  # what a client learned of a version: the node may be unknown


@dataclass(frozen=True, slots=True)
class Write:
    """One write of one key: `value` None is a delete (or a clear, or an expiry)."""

    version: Stamp | None  # None: unknown (no answer came back); (ts, None): the node is unknown
    value: str | None
    certain: bool  # acknowledged: it must survive unless a higher version replaced it
    label: str = ""  # how messages name it
    span: tuple[float, float] | None = None  # (sent, answered) on the caller's monotonic clock


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str  # "lost-write", "resurrected" or "phantom"
    key: str
    detail: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The oracle's answer for one key: a violation, or None and how sure the allowance is."""

    violation: Violation | None
    # Allowed only because a write of unknown outcome or version may have produced the final
    # value (or absence): never set when the caller gave the final version (that settles it).
    uncertain: bool = False
    # More than one certain write may be the newest (equal timestamps, a node unknown): the final
    # value may be any of theirs. Counted, not a failure.
    tie: bool = False

    @property
    def ok(self) -> bool:
        return self.violation is None


def _at(version: Stamp | None) -> str:
    if version is None:
        return "an unknown version"
    ts, node = version
    return f"ts {ts} on {node if node is not None else 'an unknown node'}"


def _name(w: Write) -> str:
    what = "delete" if w.value is None else f"set {w.value!r}"
    return f"{w.label or 'a write'} ({what} at {_at(w.version)})"


def _floor(w: Write) -> Version:
    """The lowest version `w` may have: its node, if unknown, orders below every node name."""
    assert w.version is not None
    ts, node = w.version
    return (ts, node or "")


def _may_reach(w: Write, floor: Version | None, top: Write | None) -> bool:
    """May `w` order at or above `floor`, the version every certain write is known to reach
    (`top` is the certain write holding it)?"""
    if floor is None or top is None:
        return True
    if w.version is None:
        # Unknown: anywhere, unless it was answered before the newest certain write was sent.
        return w.span is None or top.span is None or w.span[1] >= top.span[0]
    ts, node = w.version
    if node is None:
        return ts >= floor[0]  # any node of that timestamp, so also the highest
    return (ts, node) >= floor


def _may_be(w: Write, version: Version) -> bool:
    """May `w` have been stored at exactly `version`?"""
    if w.version is None:
        return True
    ts, node = w.version
    return ts == version[0] and (node is None or node == version[1])


def decide(
    key: str,
    writes: Sequence[Write],
    final: str | None,
    final_version: Version | None = None,
) -> Decision:
    """Whether `final` (None: absent) is a value last-writer-wins allows after `writes`.

    `final_version`: the version of the entry holding `final` (a tombstone's, when `final` is
    None), when the caller read it; None when it knows only the value, or the key has no entry at
    all (absent, or its tombstone purged).

    What must stay true: a certain write with a known version is never ignored (the final value
    is at least as new as every one of them), a write of unknown outcome or version is never
    required, and with the final version known nothing is `uncertain`.
    """
    known = [w for w in writes if w.certain and w.version is not None]
    top = max(known, key=_floor, default=None)
    floor = _floor(top) if top is not None else None
    # The certain writes that may be the newest: the top, and those tied with it on a timestamp
    # whose node is unknown.
    contenders = [w for w in known if _may_reach(w, floor, top)]
    tie = len(contenders) > 1 and any(w.version and w.version[1] is None for w in contenders)
    if final_version is not None:
        return Decision(_exact(key, writes, final, final_version, top, contenders), tie=tie)
    if top is None and final is None:
        return Decision(None, tie=tie)  # nothing had to survive, and nothing did
    if any(w.value == final for w in contenders):
        return Decision(None, tie=tie)
    if any(w.value == final and _may_reach(w, floor, top) for w in writes):
        return Decision(None, uncertain=True, tie=tie)
    if final is None:
        assert top is not None
        return Decision(Violation("lost-write", key, f"is absent, below {_name(top)}"), tie=tie)
    candidates = [w for w in writes if w.value == final]
    if not candidates or top is None:
        detail = f"holds {final!r}, which no write to this key stored"
        return Decision(Violation("phantom", key, detail), tie=tie)
    rule = "resurrected" if top.value is None else "lost-write"
    detail = f"holds {final!r} from {_name(candidates[-1])}, older than {_name(top)}"
    return Decision(Violation(rule, key, detail), tie=tie)


def _exact(
    key: str,
    writes: Sequence[Write],
    final: str | None,
    final_version: Version,
    top: Write | None,
    contenders: Sequence[Write],
) -> Violation | None:
    """The judgement when the final entry's version is known.

    A value must have been stored at that version by some write (a tombstone's origin is not
    checked: an expiry turns a value into one), and the version must reach every certain write.
    A tombstone older than a certain delete still leaves the key absent, which is what that
    delete promised; an older tombstone under a certain value is a lost write, whatever deletes
    of unknown version were attempted (had one won, its tombstone would be the newer one).
    """
    if final is not None and not any(
        w.value == final and _may_be(w, final_version) for w in writes
    ):
        return Violation(
            "phantom", key, f"holds {final!r} at {_at(final_version)}: no write stored it there"
        )
    if top is None or final_version >= _floor(top):
        return None
    if final is None and any(w.value is None for w in contenders):
        return None
    if final is None:
        return Violation(
            "lost-write",
            key,
            f"is absent (a tombstone at {_at(final_version)}), below {_name(top)}",
        )
    rule = "resurrected" if top.value is None else "lost-write"
    return Violation(rule, key, f"holds {final!r} at {_at(final_version)}, below {_name(top)}")


def judge_key(
    key: str,
    writes: Sequence[Write],
    final: str | None,
    final_version: Version | None = None,
) -> Violation | None:
    """None if `final` (None: absent) is a value last-writer-wins allows after `writes`: `decide`
    without the counts."""
    return decide(key, writes, final, final_version).violation
