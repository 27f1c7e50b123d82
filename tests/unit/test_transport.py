"""The in-memory network that the simulation trusts: delay, loss, partitions, determinism."""

from __future__ import annotations

import random

import pytest

from cluster.core.clock import FakeClock
from cluster.core.ports import Transport
from cluster.net.memory import Link, MemoryNetwork, MemoryTransport


def _net(seed: int = 1, link: Link | None = None) -> tuple[FakeClock, MemoryNetwork[str]]:
    clock = FakeClock()
    return clock, MemoryNetwork(clock, random.Random(seed), link)


def _drain(clock: FakeClock, net: MemoryNetwork[str]) -> list[tuple[float, str, str, str]]:
    """Advance event to event until nothing is in flight; (time, src, dst, payload) delivered."""
    out = []
    while (t := net.next_time()) is not None:
        clock.advance(max(0.0, t - clock.monotonic()))
        out += [(clock.monotonic(), d.src, d.dst, d.payload) for d in net.deliver_due()]
    return out


def test_memory_transport_is_a_transport() -> None:
    clock = FakeClock()
    network: MemoryNetwork[bytes] = MemoryNetwork(clock, random.Random(1))
    endpoint: Transport = network.endpoint("a:1")  # checked by mypy: bytes endpoints fit
    assert isinstance(endpoint, MemoryTransport)
    endpoint.send("b:1", b"x")
    clock.advance(0.0)
    assert [(d.src, d.dst, d.payload) for d in network.deliver_due()] == [("a:1", "b:1", b"x")]


def test_delivery_waits_for_the_delay_and_keeps_send_order() -> None:
    clock, net = _net(link=Link(delay=0.5))
    a = net.endpoint("a:1")
    a.send("b:1", "one")
    a.send("b:1", "two")
    assert net.deliver_due() == []  # nothing arrives before its time
    assert net.next_time() == 0.5
    clock.advance(0.5)
    assert [d.payload for d in net.deliver_due()] == ["one", "two"]
    assert net.in_flight() == 0


def test_jitter_reorders_within_its_bound() -> None:
    clock, net = _net(link=Link(delay=0.1, jitter=0.2))
    for i in range(50):
        net.send("a:1", "b:1", str(i))
    got = _drain(clock, net)
    assert len(got) == 50
    assert all(0.1 <= t <= 0.3 for t, *_ in got)
    assert [p for *_, p in got] != [str(i) for i in range(50)]


def test_loss_rate_is_roughly_the_setting_and_reliable_sends_are_kept() -> None:
    clock, net = _net(link=Link(drop=0.3))
    for _ in range(2000):
        net.send("a:1", "b:1", "x")
    for _ in range(100):
        net.send("a:1", "b:1", "r", reliable=True)
    got = _drain(clock, net)
    assert sum(1 for *_, p in got if p == "r") == 100
    lost = 2000 - sum(1 for *_, p in got if p == "x")
    assert 0.25 * 2000 < lost < 0.35 * 2000
    assert net.stats().dropped == lost


def test_per_link_settings_override_the_default_in_one_or_both_directions() -> None:
    clock, net = _net()
    net.set_link("a:1", "b:1", Link(drop=1.0), both=False)
    net.send("a:1", "b:1", "lost")
    net.send("b:1", "a:1", "kept")
    net.send("a:1", "c:1", "kept too")
    assert [p for *_, p in _drain(clock, net)] == ["kept", "kept too"]
    net.set_link("a:1", "c:1", Link(delay=2.0))
    net.send("c:1", "a:1", "slow")
    assert _drain(clock, net)[0][0] == pytest.approx(2.0)


def test_partition_blocks_between_groups_and_heal_restores() -> None:
    clock, net = _net()
    net.partition(["a:1", "b:1"], ["c:1"])
    net.send("a:1", "b:1", "same side")
    net.send("a:1", "c:1", "across")
    net.send("c:1", "d:1", "c to the unnamed rest")  # unnamed addresses form their own group
    net.send("d:1", "e:1", "within the unnamed rest")
    assert [p for *_, p in _drain(clock, net)] == ["same side", "within the unnamed rest"]
    assert net.stats().blocked == 2
    net.heal()
    net.send("a:1", "c:1", "across")
    assert [p for *_, p in _drain(clock, net)] == ["across"]


def test_a_partition_drops_datagrams_already_in_flight() -> None:
    clock, net = _net(link=Link(delay=1.0))
    net.send("a:1", "b:1", "x")
    net.partition(["a:1"], ["b:1"])
    assert _drain(clock, net) == []


def test_a_down_endpoint_receives_nothing() -> None:
    clock, net = _net()
    net.set_up("b:1", False)
    net.send("a:1", "b:1", "x", reliable=True)
    assert _drain(clock, net) == []
    net.set_up("b:1", True)
    net.send("a:1", "b:1", "y")
    assert [p for *_, p in _drain(clock, net)] == ["y"]


def test_same_seed_same_deliveries() -> None:
    def run(seed: int) -> list[tuple[float, str, str, str]]:
        clock, net = _net(seed, Link(drop=0.2, delay=0.01, jitter=0.05))
        for i in range(200):
            net.send(f"n{i % 5}:1", f"n{i % 7}:1", str(i))
        return _drain(clock, net)

    assert run(3) == run(3)
    assert run(3) != run(4)
