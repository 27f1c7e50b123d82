"""The SWIM state machine, message by message: guards, refutation, probing, join/leave/remove."""

from __future__ import annotations

import random
from typing import TypeVar

import pytest

from cluster.membership.messages import (
    Ack,
    Alive,
    Dead,
    Leave,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
)
from cluster.membership.suspicion import GossipParams
from cluster.membership.swim import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    MemberEvent,
    Membership,
    Outgoing,
)

P = GossipParams()


def addr(name: str) -> str:
    return f"{name}.test:7946"


def core(name: str = "me", peers: int = 0, incarnation: int = 10, **params: object) -> Membership:
    """A started core that knows `peers` alive members p0..p{peers-1} at incarnation 1."""
    m = Membership(name, addr(name), P.with_(**params), random.Random(7), incarnation)
    m.tick(0.0)
    m.merge_state([MemberState(f"p{i}", addr(f"p{i}"), ALIVE, 1) for i in range(peers)], 0.0)
    m.take_events()
    return m


M = TypeVar("M")


def messages(out: list[Outgoing], kind: type[M] = Message) -> list[M]:  # type: ignore[assignment]
    """The messages of `out`, in order, of type `kind` (all by default)."""
    return [msg for o in out for msg in o.messages if isinstance(msg, kind)]


def state(m: Membership, name: str) -> tuple[str, int] | None:
    member = m.member(name)
    return (member.state, member.incarnation) if member else None


def run(m: Membership, start: float, end: float, step: float = 0.01) -> list[Outgoing]:
    out: list[Outgoing] = []
    t = start
    while t <= end + 1e-9:
        out += m.tick(t)
        t += step
    return out


# --- basics ---------------------------------------------------------------------------------------


def test_a_new_node_is_a_mesh_of_one() -> None:
    m = Membership("me", addr("me"), P, random.Random(1), incarnation=5)
    assert [(x.name, x.state, x.incarnation) for x in m.members()] == [("me", ALIVE, 5)]
    assert m.alive_peers() == []
    assert m.next_deadline() == float("-inf")  # tick at once to start the timers
    assert m.tick(0.0) == []  # nobody to probe, nothing to gossip
    assert m.members()[0].as_dict() == {
        "name": "me",
        "address": addr("me"),
        "state": "alive",
        "incarnation": 5,
    }


def test_join_handshake() -> None:
    a, b = core("a"), core("b")
    [request] = a.start_join([addr("b"), addr("a"), addr("b")], 1.0)  # self and duplicates out
    assert request.address == addr("b")
    assert request.push_pull
    [reply] = b.handle(addr("a"), request.messages[0], 1.0)
    assert isinstance(reply.messages[0], PushPull)
    assert reply.messages[0].reply
    assert not a.joined
    assert a.handle(addr("b"), reply.messages[0], 1.1) == []
    assert a.joined
    assert state(a, "b") == (ALIVE, 10)
    assert state(b, "a") == (ALIVE, 10)
    assert b.take_events() == [MemberEvent("a", addr("a"), None, ALIVE, 10)]
    assert [m.name for m in a.alive_peers()] == ["b"]


# --- probing --------------------------------------------------------------------------------------


def test_probe_ack_keeps_the_member_alive() -> None:
    m = core(peers=1)
    out = run(m, 0.0, 1.0)
    [ping] = messages(out, Ping)
    assert ping.target == "p0"
    m.handle(addr("p0"), Ack(ping.seq, "p0"), 1.0)
    run(m, 1.0, 1.9)
    assert state(m, "p0") == (ALIVE, 1)
    assert m.health_score == 0


def test_failed_probe_goes_indirect_then_suspects() -> None:
    m = core(peers=5)
    t, out = 0.0, []
    while not (out := messages(m.tick(t), Ping)):
        t += 0.01
    [ping] = out
    reqs = messages(run(m, t + 0.01, t + P.probe_timeout), PingReq)
    assert len(reqs) == P.indirect_checks
    assert {r.target for r in reqs} == {ping.target}
    assert all(r.nack for r in reqs)
    assert all(r.seq == ping.seq for r in reqs)
    m.handle("x", Nack(ping.seq, "p9"), t + 0.6)  # one helper reports it tried: one nack of three
    run(m, t + P.probe_timeout + 0.01, t + P.probe_interval)
    assert state(m, ping.target) == (SUSPECT, 1)
    assert m.health_score == 2  # two nacks missing: maybe we are the slow one
    assert [e.new_state for e in m.take_events()] == [SUSPECT]


def test_indirect_ack_saves_the_member() -> None:
    m = core(peers=5)
    t = 0.0
    while not (pings := messages(m.tick(t), Ping)):
        t += 0.01
    run(m, t, t + P.probe_timeout + 0.01)
    m.handle("helper", Ack(pings[0].seq, pings[0].target), t + 0.7)
    run(m, t + 0.71, t + 1.5)
    assert state(m, pings[0].target) == (ALIVE, 1)


def test_ping_req_relays_the_ack_or_nacks() -> None:
    m = core(peers=2)
    req = PingReq(99, "p1", addr("p1"), "p0", addr("p0"), nack=True)
    [fwd] = m.handle(addr("p0"), req, 5.0)
    [ping] = messages([fwd], Ping)
    assert fwd.address == addr("p1")
    assert ping.target == "p1"
    assert ping.source == "me"
    [relayed] = m.handle(addr("p1"), Ack(ping.seq, "p1"), 5.1)
    assert relayed == Outgoing(addr("p0"), (Ack(99, "p1"),))
    # Without an answer: a nack at the probe timeout.
    m.handle(addr("p0"), PingReq(100, "p1", addr("p1"), "p0", addr("p0"), nack=True), 6.0)
    nacks = messages(m.tick(6.0 + P.probe_timeout), Nack)
    assert nacks == [Nack(100, "me")]


def test_a_ping_for_someone_else_is_ignored_and_ours_is_acked() -> None:
    m = core(peers=1)
    assert m.handle("x", Ping(1, "previous-owner", "p0", addr("p0")), 1.0) == []
    [ack] = m.handle("x", Ping(2, "me", "p0", addr("p0")), 1.0)
    assert ack.address == addr("p0")
    assert ack.messages[-1] == Ack(2, "me")


def bury(m: Membership, name: str, incarnation: int, now: float) -> None:
    """Make `name` dead in m's view: suspected first, then declared dead."""
    m.handle("x", Suspect(name, incarnation, "y"), now)
    m.handle("x", Dead(name, incarnation, "y"), now)


def test_an_ack_to_a_member_we_think_down_tells_it_so() -> None:
    m = core(peers=1)
    bury(m, "p0", 1, 1.0)
    [ack] = m.handle("x", Ping(3, "me", "p0", addr("p0")), 2.0)
    assert ack.messages[-2:] == (Dead("p0", 1, "me"), Ack(3, "me"))


def test_a_suspect_is_pinged_with_the_accusation_attached() -> None:
    m = core(peers=1)
    m.handle("x", Suspect("p0", 1, "p9"), 0.0)
    [packet] = [o for o in run(m, 0.0, 1.0) if isinstance(o.messages[-1], Ping)]
    # Before the ping: the target refutes first, and its ack carries the refutation.
    assert packet.messages[-2:] == (Suspect("p0", 1, "me"), packet.messages[-1])


# --- suspicion, refutation, incarnations ---------------------------------------------------------


def test_suspicion_times_out_to_dead_and_confirmations_shorten_it() -> None:
    slow, fast = core(peers=9), core(peers=9)  # n = 10: min 4 s, max 24 s, k = 2
    for m in (slow, fast):
        m.handle("x", Suspect("p0", 1, "p1"), 0.0)
    fast.handle("x", Suspect("p0", 1, "p2"), 0.5)
    fast.handle("x", Suspect("p0", 1, "p3"), 0.5)
    for t in (3.9, 4.1):
        slow.tick(t)
        fast.tick(t)
    assert state(fast, "p0") == (DEAD, 1)
    assert state(slow, "p0") == (SUSPECT, 1)
    slow.tick(23.9)
    assert state(slow, "p0") == (SUSPECT, 1)
    slow.tick(24.0)
    assert state(slow, "p0") == (DEAD, 1)


def test_a_repeated_accuser_is_not_a_confirmation() -> None:
    m = core(peers=9)
    m.handle("x", Suspect("p0", 1, "p1"), 0.0)
    m.handle("x", Suspect("p0", 1, "p1"), 0.1)
    m.handle("x", Suspect("p0", 1, "p2"), 0.1)
    m.handle("x", Suspect("p0", 1, "p2"), 0.1)
    m.tick(10.0)
    assert state(m, "p0") == (SUSPECT, 1)  # one confirmation: still about 14 s


@pytest.mark.parametrize("accusation", [Suspect("me", 10, "p0"), Dead("me", 12, "p0")])
def test_a_suspected_node_refutes_with_a_higher_incarnation(accusation: Message) -> None:
    m = core(peers=3, incarnation=10)
    m.handle("x", accusation, 1.0)
    assert accusation.incarnation is not None  # type: ignore[union-attr]
    expected = max(11, accusation.incarnation + 1)  # type: ignore[union-attr]
    assert m.incarnation == expected
    assert state(m, "me") == (ALIVE, expected)
    refutes = messages(run(m, 1.0, 2.0), Alive)
    assert Alive("me", addr("me"), expected) in refutes
    assert m.health_score >= 1  # Lifeguard: being accused hints we are slow


def test_the_refutation_rides_on_the_ack_and_goes_straight_to_every_member() -> None:
    m = core(peers=3, incarnation=10)
    run(m, 0.0, 3.0)  # the queued news about the peers goes out
    out = m.handle("p0", Suspect("me", 10, "p0"), 4.0)  # attached before the ping ...
    direct = [o.address for o in out if o.messages == (Alive("me", addr("me"), 11),)]
    assert sorted(direct) == [addr("p0"), addr("p1"), addr("p2")]
    [ack] = m.handle("p0", Ping(5, "me", "p0", addr("p0")), 4.0)  # ... so the ack carries it
    assert Alive("me", addr("me"), 11) in ack.messages
    assert ack.messages[-1] == Ack(5, "me")


def test_old_accusations_about_us_are_ignored() -> None:
    m = core(incarnation=10)
    for msg in (Suspect("me", 9, "p0"), Dead("me", 3, "p0"), Alive("me", addr("me"), 10)):
        m.handle("x", msg, 1.0)
    assert m.incarnation == 10
    assert m.pending_broadcasts() == 0


def test_an_alive_claim_for_our_name_elsewhere_is_outbid() -> None:
    m = core(incarnation=10)
    m.handle("x", Alive("me", "impostor:1", 10), 1.0)
    assert m.incarnation == 11


@pytest.mark.parametrize(
    ("known", "msg", "after"),
    [
        # Ignore old incarnation numbers.
        ((ALIVE, 5), Alive("p0", addr("p0"), 4), (ALIVE, 5)),
        ((ALIVE, 5), Suspect("p0", 4, "x"), (ALIVE, 5)),
        ((ALIVE, 5), Dead("p0", 4, "x"), (ALIVE, 5)),
        ((ALIVE, 5), Leave("p0", 4, "p0"), (ALIVE, 5)),
        ((DEAD, 5), Alive("p0", addr("p0"), 5), (DEAD, 5)),
        ((LEFT, 5), Alive("p0", addr("p0"), 5), (LEFT, 5)),
        # At equal incarnations: alive < suspect < dead, left.
        ((ALIVE, 5), Suspect("p0", 5, "x"), (SUSPECT, 5)),
        ((SUSPECT, 5), Alive("p0", addr("p0"), 5), (SUSPECT, 5)),
        ((SUSPECT, 5), Dead("p0", 5, "x"), (DEAD, 5)),
        # Someone else's death verdict about a member we hold alive only makes it a suspect
        # here (it may be news from the far side of a healed partition): it can still refute.
        ((ALIVE, 5), Dead("p0", 5, "x"), (SUSPECT, 5)),
        ((ALIVE, 5), Dead("p0", 6, "x"), (SUSPECT, 6)),
        ((ALIVE, 5), Leave("p0", 5, "p0"), (LEFT, 5)),
        ((DEAD, 5), Suspect("p0", 6, "x"), (DEAD, 5)),
        ((LEFT, 5), Dead("p0", 5, "x"), (LEFT, 5)),
        # A higher incarnation wins.
        ((SUSPECT, 5), Alive("p0", addr("p0"), 6), (ALIVE, 6)),
        ((DEAD, 5), Alive("p0", addr("p0"), 6), (ALIVE, 6)),
        ((LEFT, 5), Alive("p0", addr("p0"), 6), (ALIVE, 6)),
        ((SUSPECT, 5), Suspect("p0", 7, "x"), (SUSPECT, 7)),
        ((LEFT, 5), Leave("p0", 6, "x"), (LEFT, 6)),
    ],
)
def test_update_ordering(known: tuple[str, int], msg: Message, after: tuple[str, int]) -> None:
    m = core()
    m.merge_state([MemberState("p0", addr("p0"), ALIVE, known[1])], 0.0)
    if known[0] == SUSPECT:
        m.handle("x", Suspect("p0", known[1], "y"), 0.0)
    elif known[0] == DEAD:
        bury(m, "p0", known[1], 0.0)
    elif known[0] == LEFT:
        m.handle("x", Leave("p0", known[1], "p0"), 0.0)
    assert state(m, "p0") == known
    m.handle("x", msg, 1.0)
    assert state(m, "p0") == after


def test_news_about_strangers_other_than_alive_is_ignored() -> None:
    m = core()
    for msg in (Suspect("ghost", 1, "x"), Dead("ghost", 1, "x"), Leave("ghost", 1, "ghost")):
        m.handle("x", msg, 1.0)
    assert "ghost" not in m


def test_a_second_process_under_a_live_name_is_refused_until_the_first_fails() -> None:
    m = core(peers=1)
    m.handle("x", Alive("p0", "elsewhere:1", 50), 1.0)
    assert m.member("p0").address == addr("p0")  # type: ignore[union-attr]
    bury(m, "p0", 1, 2.0)
    m.handle("x", Alive("p0", "elsewhere:1", 50), 3.0)
    assert m.member("p0").address == "elsewhere:1"  # type: ignore[union-attr]
    assert state(m, "p0") == (ALIVE, 50)


def test_push_pull_turns_a_remote_dead_into_a_local_suspect() -> None:
    m = core(peers=2)
    m.merge_state([MemberState("p0", addr("p0"), DEAD, 1)], 1.0)
    assert state(m, "p0") == (SUSPECT, 1)


def test_push_pull_reply_carries_the_refutation() -> None:
    m = core(peers=1, incarnation=10)
    request = PushPull("p0", addr("p0"), False, False, (MemberState("me", addr("me"), DEAD, 10),))
    reply, _ = m.push_pull_reply(request, 1.0)
    assert MemberState("me", addr("me"), ALIVE, 11) in reply.members


# --- dissemination --------------------------------------------------------------------------------


def test_updates_are_retransmitted_a_bounded_number_of_times() -> None:
    m = core(peers=3)  # n = 4: limit 4 * ceil(log10 5) = 4
    m.handle("x", Alive("new", addr("new"), 1), 0.0)
    sent = sum(1 for msg in messages(run(m, 0.0, 10.0), Alive) if msg.node == "new")
    assert sent == 4
    assert m.pending_broadcasts() == 0


def test_newer_news_about_a_member_replaces_the_queued_one() -> None:
    m = core(peers=3)
    before = m.pending_broadcasts()  # the three peers' alive messages
    m.handle("x", Suspect("p0", 1, "x"), 0.0)
    m.handle("x", Alive("p0", addr("p0"), 2), 0.0)
    assert m.pending_broadcasts() == before
    gossip: list[Message] = messages(run(m, 0.0, 0.5))
    assert Suspect("p0", 1, "x") not in gossip
    assert Alive("p0", addr("p0"), 2) in gossip


def test_piggybacked_gossip_fits_one_datagram() -> None:
    from cluster.membership.messages import encode_packet

    m = core(peers=3)
    for i in range(200):
        m.handle("x", Alive(f"member-{i:03d}" + "x" * 40, f"host-{i}.example:7946", 1), 0.0)
    out = [o for o in run(m, 0.0, 2.0) if not o.push_pull]  # push/pull goes over HTTP
    assert len(out) > 10
    assert all(len(encode_packet(o.messages, "key", 1_700_000_000_000)) <= 1400 for o in out)


# --- leave, remove, rejoin, reap ------------------------------------------------------------------


def test_leave_tells_everyone_and_becomes_a_mesh_of_one() -> None:
    m = core(peers=3, incarnation=10)
    out = m.leave(5.0)
    assert sorted(o.address for o in out) == [addr("p0"), addr("p1"), addr("p2")]
    assert all(o.messages == (Leave("me", 10, "me"),) for o in out)
    assert m.left
    assert [x.name for x in m.members()] == ["me"]
    # In its own view it is the one alive member of a mesh of one (the contract); peers see left.
    assert state(m, "me") == (ALIVE, 10)
    assert [x.state for x in m.alive_peers()] == []
    events = m.take_events()
    assert {(e.name, e.new_state) for e in events} == {("p0", None), ("p1", None), ("p2", None)}
    assert m.leave(6.0) == []
    assert m.tick(7.0) == []
    assert m.next_deadline() == float("inf")
    # The old mesh's news no longer concerns it ...
    m.handle("x", Alive("p0", addr("p0"), 2), 8.0)
    m.handle("x", Suspect("me", 10, "p1"), 8.0)
    assert [x.name for x in m.members()] == ["me"]
    assert m.incarnation == 10
    # ... and a member that missed the leave learns it from the ack.
    [ack] = m.handle("x", Ping(1, "me", "p0", addr("p0")), 8.0)
    assert ack.messages == (Leave("me", 10, "me"), Ack(1, "me"))
    reply, _ = m.push_pull_reply(PushPull("p0", addr("p0"), False, False, ()), 8.0)
    assert reply.members == (MemberState("me", addr("me"), LEFT, 10),)


def test_peers_see_left_and_a_rejoin_outbids_it() -> None:
    peer = core("peer", peers=0)
    peer.merge_state([MemberState("me", addr("me"), ALIVE, 10)], 0.0)
    peer.handle("x", Leave("me", 10, "me"), 1.0)
    assert state(peer, "me") == (LEFT, 10)
    me = core(incarnation=10)
    me.leave(1.0)
    [request] = me.start_join([addr("peer")], 2.0)
    assert not me.left
    assert me.incarnation == 11
    [reply] = peer.handle(addr("me"), request.messages[0], 2.0)
    assert state(peer, "me") == (ALIVE, 11)
    me.handle(addr("peer"), reply.messages[0], 2.1)
    assert state(me, "peer") == (ALIVE, 10)


def test_a_left_node_accepts_a_join_through_it() -> None:
    m = core(incarnation=10)
    m.leave(1.0)
    joiner = PushPull("new", addr("new"), True, False, (MemberState("new", addr("new"), ALIVE, 1),))
    reply, _ = m.push_pull_reply(joiner, 2.0)
    assert not m.left
    assert state(m, "new") == (ALIVE, 1)
    assert MemberState("me", addr("me"), ALIVE, 11) in reply.members


def test_remove_is_not_undone_by_stale_gossip_but_a_restart_comes_back() -> None:
    m = core(peers=3)
    out = m.remove("p0", 1.0)
    assert state(m, "p0") == (LEFT, 2)  # one past what we knew
    assert Leave("p0", 2, "me") in messages(out)
    assert {o.address for o in out} >= {addr("p0"), addr("p1"), addr("p2")}
    for stale in (Alive("p0", addr("p0"), 1), Alive("p0", addr("p0"), 2), Suspect("p0", 2, "x")):
        m.handle("x", stale, 2.0)
    m.merge_state([MemberState("p0", addr("p0"), ALIVE, 2)], 2.0)
    assert state(m, "p0") == (LEFT, 2)
    m.handle("x", Alive("p0", addr("p0"), 1_700_000_000_000), 3.0)  # restarted: wall-clock ms
    assert state(m, "p0") == (ALIVE, 1_700_000_000_000)
    with pytest.raises(KeyError):
        m.remove("nobody", 4.0)


def test_a_running_member_obeys_its_removal() -> None:
    m = core(peers=2, incarnation=10)
    m.handle("x", Leave("me", 9, "p0"), 1.0)  # older than us: a removal we already outlived
    assert not m.left
    m.handle("x", Leave("me", 11, "p0"), 1.0)
    assert m.left
    assert state(m, "me") == (ALIVE, 11)  # a mesh of one in its own view
    assert m.local_state() == (MemberState("me", addr("me"), LEFT, 11),)  # what others hear
    m.start_join([addr("p0")], 2.0)
    assert m.incarnation == 12


def test_dead_and_left_members_are_reaped_after_the_retention() -> None:
    m = core(peers=3, reap_after=60.0)
    bury(m, "p0", 1, 1.0)
    run(m, 1.0, 30.0, step=0.5)
    assert state(m, "p0") == (DEAD, 1)
    m.take_events()
    run(m, 30.0, 70.0, step=0.5)
    assert "p0" not in m
    assert MemberEvent("p0", addr("p0"), DEAD, None, 1) in m.take_events()


def test_next_deadline_is_when_tick_has_work() -> None:
    m = core(peers=3)
    for _ in range(20):
        d = m.next_deadline()
        assert m.tick(d - 0.0001) == []  # nothing is due before it
        assert m.next_deadline() == d
        m.tick(d)
        assert m.next_deadline() > d  # it did what was due
