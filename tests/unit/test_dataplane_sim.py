"""The whole data plane under the seeded simulation (tests/sim): 200 seeds of a 5-node mesh.

Each seed is a deterministic run: writes, batches, deletes, clears and transactions against real
nodes on a virtual clock, with partitions, message loss, crashes (restart from a snapshot) and
clock skew chosen by the seed. A failing seed replays exactly: `python -m tests.sim --seed N -v`.
"""

from __future__ import annotations

import logging

import pytest

from tests.sim.dataplane import Plan, Result, run

SEEDS = 200
CHUNK = 25


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)  # refusals and suspicions are expected: the faults


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_no_acknowledged_write_lost_no_resurrection_no_torn_transaction_convergence(
    first: int,
) -> None:
    failed: list[Result] = []
    for seed in range(first, first + CHUNK):
        result = run(Plan.from_seed(seed))
        assert result.ops > 100, f"seed {seed} wrote almost nothing: the run tests nothing"
        assert result.acked_checks > 0
        assert result.torn_checks > 0
        if not result.ok:
            failed.append(result)
    assert not failed, "\n".join(r.report() for r in failed)


def test_a_seed_replays_exactly() -> None:
    a, b = run(Plan.from_seed(11)), run(Plan.from_seed(11))
    assert (a.ops, a.requests, a.events) == (b.ops, b.requests, b.events)


def test_the_plans_cover_every_fault() -> None:
    kinds = {f.kind for seed in range(SEEDS) for f in Plan.from_seed(seed).faults}
    assert kinds == {"partition", "loss", "crash", "skew"}
    beyond = [
        f
        for seed in range(SEEDS)
        for f in Plan.from_seed(seed).faults
        if f.kind == "skew" and abs(f.amount) > 0.5
    ]
    assert beyond, "no skew beyond the maximum offset: refused batches would go untested"
