"""The node's HTTP/1.1 peer client (cluster/net/http_peers.py) against servers on loopback port 0
that answer as scripted: keep-alive reuse, a connection the peer closed while idle, and every
reply it must refuse as a PeerError rather than misread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from cluster.core.ports import PeerError
from cluster.net.http_peers import PeerClient

Answer = Callable[[bytes], bytes | None]  # the request's head -> the reply (None: close)


class Scripted:
    def __init__(self, answer: Answer, close_after: int = 0) -> None:
        self.answer = answer
        self.close_after = close_after  # close each connection after this many replies
        self.connections = 0
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        replies = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.heads.append(head)
                reply = self.answer(head)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                replies += 1
                if self.close_after and replies >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"ok": true}') -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


Serve = Callable[[Scripted], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(script: Scripted) -> str:
        server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
        servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


@pytest.fixture
async def client() -> AsyncIterator[PeerClient]:
    c = PeerClient("me", "secret", time.time)
    await c.start()
    yield c
    await c.close()


async def test_one_connection_carries_many_requests(serve: Serve, client: PeerClient) -> None:
    script = Scripted(lambda head: ok(b"pong"))
    address = await serve(script)
    for _ in range(5):
        assert await client.request("POST", address, "/internal/x", b"{}") == b"pong"
    assert script.connections == 1
    head = script.heads[0].decode()
    assert head.startswith("POST /internal/x HTTP/1.1\r\n")
    assert "X-KV-Node: me" in head
    assert "X-KV-Signature: " in head  # signed: a cluster key is set


async def test_a_connection_the_peer_closed_while_idle_is_replaced(
    serve: Serve, client: PeerClient
) -> None:
    script = Scripted(lambda head: ok(), close_after=1)
    address = await serve(script)
    for _ in range(3):
        await client.request("GET", address, "/internal/x")
        await asyncio.sleep(0)  # let the close reach us (or not: both must work)
    assert script.connections == 3


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "chunked"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "Content-Length"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
        (b"HTTP/1.1 2xx OK\r\nContent-Length: 0\r\n\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000, "too long"),
    ],
)
async def test_a_reply_it_cannot_read_is_a_peer_error(
    serve: Serve, client: PeerClient, reply: bytes, why: str
) -> None:
    address = await serve(Scripted(lambda head: reply, close_after=1))
    with pytest.raises(PeerError, match=why):
        await client.request("POST", address, "/internal/x", b"{}")


async def test_a_non_200_answer_carries_its_status(serve: Serve, client: PeerClient) -> None:
    body = b'{"error": "no", "code": "UNAUTHORIZED"}'
    reply = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    address = await serve(Scripted(lambda head: reply))
    with pytest.raises(PeerError, match="401") as caught:
        await client.request("POST", address, "/internal/x", b"{}")
    assert caught.value.status == 401


async def test_a_silent_peer_times_out_and_its_connection_is_not_reused(
    serve: Serve, client: PeerClient
) -> None:
    gate = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await gate.wait()  # never answers the first request in time
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        with pytest.raises(PeerError, match="timed out"):
            await client.request("GET", address, "/internal/x", within=0.05)
    finally:
        gate.set()
        server.close()
    script = Scripted(lambda head: ok(b"fresh"))
    fresh = await serve(script)
    assert await client.request("GET", fresh, "/internal/x") == b"fresh"


async def test_nothing_listening_and_a_bad_address_are_peer_errors(client: PeerClient) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(PeerError):
        await client.request("GET", f"127.0.0.1:{port}", "/internal/x")
    with pytest.raises(PeerError, match="host:port"):
        await client.request("GET", "no-port", "/internal/x")


async def test_a_closed_client_refuses(serve: Serve) -> None:
    c = PeerClient("me", None, time.time)
    with pytest.raises(PeerError, match="not started"):
        await c.request("GET", "127.0.0.1:1", "/internal/x")
