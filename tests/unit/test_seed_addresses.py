"""Seeds given as names: each name is tried at every address it resolves to, ours left out.

A Kubernetes headless service (or a Docker service name) resolves to every member, this node
among them; the system resolver would give gossip just one of those addresses, perhaps our own.
"""

from __future__ import annotations

import pytest

from cluster.app import Node
from cluster.config import Config
from cluster.errors import NoSeedReachable


def pod(resolves: dict[str, set[str]]) -> Node:
    node = Node(
        Config.for_tests(name="kvmesh-1", host="0.0.0.0", port=8080, advertise="10.0.0.6:8080")
    )

    async def resolve(host: str, port: int) -> set[str]:
        if host not in resolves:
            raise OSError(f"{host}: name not known")
        return resolves[host]

    node.lifecycle._resolve = resolve
    return node


async def test_a_name_resolving_to_every_member_is_tried_at_each_address_but_ours() -> None:
    node = pod({"kvmesh-peers": {"10.0.0.5", "10.0.0.6", "10.0.0.7"}})
    assert await node.lifecycle.seed_addresses(["kvmesh-peers:8080"]) == [
        "10.0.0.5:8080",
        "10.0.0.7:8080",
    ]


async def test_names_of_single_pods_and_literal_addresses_are_kept_ours_dropped() -> None:
    node = pod({"kvmesh-0.kvmesh-peers": {"10.0.0.5"}, "kvmesh-1.kvmesh-peers": {"10.0.0.6"}})
    seeds = ["kvmesh-0.kvmesh-peers:8080", "kvmesh-1.kvmesh-peers:8080", "10.0.0.6:8080"]
    assert await node.lifecycle.seed_addresses(seeds) == ["10.0.0.5:8080"]


async def test_a_name_that_does_not_resolve_yet_is_kept_to_be_tried_again() -> None:
    node = pod({})
    assert await node.lifecycle.seed_addresses(["kvmesh-2.kvmesh-peers:8080"]) == [
        "kvmesh-2.kvmesh-peers:8080"
    ]


async def test_a_name_that_resolves_only_to_ourselves_is_no_seed() -> None:
    node = pod({"kvmesh-peers": {"10.0.0.6"}})
    assert await node.lifecycle.seed_addresses(["kvmesh-peers:8080"]) == []
    with pytest.raises(NoSeedReachable, match="only seeds given are this node itself"):
        await node.lifecycle.join(["kvmesh-peers:8080"])
