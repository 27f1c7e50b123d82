"""/cluster/status, /internal/status and /ui on whole in-process nodes over real sockets."""

from __future__ import annotations

from typing import Any

from cluster.net.auth import stamp
from tests.integration.inproc import Running, Start, until


async def _mesh(start: Start, *names: str, **overrides: Any) -> list[Running]:
    nodes = [await start(names[0], **overrides)]
    for name in names[1:]:
        node = await start(name, **overrides)
        status, _ = await node.post("/cluster/join", {"seeds": [nodes[0].address]})
        assert status == 200
        nodes.append(node)

    async def all_see_all() -> bool:
        for n in nodes:
            states = await n.states()
            if sorted(states) != sorted(names) or set(states.values()) != {"alive"}:
                return False
        return True

    await until(all_see_all)
    return nodes


async def test_status_gathers_every_node_s_figures_through_the_node_that_serves_it(
    start: Start,
) -> None:
    a, b, c = await _mesh(start, "a", "b", "c")
    for i in range(20):
        resp = await b.client.put(f"/keys/k{i}", json={"value": str(i)})
        assert resp.status in (200, 201)

    async def a_counts_everyone_s_keys() -> bool:
        _, body = await a.get("/cluster/status")
        return [n.get("keys") for n in body["nodes"]] == [20, 20, 20]

    await until(a_counts_everyone_s_keys)
    status, body = await a.get("/cluster/status")
    assert status == 200
    assert body["served_by"] == "a"
    assert body["admin_token_required"] is False
    assert {m["name"]: m["state"] for m in body["members"]} == dict.fromkeys("abc", "alive")
    assert all(m["for_s"] >= 0 and m["incarnation"] > 0 for m in body["members"])
    # a saw b and c join, in that order.
    joined = [e["name"] for e in body["events"] if e["kind"] == "joined"]
    assert joined == ["b", "c"]
    nodes = {n["name"]: n for n in body["nodes"]}
    assert list(nodes) == ["a", "b", "c"]  # the serving node first
    for name, n in nodes.items():
        assert n["ready"] is True
        assert n["address"] == {"a": a, "b": b, "c": c}[name].address
        assert sorted(p["name"] for p in n["peers"]) == sorted(set("abc") - {name})
        assert all(p["queued"] >= 0 and p["lag_ms"] >= 0 for p in n["peers"])
        assert n["refused_for_skew"] == 0
        assert n["hlc_ahead_ms"] >= 0
        assert set(n["load"]) == {"requests_per_s", "p99_ms", "series"}


async def test_a_peer_that_does_not_answer_is_listed_with_the_error_and_does_not_hold_the_page(
    start: Start,
) -> None:
    a, b = await _mesh(start, "a", "b")
    address = b.address
    await b.client.server.close()  # b's HTTP is gone; its gossip still answers for a while
    status, body = await a.get("/cluster/status")
    assert status == 200
    nodes = {n["name"]: n for n in body["nodes"]}
    assert "keys" in nodes["a"]
    assert "error" in nodes["b"]
    assert nodes["b"]["address"] == address


async def test_the_load_of_the_last_minute_counts_client_requests_not_the_dashboard(
    start: Start,
) -> None:
    (a,) = await _mesh(start, "a")
    sampler = a.node.status.history
    for _ in range(3):  # the dashboard itself and peers' requests are not load
        await a.get("/cluster/status")
        await a.get("/health")
    clock = a.node.clock
    requests, buckets = a.node.metrics.client_totals()
    sampler.sample(clock.monotonic(), requests, buckets)
    for i in range(10):
        await a.client.get(f"/set?k=k{i}&v=v")
    requests_after, buckets = a.node.metrics.client_totals()
    assert requests_after - requests == 10
    sampler.sample(clock.monotonic() + 1.0, requests_after, buckets)
    load = a.node.status.local()["load"]
    assert isinstance(load, dict)
    assert load["p99_ms"] is not None
    assert load["p99_ms"] > 0
    assert load["series"]
    assert load["series"][-1][1] > 0


async def test_internal_status_is_signed_like_every_node_to_node_route(start: Start) -> None:
    (a,) = await _mesh(start, "a", cluster_key="k")
    resp = await a.client.get("/internal/status")
    assert resp.status == 401
    resp = await a.client.get(
        "/internal/status", headers=stamp("k", "GET", "/internal/status", b"", a.node.clock.wall())
    )
    assert resp.status == 200
    assert (await resp.json())["name"] == "a"


async def test_a_removal_shows_in_the_timeline_as_removed_by_whom(start: Start) -> None:
    a, b, _c = await _mesh(start, "a", "b", "c")
    status, _ = await a.post("/cluster/remove", {"name": "c"})
    assert status == 200

    async def b_saw_it() -> bool:
        _, body = await b.get("/cluster/status")
        return any(e["kind"] == "removed" for e in body["events"])

    await until(b_saw_it)
    for viewer in (a, b):
        _, body = await viewer.get("/cluster/status")
        removed = [e for e in body["events"] if e["kind"] == "removed"]
        assert [(e["name"], e["detail"]) for e in removed] == [("c", "by a")]


async def test_the_dashboard_page_is_served_while_the_node_joins(start: Start) -> None:
    lonely = await start("lonely", join=("127.0.0.1:9",))  # a seed that never answers
    resp = await lonely.client.get("/ui")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "/cluster/status" in page
    assert "<script>" in page
    # No request to anywhere but the node: no absolute URL in the page's code.
    assert "http://" not in page.split("<script>")[1]
    assert "https://" not in page
    status, body = await lonely.get("/cluster/status")
    assert status == 200
    assert body["nodes"][0]["ready"] is False


async def test_a_killed_peer_turns_suspect_then_dead_in_the_status(start: Start) -> None:
    a, b = await _mesh(start, "a", "b")
    await b.node.stop_mesh(leave=False)  # silent: no leave, as a crash
    await b.client.close()
    seen: list[str] = []

    async def dead() -> bool:
        _, body = await a.get("/cluster/status")
        state = {m["name"]: m["state"] for m in body["members"]}["b"]
        if not seen or seen[-1] != state:
            seen.append(state)
        return state == "dead"

    await until(dead)
    kinds = [e["kind"] for e in (await a.get("/cluster/status"))[1]["events"] if e["name"] == "b"]
    assert kinds[-2:] == ["suspect", "dead"]
    assert seen[0] == "alive"
    assert seen[-1] == "dead"
