"""Membership regressions found by the fault suite (loadtest/faults), in the simulation.

Found by `python -m loadtest.faults --quick --scenario isolate`: while n3 was cut off, it
suspected and then declared n2 dead (from where it stood, correctly: it heard nothing). The
partition healed a moment later; n3's `Dead n2` reached n1 before n2's refutation did, and n1, which
had been talking to n2 all along, went straight from alive to dead (its log: `node=n1 peer=n2
alive -> dead`), dropping n2's replication link and hints; n2 refuted 2 ms later. A node that was
never faulted was declared dead by a healthy observer, on the word of the one node that was cut off.

Push/pull already treats a remote "dead" as a suspicion ("it gets its own chance to refute before
we bury it on someone else's word", membership.merge_state); a gossiped `Dead` about a member we
hold alive is applied at once.
"""

from __future__ import annotations

import pytest

from cluster.membership.swim import DEAD
from tests.unit.sim import Simulation


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_healed_minority_cannot_get_a_healthy_node_declared_dead(seed: int) -> None:
    sim = Simulation(nodes=3, seed=seed)
    sim.partition(["n0", "n1"], ["n2"])
    # Hold the partition until the cut-off node has buried a healthy one, then heal at once:
    # its verdict is still fresh in its gossip queue.
    took = sim.run_until(lambda: sim.state("n2", "n1") == DEAD, timeout=60, step=0.01)
    assert took is not None
    sim.heal()
    sim.run(20)
    assert sim.converged()
    healthy = {"n0", "n1"}
    false = [
        (round(o.time, 2), o.observer, o.event.name)
        for o in sim.false_events(DEAD)
        if o.observer in healthy and o.event.name in healthy
    ]
    assert false == [], "a healthy node declared another healthy node dead"
