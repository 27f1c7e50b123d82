"""Faults, each a small function over a `Rig`: partitions, crashes, pauses, netem, clock skew.

Partitions are nft rules in the *node* namespaces (table `inet kvfault`), dropping traffic
between node addresses; the hub (nginx and the clients, 10.213.R.254) is never blocked unless
`clients=True`, so a minority side keeps taking writes, which is what a multi-active store must
survive. `heal` deletes the table everywhere. Each function returns quickly; the ones that
(re)start a node do not wait for it (`Rig.wait_http` does, or the scenario polls).

    isolate(rig, "n3")                  n3 <-/-> every other node (both directions)
    split(rig, [["n1","n2","n3"], ["n4","n5"]])
    one_way(rig, src="n1", dst="n2")    n2 drops what n1 sends it; n1 still hears n2
    heal(rig)
    kill_9(rig, "n2"); restart(rig, "n2")        same name and address, empty memory, --join
    power_cut(rig); restart_all(rig)             every node SIGKILLed at once; all started again
    pause(rig, "n2"); resume(rig, "n2")          SIGSTOP / SIGCONT
    netem(rig, "n2", loss=10, delay_ms=50)       NetemUnavailable where the kernel lacks netem
    restart(rig, "n3", clock_offset=0.4)         the node's wall clock runs 400 ms ahead
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Sequence

from loadtest.faults.rig import NFT, TC, NodeProc, Rig, RigError

TABLE = "kvfault"


class NetemUnavailable(RigError):
    """The kernel has no netem qdisc (tc answers "Specified qdisc kind is unknown")."""


def _block(rig: Rig, node: NodeProc, peers: Iterable[str], inbound: bool, outbound: bool) -> None:
    ips = sorted({rig.node(p).ip for p in peers if p != node.name})
    if not ips:
        return
    addrs = ", ".join(ips)
    # add table/chain are idempotent; each call only adds rules, heal() removes them all.
    script = [
        f"add table inet {TABLE}",
        f"add chain inet {TABLE} input {{ type filter hook input priority -10; policy accept; }}",
        f"add chain inet {TABLE} output {{ type filter hook output priority -10; policy accept; }}",
    ]
    if inbound:
        script.append(f"add rule inet {TABLE} input ip saddr {{ {addrs} }} drop")
    if outbound:
        script.append(f"add rule inet {TABLE} output ip daddr {{ {addrs} }} drop")
    rig.ns_exec(node.netns, NFT, "-f", "-", input_text="\n".join(script) + "\n")


def isolate(rig: Rig, name: str, clients: bool = False) -> None:
    """Cut `name` off from every other node (and from nginx and the clients if `clients`)."""
    node = rig.node(name)
    _block(rig, node, rig.names(), inbound=True, outbound=True)
    if clients:
        script = (
            f"add rule inet {TABLE} input ip saddr {rig.hub_ip} drop\n"
            f"add rule inet {TABLE} output ip daddr {rig.hub_ip} drop\n"
        )
        rig.ns_exec(node.netns, NFT, "-f", "-", input_text=script)


def split(rig: Rig, groups: Sequence[Sequence[str]]) -> None:
    """Partition the nodes into `groups`: traffic flows only inside a group."""
    placed = [n for g in groups for n in g]
    if sorted(placed) != sorted(rig.names()):
        raise ValueError(f"groups {groups} must place every node exactly once")
    for group in groups:
        others = [n for n in rig.names() if n not in group]
        for name in group:
            _block(rig, rig.node(name), others, inbound=True, outbound=True)


def one_way(rig: Rig, src: str, dst: str) -> None:
    """`dst` drops every packet from `src` (one-way loss: `src` still hears `dst`)."""
    _block(rig, rig.node(dst), [src], inbound=True, outbound=False)


def heal(rig: Rig) -> None:
    """Remove every partition rule and netem qdisc of this run."""
    for node in rig.nodes.values():
        rig.ns_exec(node.netns, NFT, "delete", "table", "inet", TABLE, check=False)
        rig.ns_exec(node.netns, TC, "qdisc", "del", "dev", "eth0", "root", check=False)


def netem(rig: Rig, name: str, loss: float = 0.0, delay_ms: float = 0.0) -> None:
    """Packet loss (percent) and delay on the node's link; NetemUnavailable if unsupported."""
    args = []
    if delay_ms:
        args += ["delay", f"{delay_ms}ms"]
    if loss:
        args += ["loss", f"{loss}%"]
    node = rig.node(name)
    done = rig.ns_exec(
        node.netns, TC, "qdisc", "add", "dev", "eth0", "root", "netem", *args, check=False
    )
    if done.returncode != 0:
        raise NetemUnavailable(
            f"netem is not available on this kernel ({done.stderr.strip() or 'tc failed'}): "
            "loss and delay faults skipped"
        )


def netem_available(rig: Rig) -> tuple[bool, str]:
    """Try netem on the first node's link and remove it again."""
    name = rig.names()[0]
    try:
        netem(rig, name, delay_ms=1)
    except NetemUnavailable as exc:
        return False, str(exc)
    rig.ns_exec(rig.node(name).netns, TC, "qdisc", "del", "dev", "eth0", "root", check=False)
    return True, ""


def _signal(node: NodeProc, sig: signal.Signals) -> None:
    if node.proc is None or node.proc.poll() is not None:
        raise RigError(f"{node.name} is not running")
    os.kill(node.proc.pid, sig)


def kill_9(rig: Rig, name: str) -> None:
    """SIGKILL the node: no leave, memory gone; the others must detect it."""
    node = rig.node(name)
    _signal(node, signal.SIGKILL)
    assert node.proc is not None
    node.proc.wait(10)
    node.paused = False


def power_cut(rig: Rig) -> None:
    """SIGKILL every node at once (by PID, one signal right after the other, before waiting for
    any): the whole mesh loses power; only what each node kept on disk can come back."""
    nodes = [n for n in rig.nodes.values() if n.running]
    for node in nodes:
        _signal(node, signal.SIGKILL)
    for node in nodes:
        assert node.proc is not None
        node.proc.wait(10)
        node.paused = False


def restart_all(rig: Rig) -> None:
    """Start every node again at once, each joining all the others (who are joining too)."""
    for name in rig.names():
        restart(rig, name)


def restart(rig: Rig, name: str, clock_offset: float | None = None, *extra: str) -> NodeProc:
    """Start the node again under its name and address, joining the others: with empty memory,
    or with what its data directory kept when the rig runs with `persist`.

    `clock_offset` (seconds) skews its wall clock through node.py's --clock-offset seam. Kills it
    first if it still runs.
    """
    node = rig.node(name)
    if node.running:
        kill_9(rig, name)
    seeds = [n.address for n in rig.nodes.values() if n.name != name]
    args = list(extra)
    if clock_offset is not None:
        args += ["--clock-offset", str(clock_offset)]
    return rig.start_node(name, join=seeds, extra=args)


def pause(rig: Rig, name: str) -> None:
    """SIGSTOP: the process keeps its sockets and memory but answers nothing."""
    node = rig.node(name)
    _signal(node, signal.SIGSTOP)
    node.paused = True


def resume(rig: Rig, name: str) -> None:
    """SIGCONT: the paused node carries on where it stopped and must refute or rejoin."""
    node = rig.node(name)
    _signal(node, signal.SIGCONT)
    node.paused = False
