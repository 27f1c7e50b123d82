"""Gossip datagrams over UDP: a `cluster.core.ports.Transport` bound to one socket.

Sending is best effort, as the protocol expects: a host name is resolved once (cached for
RESOLVE_TTL seconds, since containers change addresses) and a failed send is counted, never raised.
Each received datagram is handed to `receive(data, "host:port")`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster.core.addresses import parse_hostport
from cluster.core.clock import Clock
from cluster.errors import AddressError

logger = logging.getLogger(__name__)

RESOLVE_TTL = 30.0  # seconds a resolved host name is reused

Receiver = Callable[[bytes, str], None]


@dataclass(slots=True)
class UdpStats:
    datagrams_sent: int = 0
    send_errors: int = 0  # unresolvable names, refused sends, ICMP port unreachable


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner.receive(data, f"{addr[0]}:{addr[1]}")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a dead peer lands here: expected, counted, not an error.
        self.owner.stats.send_errors += 1
        logger.debug("node=%s UDP error: %s", self.owner.name, exc)


class UdpTransport:
    """One UDP socket: `send` to "host:port", received datagrams to `receive`."""

    def __init__(self, name: str, clock: Clock, receive: Receiver) -> None:
        self.name = name
        self.clock = clock
        self.receive = receive
        self.stats = UdpStats()
        self._socket: asyncio.DatagramTransport | None = None
        self._resolved: dict[str, tuple[float, str]] = {}  # host -> (expires, ip)
        self._tasks: set[asyncio.Task[None]] = set()

    async def bind(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self), local_addr=(host, port)
        )
        # uvloop's UDPTransport is not a subclass of asyncio.DatagramTransport: no isinstance.
        self._socket = transport

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def send(self, address: str, data: bytes) -> None:
        if self._socket is None:
            return
        try:
            host, port = parse_hostport(address)
        except AddressError:
            self.stats.send_errors += 1
            return
        ip = self._ip(host)
        if ip is None:
            task = asyncio.get_running_loop().create_task(self._resolve_and_send(host, port, data))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        try:
            self._socket.sendto(data, (ip, port))
            self.stats.datagrams_sent += 1
        except OSError as exc:
            self.stats.send_errors += 1
            logger.debug("node=%s send to %s failed: %s", self.name, address, exc)

    def _ip(self, host: str) -> str | None:
        """`host` if it is an IP literal, its cached resolution, or None (resolve first)."""
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        cached = self._resolved.get(host)
        if cached is not None and cached[0] > self.clock.monotonic():
            return cached[1]
        return None

    async def _resolve_and_send(self, host: str, port: int, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            self.stats.send_errors += 1
            logger.debug("node=%s cannot resolve %s: %s", self.name, host, exc)
            return
        ip = str(infos[0][4][0])
        self._resolved[host] = (self.clock.monotonic() + RESOLVE_TTL, ip)
        self.send(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}", data)
