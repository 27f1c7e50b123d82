"""The membership events of the last minutes, as the dashboard and `kvmesh status` show them. Pure.

Each `MemberEvent` becomes one entry named as an operator says it: a member `joined` (first heard
of, or back after being dead or gone), turned `suspect`, was declared `dead`, `refuted` a suspicion,
`left` by itself or was `removed` by another member, or was `forgotten` (reaped long after it went
down, or dropped when this node left the mesh). Entries older than the retention are dropped, and
the count is bounded, so a flapping member cannot grow the list without end.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from cluster.membership.members import ALIVE, DEAD, LEFT, SUSPECT, MemberEvent


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: float  # wall-clock seconds
    name: str
    kind: str
    incarnation: int
    detail: str = ""

    def as_dict(self) -> dict[str, str | int | float]:
        return {
            "at": self.at,
            "name": self.name,
            "kind": self.kind,
            "incarnation": self.incarnation,
            "detail": self.detail,
        }


def kind_of(event: MemberEvent) -> str:
    """What an operator calls this change."""
    old, new = event.old_state, event.new_state
    if new is None:
        return "forgotten"
    if new == ALIVE:
        return "refuted" if old == SUSPECT else "joined"
    if new == SUSPECT:
        return "suspect"
    if new == DEAD:
        return "dead"
    if new == LEFT:
        return "removed" if event.by else "left"
    return new


class Timeline:
    """The last `keep` seconds of membership events, at most `max_entries` of them."""

    def __init__(self, keep: float = 900.0, max_entries: int = 1000) -> None:
        self.keep = keep
        self._entries: deque[TimelineEntry] = deque(maxlen=max_entries)

    def record(self, event: MemberEvent, at: float) -> TimelineEntry:
        detail = f"by {event.by}" if event.by else ""
        entry = TimelineEntry(at, event.name, kind_of(event), event.incarnation, detail)
        self._entries.append(entry)
        return entry

    def entries(self, now: float) -> list[TimelineEntry]:
        """The entries of the last `keep` seconds, oldest first (older ones are dropped)."""
        while self._entries and self._entries[0].at < now - self.keep:
            self._entries.popleft()
        return list(self._entries)
