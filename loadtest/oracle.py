"""The last-writer-wins oracle: what a key may hold after a history of writes. Pure.

The store orders versions `(timestamp, node)` and the highest wins; a delete is a version with no
value; a clear is a delete of every key at its version. Given every write made to a key and which
of them were acknowledged (`certain`: they must survive unless a higher version superseded them),
`judge_key` says whether a final value is one last-writer-wins allows:

- lost-write:  a certain write is gone, and nothing with a higher version replaced it;
- resurrected: a value came back although a certain delete (or clear) with a higher version
               removed it;
- phantom:     a value no write stored.

A write whose outcome is unknown (the client saw no answer, or its node crashed before it
replicated) may or may not have survived: it can explain a final value, it never has to. When the
caller knows the final entry's version (the simulation reads it from the store), the judgement is
exact; when it knows only the value (a client reading through HTTP), the value must match a write
that may have won.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Version = tuple[int, str]


@dataclass(frozen=True, slots=True)
class Write:
    """One write of one key: `value` None is a delete (or a clear)."""

    version: Version | None  # None: the timestamp is unknown (no answer came back)
    value: str | None
    certain: bool  # acknowledged: it must survive unless a higher version replaced it
    label: str = ""  # how messages name it


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str  # "lost-write", "resurrected" or "phantom"
    key: str
    detail: str


def _name(w: Write) -> str:
    what = "delete" if w.value is None else f"set {w.value!r}"
    return f"{w.label or 'a write'} ({what} at {w.version})"


def judge_key(
    key: str,
    writes: Sequence[Write],
    final: str | None,
    final_version: Version | None = None,
) -> Violation | None:
    """None if `final` (None: absent) is a value last-writer-wins allows after `writes`.

    `final_version`: the version of the entry holding `final`, when the caller knows it.
    """
    certain = [w for w in writes if w.certain and w.version is not None]
    top = max(certain, key=lambda w: w.version or (0, ""), default=None)
    if final_version is not None and final is not None:
        producers = [w for w in writes if w.version == final_version and w.value == final]
        if not producers:
            return Violation("phantom", key, f"holds {final!r} at {final_version}: no write stored it")
        if top is not None and top.version is not None and final_version < top.version:
            rule = "resurrected" if top.value is None else "lost-write"
            return Violation(
                rule, key, f"holds {final!r} at {final_version}, below {_name(top)}"
            )
        return None
    if final is None:
        if top is None or top.value is None:
            return None
        # Absent although a value was acknowledged: a delete at least as new must explain it.
        assert top.version is not None
        if any(w.value is None and (w.version is None or w.version >= top.version) for w in writes):
            return None
        return Violation("lost-write", key, f"is absent; the latest acknowledged is {_name(top)}")
    # The value alone: it must come from a write that may have won.
    candidates = [w for w in writes if w.value == final]
    if not candidates:
        return Violation("phantom", key, f"holds {final!r}, which no write to this key stored")
    if top is None or top.version is None:
        return None
    if any(w.version is None or w.version >= top.version for w in candidates):
        return None
    rule = "resurrected" if top.value is None else "lost-write"
    return Violation(rule, key, f"holds {final!r}, older than {_name(top)}")
