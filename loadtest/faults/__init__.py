"""The fault-injection suite: a mesh of node.py processes in network namespaces, broken on purpose.

    python -m loadtest.faults [--quick] [--scenario NAME]      (make faults; root only)

- `rig`: one network namespace per node, joined by veth pairs to a bridge in a hub namespace of
  its own; nginx and the load clients run in the hub. Everything is removed again.
- `faults`: partitions (nft inside the namespaces), kill -9 and restart, SIGSTOP/SIGCONT, netem
  (skipped where the kernel lacks it), clock skew through the node's `--clock-offset` seam.
- `load`: bounded concurrent writers (HTTP and line-protocol transactions) recording every
  attempted and acknowledged write with its HLC timestamp.
- `verdict`: after heal, every node identical, each key holding the newest acknowledged write (or a
  newer attempted one), nothing deleted resurrected, transactions whole; membership verdicts.
- `scenarios`: the scenarios and the markdown table (loadtest/reports/faults.md).
"""
