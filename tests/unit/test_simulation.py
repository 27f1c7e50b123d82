"""Whole meshes of simulated nodes (tests/unit/sim.py): detection, accuracy, dissemination, healing.

Bounds come from the parameters (sim.detection_bound, sim.dissemination_bound), with memberlist's
LAN defaults unless a test says otherwise. Every run is deterministic: a failure reproduces with
the same seed.
"""

from __future__ import annotations

from functools import partial

import pytest

from cluster.config import Config
from cluster.membership.messages import Alive
from cluster.membership.suspicion import GossipParams, suspicion_timeout
from cluster.membership.swim import ALIVE, DEAD, LEFT, SUSPECT
from tests.unit.sim import (
    Simulation,
    address_of,
    detection_bound,
    dissemination_bound,
    suspicion_bound,
)

P = GossipParams()
SIZES = [3, 10, 50]


def test_the_bounds_are_derived_from_the_parameters() -> None:
    # 10 nodes, LAN defaults: 8 s until probed and failed, 8 retransmits of 0.2 s, 24 s of
    # unconfirmed suspicion.
    assert suspicion_bound(P, 10) == pytest.approx(8 + 1.6)
    assert detection_bound(P, 10) == pytest.approx(8 + 1.6 + 24)
    assert dissemination_bound(P, 10) == pytest.approx(2.6)


# --- failure detection ----------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [0.0, 0.1])
@pytest.mark.parametrize("n", SIZES)
def test_a_crashed_node_is_declared_dead_everywhere_within_the_bound(n: int, loss: float) -> None:
    sim = Simulation(nodes=n, seed=n, loss=loss)
    sim.run(5)
    sim.kill("n1")
    not_alive = sim.run_until(lambda: sim.everyone_sees("n1", {SUSPECT, DEAD}), timeout=120)
    assert not_alive is not None
    assert not_alive <= suspicion_bound(P, n)
    dead = sim.run_until(lambda: sim.everyone_sees("n1", {DEAD}), timeout=120)
    assert dead is not None
    assert not_alive + dead <= detection_bound(P, n)
    assert sim.false_events(DEAD) == []  # and nobody else was buried with it


@pytest.mark.parametrize("n", [10, 50])
def test_confirmations_bring_detection_near_the_minimum_timeout(n: int) -> None:
    # Lifeguard: independent suspicions shrink the timeout from 6x the minimum towards it.
    minimum = suspicion_timeout(P.suspicion_mult, n, P.probe_interval)
    times: list[float] = []
    for seed in range(5):
        sim = Simulation(nodes=n, seed=seed)
        sim.kill("n1")
        took = sim.run_until(partial(sim.everyone_sees, "n1", {DEAD}), timeout=120)
        assert took is not None
        times.append(took)
    assert sum(times) / len(times) <= minimum + 4 * P.probe_interval
    assert max(times) < minimum * P.suspicion_max_timeout_mult


def test_the_for_tests_preset_detects_within_a_second_or_two() -> None:
    fast = Config.for_tests().gossip_params()
    sim = Simulation(nodes=3, seed=1, params=fast)
    sim.kill("n2")
    took = sim.run_until(lambda: sim.everyone_sees("n2", {DEAD}), timeout=10, step=0.01)
    assert took is not None
    assert took <= detection_bound(fast, 3)
    assert took < 1.5


@pytest.mark.parametrize(("n", "seconds"), [(3, 1800.0), (10, 900.0), (50, 240.0)])
def test_no_live_node_is_suspected_or_declared_dead_at_zero_loss(n: int, seconds: float) -> None:
    sim = Simulation(nodes=n, seed=7, delay=0.001, jitter=0.01)
    sim.history.clear()
    sim.run(seconds)
    assert sim.false_events(SUSPECT) == []
    assert sim.false_events(DEAD) == []
    assert sim.converged()


@pytest.mark.parametrize(("n", "loss", "seconds"), [(10, 0.1, 600.0), (50, 0.1, 120.0)])
def test_loss_makes_suspicions_that_are_refuted_never_deaths(
    n: int, loss: float, seconds: float
) -> None:
    sim = Simulation(nodes=n, seed=3, loss=loss, delay=0.01, jitter=0.04)
    sim.history.clear()
    sim.run(seconds)
    assert sim.false_events(SUSPECT)  # the loss is real enough to fool single probes
    assert sim.false_events(DEAD) == []
    sim.set_loss(0.0)
    assert sim.run_until(sim.converged, timeout=30) is not None


def test_slow_links_below_the_probe_timeout_cause_no_suspicion() -> None:
    # Round trips up to 0.4 s against a 0.5 s probe timeout.
    sim = Simulation(nodes=10, seed=4, delay=0.1, jitter=0.1)
    sim.history.clear()
    sim.run(300)
    assert sim.false_events(SUSPECT) == []


# --- refutation, restarts, stale gossip -----------------------------------------------------------


def test_a_suspected_but_alive_node_refutes() -> None:
    sim = Simulation(nodes=10, seed=5)
    before = sim.incarnation("n0", "n3")
    assert before is not None
    sim.history.clear()
    others = [f"n{i}" for i in range(10) if i != 3]
    sim.partition(["n3"], others)  # cut off for less than the minimum suspicion timeout (4 s)
    sim.run_until(lambda: any(s == SUSPECT for s in sim.views_of("n3").values()), timeout=10)
    assert any(o.event.name == "n3" for o in sim.false_events(SUSPECT))
    sim.heal()
    took = sim.run_until(lambda: sim.everyone_sees("n3", {ALIVE}), timeout=30)
    assert took is not None
    assert took <= dissemination_bound(P, 10) + P.probe_interval
    assert [o for o in sim.history if o.event.name == "n3" and o.event.new_state == DEAD] == []
    assert all((sim.incarnation(x, "n3") or 0) > before for x in others)


def test_a_restarted_node_rejoins_with_a_higher_incarnation() -> None:
    sim = Simulation(nodes=10, seed=6)
    before = sim.incarnation("n0", "n4")
    assert before is not None
    sim.kill("n4")
    sim.run_until(lambda: sim.everyone_sees("n4", {DEAD}), timeout=60)
    sim.restart("n4", seeds=[address_of("n7")])
    took = sim.run_until(lambda: sim.everyone_sees("n4", {ALIVE}), timeout=30)
    assert took is not None
    assert took <= dissemination_bound(P, 10)
    assert all((sim.incarnation(x.name, "n4") or 0) > before for x in sim.live() if x.name != "n4")
    assert sim.run_until(sim.converged, timeout=10) is not None


def test_a_quick_restart_before_anyone_noticed_also_wins() -> None:
    sim = Simulation(nodes=10, seed=8)
    before = sim.incarnation("n1", "n2")
    assert before is not None
    sim.restart("n2")  # down for a millisecond: the mesh never saw it fail
    sim.run(5)
    assert sim.converged()
    assert all((sim.incarnation(x.name, "n2") or 0) > before for x in sim.live() if x.name != "n2")


def test_stale_gossip_about_old_incarnations_is_ignored() -> None:
    sim = Simulation(nodes=10, seed=9)
    old = sim.incarnation("n0", "n5")
    assert old is not None
    sim.restart("n5")
    sim.run(5)
    new = sim.incarnation("n0", "n5")
    assert new is not None
    assert new > old
    # Replay the old life's alive message, and accuse the new life with the old incarnation.
    for node in sim.live():
        node.membership.handle("replay", Alive("n5", address_of("n5"), old), sim.now)
    sim.kill("n5")  # dead now: only a newer incarnation may bring it back
    sim.run_until(lambda: sim.everyone_sees("n5", {DEAD}), timeout=60)
    for node in sim.live():
        node.membership.handle("replay", Alive("n5", address_of("n5"), new), sim.now)
        node.membership.handle("replay", Alive("n5", address_of("n5"), old), sim.now)
    sim.run(30)
    assert sim.everyone_sees("n5", {DEAD})


# --- join, leave, remove --------------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_a_join_reaches_every_node_within_the_bound(n: int) -> None:
    sim = Simulation(nodes=n, seed=10 + n)
    sim.run(10)
    sim.add("new", seeds=[address_of("n0")])
    took = sim.run_until(sim.converged, timeout=60, step=0.01)
    assert took is not None
    assert took <= dissemination_bound(P, n)
    assert len(sim.nodes["new"].membership.alive_peers()) == n


def test_a_join_still_arrives_under_loss_through_push_pull() -> None:
    sim = Simulation(nodes=10, seed=12, loss=0.2)
    sim.add("new", seeds=[address_of("n3")])
    took = sim.run_until(lambda: sim.everyone_sees("new", {ALIVE}), timeout=120)
    assert took is not None
    assert took <= P.push_pull_interval + dissemination_bound(P, 10)


@pytest.mark.parametrize("n", SIZES)
def test_a_leave_reaches_every_node_and_a_rejoin_outbids_it(n: int) -> None:
    sim = Simulation(nodes=n, seed=20 + n)
    inc = sim.incarnation("n0", "n2")
    sim.leave("n2")
    took = sim.run_until(lambda: sim.everyone_sees("n2", {LEFT}), timeout=60, step=0.01)
    assert took is not None
    assert took <= dissemination_bound(P, n)
    alone = sim.nodes["n2"].membership
    assert [m.name for m in alone.members()] == ["n2"]
    sim.run(60)  # it stays out: no refutation, no death
    assert sim.everyone_sees("n2", {LEFT})
    assert alone.left
    sim.join("n2", [address_of("n1")])
    took = sim.run_until(sim.converged, timeout=60, step=0.01)
    assert took is not None
    assert took <= dissemination_bound(P, n)
    assert all(
        (sim.incarnation(x.name, "n2") or 0) > (inc or 0) for x in sim.live() if x.name != "n2"
    )


def test_a_leave_under_loss_reaches_everyone() -> None:
    sim = Simulation(nodes=10, seed=21, loss=0.2)
    sim.leave("n4")
    took = sim.run_until(lambda: sim.everyone_sees("n4", {LEFT}), timeout=60)
    assert took is not None
    assert took <= dissemination_bound(P, 10)


@pytest.mark.parametrize("n", SIZES)
def test_removing_a_dead_node_reaches_everyone_and_sticks(n: int) -> None:
    sim = Simulation(nodes=n, seed=30 + n)
    sim.kill("n1")
    sim.run(2)  # someone may already suspect it
    sim.remove("n0", "n1")
    took = sim.run_until(lambda: sim.everyone_sees("n1", {LEFT}), timeout=60, step=0.01)
    assert took is not None
    assert took <= dissemination_bound(P, n)
    sim.run(120)  # stale suspicion timers, push/pull, gossip: none of it undoes the removal
    assert sim.everyone_sees("n1", {LEFT})


def test_removing_a_running_node_puts_it_out_until_it_joins_again() -> None:
    sim = Simulation(nodes=10, seed=33)
    sim.remove("n0", "n6")
    took = sim.run_until(lambda: sim.everyone_sees("n6", {LEFT}), timeout=60, step=0.01)
    assert took is not None
    assert took <= dissemination_bound(P, 10)
    removed = sim.nodes["n6"].membership
    assert removed.left
    assert removed.alive_peers() == []
    sim.run(120)
    assert sim.everyone_sees("n6", {LEFT})  # it did not refute its way back in
    sim.join("n6", [address_of("n2")])
    assert sim.run_until(sim.converged, timeout=30) is not None


# --- partitions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10, 50])
def test_a_partition_is_detected_and_heals(n: int) -> None:
    sim = Simulation(nodes=n, seed=40 + n)
    left = [f"n{i}" for i in range(n // 2)]
    right = [f"n{i}" for i in range(n // 2, n)]
    sim.partition(left, right)

    def split() -> bool:
        return all(sim.state(a, b) == DEAD and sim.state(b, a) == DEAD for a in left for b in right)

    took = sim.run_until(split, timeout=120, step=0.5)
    assert took is not None
    assert took <= detection_bound(P, n // 2) + P.probe_interval * n / 2
    # Each side stays whole.
    assert all(sim.state(a, b) == ALIVE for a in left for b in left if a != b)
    sim.run(30)
    sim.heal()
    healed = sim.run_until(sim.converged, timeout=120, step=0.25)
    assert healed is not None
    assert healed <= P.reconnect_interval + detection_bound(P, n)


def test_a_minority_cut_off_comes_back() -> None:
    sim = Simulation(nodes=10, seed=45, loss=0.05)
    sim.partition(["n8", "n9"], [f"n{i}" for i in range(8)])
    sim.run(120)
    assert sim.state("n0", "n9") == DEAD
    assert sim.state("n9", "n0") == DEAD
    sim.heal()
    assert sim.run_until(sim.converged, timeout=120) is not None


# --- the harness itself ---------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_run() -> None:
    def run() -> list[tuple[float, str, str, str | None]]:
        sim = Simulation(nodes=10, seed=99, loss=0.1)
        sim.kill("n3")
        sim.run(30)
        return [(o.time, o.observer, o.event.name, o.event.new_state) for o in sim.history]

    assert run() == run()


def test_on_the_wire_with_a_cluster_key_and_an_intruder() -> None:
    sim = Simulation(nodes=5, seed=50, wire=True, key="mesh key")
    sim.add("intruder", seeds=[address_of("n0")], key="another key")
    sim.kill("n2")
    members = ["n0", "n1", "n3", "n4"]
    took = sim.run_until(
        lambda: all(sim.state(x, "n2") == DEAD for x in members), timeout=detection_bound(P, 5)
    )
    assert took is not None  # the keyed mesh works on the wire
    sim.run(30)
    assert all("intruder" not in sim.nodes[x].membership for x in members)
    assert sim.nodes["intruder"].membership.alive_peers() == []
    assert sim.decode_errors > 0
