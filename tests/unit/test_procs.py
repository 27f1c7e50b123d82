"""loadtest.procs: the helpers every e2e test and benchmark starts processes with."""

from __future__ import annotations

from loadtest import procs


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    """A port from the ephemeral range could become an outgoing connection's source port before
    nginx binds it (that made CI fail once); one plan asks for many ports before binding any."""
    low = procs._ephemeral_low()
    ports = [procs.free_port() for _ in range(50)]
    assert all(10000 <= p < low for p in ports)
    assert len(set(ports)) == len(ports)
