"""Who is in the mesh, as data: member states, snapshots, events, and what to send. Pure.

The states a member goes through (`ALIVE`, `SUSPECT`, `DEAD`, `LEFT`), the snapshot the API shows
(`Member`), the change events listeners get (`MemberEvent`), the datagrams the state machine asks
to send (`Outgoing`), and the records it keeps (`Record`, `Probe`, `Relay`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cluster.membership.messages import Message, PushPull

ALIVE: Final = "alive"
SUSPECT: Final = "suspect"
DEAD: Final = "dead"
LEFT: Final = "left"
DOWN: Final = (DEAD, LEFT)
UP: Final = (ALIVE, SUSPECT)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One datagram to send: messages in order; a PushPull goes alone, over HTTP in production."""

    address: str
    messages: tuple[Message, ...]

    @property
    def push_pull(self) -> bool:
        return isinstance(self.messages[0], PushPull)


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A member's state changed in our view. `old_state` None: first heard of; `new_state`
    None: forgotten (reaped, or we left the mesh). `by`: who removed it, when another member
    forced it out (a `left` that is a removal, not a graceful leave)."""

    name: str
    address: str
    old_state: str | None
    new_state: str | None
    incarnation: int
    by: str | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """A snapshot of one member. `since` is the `now` of its last state change."""

    name: str
    address: str
    state: str
    incarnation: int
    since: float

    def as_dict(self) -> dict[str, str | int]:
        """The shape of GET /cluster/members."""
        return {
            "name": self.name,
            "address": self.address,
            "state": self.state,
            "incarnation": self.incarnation,
        }


class Record:
    __slots__ = ("address", "incarnation", "name", "since", "state")

    def __init__(self, name: str, address: str, state: str, incarnation: int, since: float):
        self.name = name
        self.address = address
        self.state = state
        self.incarnation = incarnation
        self.since = since

    def snapshot(self) -> Member:
        return Member(self.name, self.address, self.state, self.incarnation, self.since)


class Probe:
    __slots__ = (
        "deadline",
        "direct_deadline",
        "expected_nacks",
        "indirect_sent",
        "nacks",
        "seq",
        "target",
    )

    def __init__(self, seq: int, target: str, direct_deadline: float, deadline: float) -> None:
        self.seq = seq
        self.target = target
        self.direct_deadline = direct_deadline
        self.deadline = deadline
        self.indirect_sent = False
        self.expected_nacks = 0
        self.nacks = 0


@dataclass(frozen=True, slots=True)
class Relay:
    """A ping we sent on behalf of a ping-req: relay the ack to `requester`, or nack."""

    seq: int
    requester: str
    deadline: float
    nack: bool
