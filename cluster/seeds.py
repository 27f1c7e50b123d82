"""Which addresses to contact for the seeds a node is given (--join, POST /cluster/join).

A name is resolved to every address it has, each tried: a Kubernetes headless service or a
Docker service name lists every member, this node among them, and the system resolver would hand
gossip just one of them, perhaps our own. A name that does not resolve (yet: a pod not scheduled)
is kept as given, and the next attempt resolves it again. This node's own addresses are left out.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from cluster.core.addresses import format_hostport, parse_hostport
from cluster.errors import AddressError

Resolve = Callable[[str, int], Awaitable[set[str]]]


async def resolve_ips(host: str, port: int) -> set[str]:
    """The addresses a host name resolves to (the system resolver)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    return {str(info[4][0]) for info in infos}


@dataclass(frozen=True, slots=True)
class OwnAddress:
    """Where this node is: the host it binds, the host it advertises, its HTTP port."""

    bind: str
    advertised: str
    port: int

    def hosts(self) -> set[str]:
        return {self.bind, self.advertised}

    def is_own(self, ip: str, port: int) -> bool:
        """Is ip:port this very node (same port, one of our addresses)?"""
        if port != self.port:
            return False
        if ip in self.hosts():
            return True
        # Bound to loopback or to every address: a loopback alias (localhost) is us too.
        loopback = ip.startswith("127.") or ip == "::1"
        return loopback and self.bind in ("127.0.0.1", "localhost", "0.0.0.0", "::")


async def seed_addresses(seeds: Sequence[str], own: OwnAddress, resolve: Resolve) -> list[str]:
    """The addresses to contact for `seeds`, in order, without duplicates or our own."""
    out: list[str] = []
    for seed in seeds:
        try:
            host, port = parse_hostport(seed)
        except AddressError:
            out.append(seed)  # gossip reports it
            continue
        if port == own.port and host in own.hosts():
            continue
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                ips = await resolve(host, port)
            except OSError:
                out.append(seed)
                continue
            out += [format_hostport(ip, port) for ip in sorted(ips) if not own.is_own(ip, port)]
            continue
        if not own.is_own(host, port):
            out.append(seed)
    return list(dict.fromkeys(out))
