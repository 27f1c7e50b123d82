"""One node's view of the mesh and the rules that update it (the ordering of SWIM updates). Pure.

`View` holds the member table and applies one update at a time: an `Alive`, a suspicion, a death
notice, a leave or a removal, and a full remote state (`merge_state`). The protocol that produces
those updates (probes, gossip, push/pull, join and leave) is `swim.Membership`, built on it.

Ordering of updates about one member (what must stay true)
- A lower incarnation is always ignored. A higher one wins, except that a dead or left member
  comes back only through an `Alive` (a suspicion or death notice adds nothing to it).
- At equal incarnations: alive < suspect < dead, left (alive never overrides suspect/dead/left).
- Only a member itself raises its own incarnation (refute, rejoin), except `remove` (+1).
- A node restarted under the same name starts from a higher incarnation (the IO layer passes
  the wall clock in milliseconds), so it overrides whatever the mesh remembers of its last life.
- Dead and left members stay as tombstones for `reap_after` seconds, so that old gossip about
  them is recognised as old.

Where this differs from memberlist, and why
- A refutation is also sent straight to every member, not only gossiped: its loss is what gets a
  healthy node declared dead (in simulation at 10% loss and 50 nodes this took false deaths from
  about one per 10 minutes to none seen).
- A known name at a new address needs a higher incarnation even once dead (memberlist lets a
  dead node's address be reclaimed at any incarnation); a restart has one anyway.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable

from cluster.membership.broadcasts import Broadcasts
from cluster.membership.members import (
    ALIVE,
    DEAD,
    DOWN,
    LEFT,
    SUSPECT,
    UP,
    Member,
    MemberEvent,
    Outgoing,
    Record,
)
from cluster.membership.messages import Alive, Dead, Leave, MemberState, Message, Suspect
from cluster.membership.suspicion import (
    Awareness,
    GossipParams,
    SuspicionTimer,
    confirmations_wanted,
    suspicion_timeout,
)

logger = logging.getLogger(__name__)


class View:
    """The member table, our own record in it, and the update rules.

    `incarnation` is where this node's own incarnation starts: pass something that grows across
    restarts (the wall clock in ms), so a restarted node outbids its previous life.
    """

    def __init__(
        self,
        name: str,
        address: str,
        params: GossipParams,
        rng: random.Random,
        incarnation: int = 0,
    ) -> None:
        self.name = name
        self.address = address
        self.params = params.validate()
        self._rng = rng
        self._me = Record(name, address, ALIVE, incarnation, 0.0)
        self._members: dict[str, Record] = {name: self._me}
        self._suspicions: dict[str, SuspicionTimer] = {}
        self._broadcasts = Broadcasts()
        self._events: list[MemberEvent] = []
        self._outbox: list[Outgoing] = []  # sent with the answer to whatever caused them
        self._awareness = Awareness(params.awareness_max_multiplier)
        self._probe_order: list[str] = []  # who to probe next (a new member gets a random slot)
        self._left = False  # we left (or were removed): a mesh of one until we join again

    # --- queries --------------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def left(self) -> bool:
        """True after leave() or a forced removal, until start_join()."""
        return self._left

    @property
    def health_score(self) -> int:
        """Lifeguard local health: 0 is healthy; probes slow down by (score + 1)."""
        return self._awareness.score

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def member(self, name: str) -> Member | None:
        record = self._members.get(name)
        return record.snapshot() if record is not None else None

    def members(self) -> list[Member]:
        """Every member we know, self included, sorted by name."""
        return [self._members[n].snapshot() for n in sorted(self._members)]

    def alive_peers(self) -> list[Member]:
        """Other members currently alive (suspects excluded), sorted by name."""
        return [
            r.snapshot()
            for n, r in sorted(self._members.items())
            if r.state == ALIVE and r is not self._me
        ]

    def local_state(self) -> tuple[MemberState, ...]:
        """Our whole view, for a push/pull. After a leave we tell others we are `left`, although
        in our own view we are the one alive member of a mesh of one."""
        me = self._me
        return tuple(
            MemberState(
                r.name, r.address, LEFT if r is me and self._left else r.state, r.incarnation
            )
            for r in self._members.values()
        )

    def take_events(self) -> list[MemberEvent]:
        """State changes since the last call, in order."""
        events, self._events = self._events, []
        return events

    def pending_broadcasts(self) -> int:
        return len(self._broadcasts)

    def _n(self) -> int:
        """Cluster size estimate for timeouts and retransmits: members alive or suspect."""
        return sum(1 for r in self._members.values() if r.state in UP)

    def _on_alive(self, msg: Alive, now: float) -> None:
        me = self._me
        if msg.node == self.name:
            if self._left:
                return  # we left: echoes of our old alive messages must not pull us back in
            if msg.incarnation < me.incarnation:
                return  # old news about us
            if msg.incarnation == me.incarnation and msg.address == me.address:
                return  # our own announcement, echoed back
            # Someone claims a newer us, or our name at another address: outbid it.
            logger.warning(
                "node=%s alive message about us at %s (incarnation %d): refuting",
                self.name,
                msg.address,
                msg.incarnation,
            )
            self._refute(msg.incarnation)
            return
        if self._left:
            return  # we left the mesh: its news is not ours until we join again
        record = self._members.get(msg.node)
        if record is None:
            record = Record(msg.node, msg.address, ALIVE, msg.incarnation, now)
            self._members[msg.node] = record
            # A random slot, not the end: appending everywhere would make new nodes probed last.
            self._probe_order.insert(self._rng.randint(0, len(self._probe_order)), msg.node)
            self._event(record, None, ALIVE)
            self._broadcast(msg.node, msg)
            return
        if msg.incarnation <= record.incarnation:
            return  # ignore old incarnation numbers
        if record.address != msg.address and record.state in UP:
            # Two live processes claim one name: keep the first until it fails.
            logger.warning(
                "node=%s peer=%s conflicting address %s (we know %s, %s)",
                self.name,
                msg.node,
                msg.address,
                record.address,
                record.state,
            )
            return
        self._suspicions.pop(msg.node, None)
        old = record.state
        record.incarnation = msg.incarnation
        record.address = msg.address
        if old != ALIVE:
            record.state = ALIVE
            record.since = now
            self._event(record, old, ALIVE)
        self._broadcast(msg.node, msg)

    def _accused(self, msg: Suspect | Dead) -> Record | None:
        """The record a suspicion or death notice is about, or None if it changes nothing here.

        An accusation about ourselves is refuted on the spot (and also returns None).
        """
        if msg.node == self.name:
            if self._left:
                return None  # we left: accusations no longer concern us
            if msg.incarnation < self._me.incarnation:
                return None  # an old accusation, already refuted
            logger.debug("node=%s refuting %s from %s", self.name, type(msg).__name__, msg.sender)
            self._refute(msg.incarnation)
            return None
        if self._left:
            return None  # we left the mesh: its news is not ours until we join again
        record = self._members.get(msg.node)
        if record is None:
            return None  # never heard of it: nothing to suspect or bury
        if msg.incarnation < record.incarnation:
            return None  # ignore old incarnation numbers
        return record

    def _on_suspect(self, msg: Suspect, now: float) -> None:
        record = self._accused(msg)
        if record is None:
            return
        timer = self._suspicions.get(msg.node)
        if timer is not None and msg.incarnation == record.incarnation:
            # Lifeguard: an independent confirmation shortens the timeout and is worth spreading.
            if timer.confirm(msg.sender, now):
                self._broadcast(msg.node, msg)
            return
        if record.state in DOWN:
            return  # already dead or left: a suspicion adds nothing
        old = record.state
        record.state = SUSPECT
        record.incarnation = msg.incarnation
        record.since = now
        n = self._n()
        p = self.params
        min_timeout = suspicion_timeout(p.suspicion_mult, n, p.probe_interval)
        self._suspicions[msg.node] = SuspicionTimer(
            msg.sender,
            confirmations_wanted(p.suspicion_mult, n),
            min_timeout,
            min_timeout * p.suspicion_max_timeout_mult,
            now,
        )
        if old != SUSPECT:
            self._event(record, old, SUSPECT)
        self._broadcast(msg.node, msg)

    def _on_dead(self, msg: Dead, now: float) -> None:
        record = self._accused(msg)
        if record is None:
            return
        if record.state in DOWN:
            return  # already dead or left
        if record.state == ALIVE and msg.sender != msg.node:
            # We still hear from it: someone else's verdict (perhaps from the far side of a
            # partition that just healed) only makes it a suspect here, so it can refute.
            self._on_suspect(Suspect(msg.node, msg.incarnation, msg.sender), now)
            return
        self._set_down(record, DEAD, msg.incarnation, now)
        self._broadcast(msg.node, msg)

    def _on_leave(self, msg: Leave, now: float) -> None:
        if msg.node == self.name:
            if self._left:
                return  # already out
            if msg.incarnation < self._me.incarnation:
                return  # an old leave or removal: we have joined again since
            # At or past our incarnation, and we did not leave: an operator removed us. Obey.
            logger.warning("node=%s removed from the mesh by %s", self.name, msg.sender)
            self._enter_left(msg.incarnation, now)
            return
        if self._left:
            return  # we left the mesh: its news is not ours until we join again
        record = self._members.get(msg.node)
        if record is None:
            return  # never heard of it: nothing to forget
        if msg.incarnation < record.incarnation:
            return  # ignore old incarnation numbers
        if record.state == LEFT:
            if msg.incarnation > record.incarnation:  # a removal outbidding a graceful leave
                record.incarnation = msg.incarnation
                self._broadcast(msg.node, msg)
            return
        by = msg.sender if msg.sender != msg.node else None
        self._set_down(record, LEFT, msg.incarnation, now, by)
        self._broadcast(msg.node, msg)

    def _set_down(
        self, record: Record, state: str, incarnation: int, now: float, by: str | None = None
    ) -> None:
        self._suspicions.pop(record.name, None)
        old = record.state
        record.state = state
        record.incarnation = incarnation
        record.since = now
        self._event(record, old, state, by)

    def _refute(self, accused: int) -> None:
        """Outbid an accusation: an incarnation above both ours and the accused one.

        A lost refutation is the one loss that gets a healthy node declared dead, so it is not
        left to epidemic chance alone (memberlist only gossips it): it is also sent once straight
        to every member. Refutations are rare; one datagram per member each is cheap.
        """
        me = self._me
        me.incarnation = max(me.incarnation + 1, accused + 1)
        self._awareness.apply(1)  # Lifeguard: being suspected hints that we are slow
        alive = Alive(self.name, self.address, me.incarnation)
        self._broadcast(self.name, alive)
        self._outbox.extend(
            Outgoing(r.address, (alive,))
            for r in self._members.values()
            if r is not self._me and r.state in UP
        )

    def _event(
        self, record: Record, old: str | None, new: str | None, by: str | None = None
    ) -> None:
        self._events.append(
            MemberEvent(record.name, record.address, old, new, record.incarnation, by)
        )

    def _broadcast(self, name: str, msg: Message) -> None:
        self._broadcasts.add(name, msg)

    def merge_state(self, remote: Iterable[MemberState], now: float) -> None:
        """Fold a remote full state into ours, as if each entry had been gossiped.

        A remote "dead" only makes a member suspect here (memberlist): it gets its own chance to
        refute before we bury it on someone else's word.
        """
        for r in remote:
            if r.state == ALIVE:
                self._on_alive(Alive(r.name, r.address, r.incarnation), now)
            elif r.state == LEFT:
                # A full state does not say who made it leave: taken as a graceful leave.
                sender = self.name if r.name == self.name else r.name
                self._on_leave(Leave(r.name, r.incarnation, sender), now)
            else:
                self._on_suspect(Suspect(r.name, r.incarnation, self.name), now)

    def _enter_left(self, incarnation: int, now: float) -> None:
        """Become a mesh of one: forget every peer, stop probing, keep our incarnation.

        Our own record stays `alive`: in our view we are the one member of a mesh of one, and we
        keep serving. What the old mesh hears is `left` (the `_left` flag makes `local_state`,
        ping answers and push/pull replies say so).
        """
        for record in [r for r in self._members.values() if r is not self._me]:
            self._event(record, record.state, None)
        me = self._me
        me.incarnation = max(me.incarnation, incarnation)
        me.since = now
        self._members = {self.name: me}
        self._suspicions.clear()
        self._broadcasts.clear()
        self._outbox.clear()
        self._probe_order = []
        self._left = True
