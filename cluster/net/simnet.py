"""In-memory twins of the two transports, driven by the event loop: the simulation's network.

`SimNet` puts datagrams (`Transport`) and requests (`PeerTransport`) between in-process nodes on one
`MemoryNetwork`, so one seed decides every loss, delay, partition and crash for both, and the
node code above them (gossip, replication, anti-entropy, snapshots) runs unchanged. Time is the
event loop's: under the simulation's virtual-time loop a minute passes in milliseconds.

What a request sees, as over TCP: a down endpoint refuses at once (connection refused); a
partition swallows the request or its answer, so the caller times out after `within` seconds;
loss does not apply (TCP retransmits); each leg takes the link's delay plus jitter. A handler that
raises a KVError answers with its status (PeerError.status), as HTTP would; a handler that
raises anything else is a bug: it is recorded in `bugs` and answered as a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.core.ports import PeerError
from cluster.errors import KVError
from cluster.net import auth
from cluster.net.memory import MemoryNetwork
from cluster.net.peer_service import PeerRequest

logger = logging.getLogger(__name__)

Receiver = Callable[[bytes, str], None]
Handler = Callable[[PeerRequest], bytes]


@dataclass(slots=True)
class SimNet:
    """Endpoints by address; `datagrams(address, receive)` and `peers(address, key, wall)` give a
    node its two transports."""

    network: MemoryNetwork[bytes]
    receivers: dict[str, Receiver] = field(default_factory=dict)
    handlers: dict[str, Handler] = field(default_factory=dict)
    bugs: list[BaseException] = field(default_factory=list)
    requests: int = 0
    _pump: asyncio.TimerHandle | None = None

    # --- endpoints -------------------------------------------------------------------------------

    def attach(self, address: str, receive: Receiver, handle: Handler) -> None:
        """A node (process) at `address` is up: datagrams go to `receive`, requests to `handle`."""
        self.receivers[address] = receive
        self.handlers[address] = handle
        self.network.set_up(address, True)

    def detach(self, address: str) -> None:
        """The process at `address` crashed: nothing reaches it any more."""
        self.receivers.pop(address, None)
        self.handlers.pop(address, None)
        self.network.set_up(address, False)

    def datagrams(self, address: str) -> SimDatagrams:
        return SimDatagrams(self, address)

    def peers(self, address: str, key: str | None, wall: Callable[[], float]) -> SimPeers:
        return SimPeers(self, address, key, wall)

    # --- datagrams -------------------------------------------------------------------------------

    def send(self, src: str, dst: str, data: bytes) -> None:
        self.network.send(src, dst, data)
        self._schedule()

    def _schedule(self) -> None:
        at = self.network.next_time()
        if at is None:
            return
        if self._pump is not None and self._pump.when() <= at:
            return
        if self._pump is not None:
            self._pump.cancel()
        self._pump = asyncio.get_running_loop().call_at(at, self._deliver)

    def _deliver(self) -> None:
        self._pump = None
        for d in self.network.deliver_due():
            receive = self.receivers.get(d.dst)
            if receive is not None:
                receive(d.payload, d.src)
        self._schedule()

    # --- requests --------------------------------------------------------------------------------

    async def request(self, src: str, dst: str, request: PeerRequest) -> bytes:
        self.requests += 1
        if dst not in self.handlers:
            await asyncio.sleep(self.network.delay(src, dst))
            raise PeerError(f"{request.method} {dst}{request.path}: connection refused")
        await asyncio.sleep(self.network.delay(src, dst))
        handler = self.handlers.get(dst)
        if handler is None or not self.network.reachable(src, dst):
            await asyncio.Event().wait()  # lost in a partition: the caller's timeout ends it
        assert handler is not None
        try:
            reply = handler(request)
        except KVError as exc:
            what = f"{request.method} {dst}{request.path}: {exc.message}"
            raise PeerError(what, exc.status) from None
        except Exception as exc:
            self.bugs.append(exc)
            logger.exception("bug in the handler of %s %s at %s", request.method, request.path, dst)
            raise PeerError(f"{request.method} {dst}{request.path}: internal error", 500) from exc
        await asyncio.sleep(self.network.delay(dst, src))
        if not self.network.reachable(dst, src):
            await asyncio.Event().wait()  # the answer is lost: the caller times out
        return reply


@dataclass(frozen=True, slots=True)
class SimDatagrams:
    """One node's datagram transport on a SimNet."""

    net: SimNet
    address: str

    def send(self, address: str, data: bytes) -> None:
        self.net.send(self.address, address, data)


@dataclass(frozen=True, slots=True)
class SimPeers:
    """One node's peer transport on a SimNet: signs as `http_peers.PeerClient` does."""

    net: SimNet
    address: str
    key: str | None
    wall: Callable[[], float]

    async def request(
        self, method: str, address: str, path: str, body: bytes = b"", within: float = 5.0
    ) -> bytes:
        headers = auth.stamp(self.key, method, path, body, self.wall())
        req = PeerRequest(
            method,
            path,
            body,
            self.address,
            headers.get(auth.HEADER),
            headers.get(auth.TIME_HEADER),
        )
        try:
            async with asyncio.timeout(within):
                return await self.net.request(self.address, address, req)
        except TimeoutError:
            raise PeerError(f"{method} {address}{path}: timed out after {within}s") from None
