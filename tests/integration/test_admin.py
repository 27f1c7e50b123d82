"""The admin calls and join diagnostics on in-process nodes with real gossip (UDP) and HTTP.

Each node is a whole `Node` (membership, replication, HTTP) on loopback ports picked by the OS;
the tests drive it through its HTTP routes, as an operator would.
"""

from __future__ import annotations

import logging

import pytest

from tests.integration.inproc import Running, Start, until


async def test_after_a_leave_the_node_is_the_one_alive_member_of_its_own_mesh(
    start: Start,
) -> None:
    a = await start("a")
    b = await start("b")
    status, _ = await b.post("/cluster/join", {"seeds": [a.address]})
    assert status == 200
    await until(lambda: _sees(a, "b", "alive"))

    status, _ = await b.post("/cluster/leave")
    assert status == 200
    # Its own view: a mesh of one, itself alive (before the fix it listed itself as "left").
    assert await b.states() == {"b": "alive"}
    status, health = await b.get("/health")
    assert (status, health["members"]) == (200, 1)
    resp = await b.client.get("/set?k=solo&v=1")
    assert (resp.status, resp.headers["X-Replicas"]) == (200, "1/1")
    # Its former peer's view: left.
    await until(lambda: _sees(a, "b", "left"))

    # Joining again after a leave still works, and both views agree again.
    status, body = await b.post("/cluster/join", {"seeds": [a.address]})
    assert status == 200
    assert {m["name"]: m["state"] for m in body["members"]} == {"a": "alive", "b": "alive"}
    await until(lambda: _sees(a, "b", "alive"))


async def _sees(viewer: Running, name: str, state: str) -> bool:
    return (await viewer.states()).get(name) == state


async def test_a_join_with_the_wrong_cluster_key_says_the_seed_refused_it(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    seed = await start("seed", cluster_key="right")
    stranger = await start("stranger", cluster_key="wrong")
    for _ in range(3):
        status, body = await stranger.post("/cluster/join", {"seeds": [seed.address]})
        assert status == 502
        assert body["code"] == "SEED_REFUSED"
        assert seed.address in body["error"]
        assert "the cluster keys differ" in body["error"]
    assert await seed.states() == {"seed": "alive"}
    # The seed logs the refused sender once per interval, not once per attempt.
    refusals = [
        r for r in caplog.records if "refused" in r.getMessage() and r.name == "cluster.net.gossip"
    ]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    assert "cluster keys differ" in refusals[0].getMessage()


async def test_a_keyless_node_joining_a_keyed_mesh_is_told_the_same(start: Start) -> None:
    seed = await start("seed", cluster_key="right")
    keyless = await start("keyless")
    status, body = await keyless.post("/cluster/join", {"seeds": [seed.address]})
    assert (status, body["code"]) == (502, "SEED_REFUSED")
    # And the other way round: a keyed node cannot verify a keyless seed's answer.
    open_seed = await start("open")
    keyed = await start("keyed", cluster_key="right")
    status, body = await keyed.post("/cluster/join", {"seeds": [open_seed.address]})
    assert (status, body["code"]) == (502, "SEED_REFUSED")


async def test_a_node_started_with_the_wrong_key_reports_why_in_health_and_logs(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    seed = await start("seed", cluster_key="right")
    joiner = await start("joiner", cluster_key="wrong", join=(seed.address,))

    async def refused() -> bool:
        status, body = await joiner.get("/health")
        return status == 503 and "cluster keys differ" in body.get("reason", "")

    await until(refused)
    _, body = await joiner.get("/health")
    assert body["status"] == "syncing"
    assert seed.address in body["reason"]
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and r.name == "cluster.lifecycle"
    ]
    assert errors, "no ERROR line about the refusing seed"
    assert seed.address in errors[0].getMessage()
    assert "the cluster keys differ" in errors[0].getMessage()
    assert not any("none of the seeds answered" in r.getMessage() for r in caplog.records)
