"""SWIM membership with the Lifeguard refinements, as a pure state machine (hashicorp/memberlist).

No sockets, no clock, no module-level random: `tick(now)` and `handle(sender, msg, now)` take the
time and return the datagrams to send (`Outgoing`); deadlines are stored numbers compared in
`tick`; every random choice comes from the `random.Random` passed in. The IO layer
(`cluster.net.gossip`) and the simulations (tests/unit/sim.py, tests/sim/) drive the same code.
The member table and the rules that order updates are `rules.View`, which this builds on.

The protocol
- Probe: every probe interval (stretched by local health) ping the next member of a shuffled
  round-robin list. No ack within the probe timeout: ask `indirect_checks` others to ping it
  (ping-req); they relay the ack, or a nack if they got nothing (Lifeguard: no nacks from them
  means *we* may be the sick one). No ack by the end of the interval: suspect it.
- Suspicion: a suspect has `min..max` seconds to refute, shrinking as independent members confirm
  (suspicion.SuspicionTimer); then it is declared dead. A member refutes a suspicion (or a death
  notice) about itself by raising its incarnation and gossiping `Alive`.
- Dissemination: every change is queued and piggybacked on pings, acks and gossip rounds to a few
  random members, each at most `retransmit_limit` times, newest first. A full state push/pull
  with a random member (over HTTP in production) repairs what gossip lost, and a periodic
  push/pull with a random *dead* member heals partitions (serf's reconnect).
- Join, leave, remove: `start_join` sends our state to seeds; `leave` is an intent
  (`Leave(node=self)`) sent to every member, after which we are a mesh of one; `remove` is the
  same intent about someone else at one incarnation past what we knew, so stale `Alive` gossip
  cannot undo it - only the node itself, rejoining with a higher incarnation, can.

Where this differs from memberlist, and why (see rules.py for the update rules' differences)
- Piggybacked updates go before the message they ride on, and an accusation before its ping, so
  an ack already carries what the updates made the receiver say (its refutation above all).
- An ack to a member we think suspect, dead or left tells it so (it refutes, or learns that it
  was removed); memberlist leaves that to gossip-to-the-dead and push/pull.
- No TCP fallback ping, no node metadata, no protocol version negotiation (the `VERSION` of
  cluster.membership.messages stands for it).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable

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
    Probe,
    Record,
    Relay,
)
from cluster.membership.messages import (
    PACKET_OVERHEAD,
    Ack,
    Alive,
    Dead,
    Leave,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    encoded_size,
)
from cluster.membership.rules import View
from cluster.membership.suspicion import GossipParams, push_pull_interval, retransmit_limit

logger = logging.getLogger(__name__)

__all__ = [
    "ALIVE",
    "DEAD",
    "LEFT",
    "SUSPECT",
    "GossipParams",
    "Member",
    "MemberEvent",
    "Membership",
    "Outgoing",
]


class Membership(View):
    """One node's view of the mesh (`View`) and the SWIM protocol that maintains it."""

    def __init__(
        self,
        name: str,
        address: str,
        params: GossipParams,
        rng: random.Random,
        incarnation: int = 0,
    ) -> None:
        super().__init__(name, address, params, rng, incarnation)
        self._probe: Probe | None = None
        self._relays: dict[int, Relay] = {}
        self._probe_index = 0
        self._seq = rng.randrange(1 << 31)
        self._joined = False
        self._started = False
        self._next_probe = self._next_gossip = self._next_push_pull = self._next_reconnect = 0.0

    # --- queries --------------------------------------------------------------------------------

    @property
    def joined(self) -> bool:
        """True once a push/pull answer arrived since the last start_join()."""
        return self._joined

    def next_deadline(self) -> float:
        """The earliest `now` at which tick() has something to do."""
        if not self._started:
            return float("-inf")
        if self._left:
            return float("inf")
        d = min(self._next_probe, self._next_push_pull, self._next_reconnect)
        if self._broadcasts:
            d = min(d, self._next_gossip)
        if self._probe is not None:
            p = self._probe
            d = min(d, p.deadline if p.indirect_sent else p.direct_deadline)
        for relay in self._relays.values():
            d = min(d, relay.deadline)
        for timer in self._suspicions.values():
            d = min(d, timer.deadline)
        return d

    # --- time -----------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Outgoing]:
        """Run every timer that is due: relays, the probe, suspicions, then new rounds."""
        out: list[Outgoing] = []
        if not self._started:
            self._start_timers(now)
        if self._left:
            return out
        self._expire_relays(now, out)
        self._advance_probe(now, out)
        self._expire_suspicions(now)
        p = self.params
        if now >= self._next_probe:
            self._start_probe(now, out)
            self._next_probe = now + self._awareness.scale(p.probe_interval)
        if now >= self._next_gossip:
            self._next_gossip = now + p.gossip_interval
            self._gossip(now, out)
        if now >= self._next_push_pull:
            self._next_push_pull = now + push_pull_interval(p.push_pull_interval, self._n())
            self._push_pull_random(out, (ALIVE,))
        if now >= self._next_reconnect:
            self._next_reconnect = now + p.reconnect_interval
            self._push_pull_random(out, (DEAD,))
        return self._drain(out)

    def _start_timers(self, now: float) -> None:
        # Random stagger so that nodes started together do not probe and gossip in lockstep.
        p, rng = self.params, self._rng
        self._started = True
        self._me.since = now
        self._next_probe = now + rng.uniform(0, p.probe_interval)
        self._next_gossip = now + rng.uniform(0, p.gossip_interval)
        self._next_push_pull = now + rng.uniform(0, p.push_pull_interval)
        self._next_reconnect = now + p.reconnect_interval

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFF_FFFF_FFFF_FFFF
        return self._seq

    # --- probing --------------------------------------------------------------------------------

    def _start_probe(self, now: float, out: list[Outgoing]) -> None:
        target = self._next_probe_target(now)
        if target is None:
            return
        p = self.params
        seq = self._next_seq()
        msgs: list[Message] = [Ping(seq, target.name, self.name, self.address)]
        if target.state == SUSPECT:
            # The accusation goes first: the target refutes before it acks, so the ack itself
            # carries the refutation back to us.
            msgs.insert(0, Suspect(target.name, target.incarnation, self.name))
        out.append(self._packet(target.address, msgs))
        interval = self._awareness.scale(p.probe_interval)
        self._probe = Probe(seq, target.name, now + p.probe_timeout, now + interval)

    def _next_probe_target(self, now: float) -> Record | None:
        """Round-robin over a shuffled list, reshuffled (and reaped) at each wrap (memberlist)."""
        checked = 0
        while checked <= len(self._probe_order):
            if self._probe_index >= len(self._probe_order):
                self._reset_probe_order(now)
                if not self._probe_order:
                    return None
            name = self._probe_order[self._probe_index]
            self._probe_index += 1
            checked += 1
            record = self._members.get(name)
            if record is not None and record.state in UP:
                return record
        return None

    def _reset_probe_order(self, now: float) -> None:
        self._reap(now)
        self._probe_order = [n for n in self._members if n != self.name]
        self._rng.shuffle(self._probe_order)
        self._probe_index = 0

    def _reap(self, now: float) -> None:
        """Forget members dead or left for longer than reap_after."""
        horizon = now - self.params.reap_after
        for name in [n for n, r in self._members.items() if r.state in DOWN and r.since < horizon]:
            record = self._members.pop(name)
            self._event(record, record.state, None)

    def _advance_probe(self, now: float, out: list[Outgoing]) -> None:
        probe = self._probe
        if probe is None:
            return
        target = self._members.get(probe.target)
        if target is None or target.state in DOWN:
            self._probe = None  # it was declared dead or left meanwhile: nothing to find out
            return
        if not probe.indirect_sent and now >= probe.direct_deadline:
            probe.indirect_sent = True
            candidates = [
                r
                for r in self._members.values()
                if r.state == ALIVE and r is not self._me and r is not target
            ]
            helpers = self._rng.sample(
                candidates, min(self.params.indirect_checks, len(candidates))
            )
            for helper in helpers:
                req = PingReq(
                    probe.seq, target.name, target.address, self.name, self.address, nack=True
                )
                out.append(self._packet(helper.address, [req]))
            probe.expected_nacks = len(helpers)
        if now >= probe.deadline:
            self._probe = None
            # Lifeguard: missing nacks mean our own link may be the problem; no helpers, no proof.
            if probe.expected_nacks > 0:
                self._awareness.apply(probe.expected_nacks - probe.nacks)
            else:
                self._awareness.apply(1)
            logger.debug("node=%s peer=%s no ack, suspecting it", self.name, target.name)
            self._on_suspect(Suspect(target.name, target.incarnation, self.name), now)

    def _expire_relays(self, now: float, out: list[Outgoing]) -> None:
        for seq in [s for s, r in self._relays.items() if now >= r.deadline]:
            relay = self._relays.pop(seq)
            if relay.nack:
                out.append(Outgoing(relay.requester, (Nack(relay.seq, self.name),)))

    def _expire_suspicions(self, now: float) -> None:
        for name in [n for n, t in self._suspicions.items() if now >= t.deadline]:
            timer = self._suspicions.pop(name)
            record = self._members.get(name)
            if record is None or record.state != SUSPECT:
                continue
            logger.debug(
                "node=%s peer=%s suspicion timed out (%d confirmations)", self.name, name, timer.n
            )
            self._on_dead(Dead(name, record.incarnation, self.name), now)

    # --- gossip ---------------------------------------------------------------------------------

    def _packet(self, address: str, msgs: list[Message]) -> Outgoing:
        """`msgs` behind as many pending updates as fit in one datagram.

        Updates go first: a receiver applies them before it answers a ping, so its ack already
        carries whatever they made it say (a refutation, above all).
        """
        if not self._broadcasts:
            return Outgoing(address, tuple(msgs))
        budget = self.params.packet_budget - PACKET_OVERHEAD
        budget -= sum(encoded_size(m) for m in msgs)
        limit = retransmit_limit(self.params.retransmit_mult, self._n())
        return Outgoing(address, (*self._broadcasts.take(budget, limit), *msgs))

    def _gossip(self, now: float, out: list[Outgoing]) -> None:
        if not self._broadcasts:
            return
        horizon = now - self.params.gossip_to_dead_time
        candidates = [
            r
            for r in self._members.values()
            if r is not self._me and (r.state in UP or (r.state == DEAD and r.since >= horizon))
        ]
        for target in self._rng.sample(candidates, min(self.params.gossip_nodes, len(candidates))):
            packet = self._packet(target.address, [])
            if not packet.messages:
                return
            out.append(packet)

    def _push_pull_random(self, out: list[Outgoing], states: tuple[str, ...]) -> None:
        candidates = [r for r in self._members.values() if r.state in states and r is not self._me]
        if candidates:
            target = self._rng.choice(candidates)
            out.append(Outgoing(target.address, (self._state_message(join=False, reply=False),)))

    def _state_message(self, join: bool, reply: bool) -> PushPull:
        return PushPull(self.name, self.address, join, reply, self.local_state())

    # --- messages -------------------------------------------------------------------------------

    def handle(self, sender_address: str, msg: Message, now: float) -> list[Outgoing]:
        """Apply one received message; return what to send in answer.

        `sender_address` is where the datagram came from (for logs: answers go to the address
        the message itself names, which survives NAT and advertise addresses).
        """
        logger.debug("node=%s from=%s %r", self.name, sender_address, msg)
        out = self._handle(msg, now)
        return self._drain(out)

    def _drain(self, out: list[Outgoing]) -> list[Outgoing]:
        if self._outbox:
            out.extend(self._outbox)
            self._outbox = []
        return out

    def _handle(self, msg: Message, now: float) -> list[Outgoing]:
        match msg:
            case Ping():
                return self._on_ping(msg)
            case Ack():
                return self._on_ack(msg)
            case PingReq():
                return self._on_ping_req(msg, now)
            case Nack():
                if self._probe is not None and msg.seq == self._probe.seq:
                    self._probe.nacks += 1
            case Suspect():
                self._on_suspect(msg, now)
            case Alive():
                self._on_alive(msg, now)
            case Dead():
                self._on_dead(msg, now)
            case Leave():
                self._on_leave(msg, now)
            case PushPull():
                if msg.reply:
                    self._joined = True
                    if not self._left:  # we left meanwhile: the mesh's view is not ours any more
                        self.merge_state(msg.members, now)
                    return []
                reply, out = self.push_pull_reply(msg, now)
                out.append(Outgoing(msg.address, (reply,)))
                return out
        return []

    def _on_ping(self, msg: Ping) -> list[Outgoing]:
        if msg.target != self.name:
            return []  # meant for a previous owner of this address
        msgs: list[Message] = [Ack(msg.seq, self.name)]
        if self._left:
            # It still thinks we are in its mesh: tell it we left.
            msgs.insert(0, Leave(self.name, self._me.incarnation, self.name))
            return [Outgoing(msg.source_address, tuple(msgs))]
        record = self._members.get(msg.source)
        if record is not None and record.state != ALIVE and record.address == msg.source_address:
            # It does not know what we think of it: tell it, so it can refute (or obey a removal).
            msgs.insert(0, self._status_message(record))
        return [self._packet(msg.source_address, msgs)]

    def _status_message(self, record: Record) -> Message:
        if record.state == SUSPECT:
            return Suspect(record.name, record.incarnation, self.name)
        if record.state == DEAD:
            return Dead(record.name, record.incarnation, self.name)
        return Leave(record.name, record.incarnation, self.name)

    def _on_ack(self, msg: Ack) -> list[Outgoing]:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq:
            self._probe = None
            self._awareness.apply(-1)
            return []
        relay = self._relays.pop(msg.seq, None)
        if relay is None:
            return []  # late or unknown: the probe it answers is over
        return [Outgoing(relay.requester, (Ack(relay.seq, msg.source),))]

    def _on_ping_req(self, msg: PingReq, now: float) -> list[Outgoing]:
        if self._left:
            return []  # we are not in that mesh any more
        if msg.target == self.name:
            return [Outgoing(msg.source_address, (Ack(msg.seq, self.name),))]
        seq = self._next_seq()
        deadline = now + self.params.probe_timeout
        self._relays[seq] = Relay(msg.seq, msg.source_address, deadline, msg.nack)
        return [self._packet(msg.target_address, [Ping(seq, msg.target, self.name, self.address)])]

    # --- push/pull ------------------------------------------------------------------------------

    def push_pull_reply(self, request: PushPull, now: float) -> tuple[PushPull, list[Outgoing]]:
        """Answer a push/pull request: merge it, then reply with our state (after the merge, so
        a refutation it provoked is already in the answer)."""
        out: list[Outgoing] = []
        if self._left:
            if not request.join:
                return self._state_message(join=False, reply=True), out  # tell it we left
            self._rejoin(now)  # someone joins through us: we are a mesh again
        self.merge_state(request.members, now)
        return self._state_message(join=request.join, reply=True), self._drain(out)

    # --- join, leave, remove --------------------------------------------------------------------

    def start_join(self, seeds: Iterable[str], now: float) -> list[Outgoing]:
        """Push/pull requests to the seeds; `joined` turns True when one answers."""
        if self._left:
            self._rejoin(now)
        self._joined = False
        request = self._state_message(join=True, reply=False)
        targets = [s for s in dict.fromkeys(seeds) if s != self.address]
        return [Outgoing(seed, (request,)) for seed in targets]

    def join_message(self) -> PushPull:
        """The push/pull request a joining node sends (what start_join sends to each seed)."""
        return self._state_message(join=True, reply=False)

    def leave(self, now: float) -> list[Outgoing]:
        """Leave gracefully: tell every member directly (they spread it on), then be alone."""
        if self._left:
            return []
        msg = Leave(self.name, self._me.incarnation, self.name)
        out = [
            Outgoing(r.address, (msg,))
            for r in self._members.values()
            if r is not self._me and r.state in UP
        ]
        self._enter_left(self._me.incarnation, now)
        return out

    def remove(self, name: str, now: float) -> list[Outgoing]:
        """Remove `name` from the mesh by force (KeyError if unknown; our own name: leave).

        The removal goes out at one incarnation past what we know, so the member's own alive
        messages at that incarnation lose to it everywhere; if the member is running it accepts
        the removal and becomes a mesh of one. It can come back only by joining again.
        """
        if name == self.name:
            return self.leave(now)
        record = self._members[name]
        if record.state == LEFT:
            return []
        msg = Leave(name, record.incarnation + 1, self.name)
        self._set_down(record, LEFT, msg.incarnation, now, by=self.name)
        self._broadcast(name, msg)
        out = [self._packet(record.address, [msg])]
        out.extend(
            Outgoing(r.address, (msg,))
            for r in self._members.values()
            if r is not self._me and r.state in UP
        )
        return out

    def _enter_left(self, incarnation: int, now: float) -> None:
        """A mesh of one (see View): no probe or relay of the old mesh goes on."""
        super()._enter_left(incarnation, now)
        self._probe = None
        self._relays.clear()
        self._probe_index = 0

    def _rejoin(self, now: float) -> None:
        """Come back from a leave or a removal with a higher incarnation, which outbids it."""
        me = self._me
        me.incarnation += 1
        me.since = now
        self._left = False
        self._broadcast(self.name, Alive(self.name, self.address, me.incarnation))
        if self._started:
            self._next_probe = min(self._next_probe, now + self.params.probe_interval)
