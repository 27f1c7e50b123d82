"""RESP on a real socket (port 0), driven by redis-py's asyncio client, RESP3 and RESP2: every
command, MULTI/EXEC, AUTH, errors, and bad input on raw sockets. Time is a FakeClock, so TTLs are
exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ResponseError, WatchError

from cluster.api.resp.server import RespServer, start_resp_server
from cluster.app import Node
from cluster.config import Config
from cluster.core.clock import FakeClock

Serve = Callable[..., Awaitable[tuple[Node, RespServer]]]


@pytest.fixture
async def serve(fake_clock: FakeClock) -> AsyncIterator[Serve]:
    servers: list[RespServer] = []

    async def start(**overrides: Any) -> tuple[Node, RespServer]:
        node = Node(Config.for_tests(**overrides), clock=fake_clock)
        server = await start_resp_server(node.make_resp_server(), "127.0.0.1", 0)
        servers.append(server)
        return node, server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture(params=[3, 2], ids=["resp3", "resp2"])
async def r(request: pytest.FixtureRequest, serve: Serve) -> AsyncIterator[aioredis.Redis]:
    _, server = await serve()
    client = aioredis.Redis(port=server.port, protocol=request.param, decode_responses=True)
    yield client
    await client.aclose()


async def test_strings(r: aioredis.Redis) -> None:
    assert await r.ping() is True
    assert await r.echo("héllo") == "héllo"
    assert await r.set("a", "1") is True
    assert await r.get("a") == "1"
    assert await r.get("missing") is None
    assert await r.set("a", "2", get=True) == "1"
    assert await r.set("a", "3", nx=True) is None
    assert await r.set("new", "n", xx=True) is None
    assert await r.set("new", "n", nx=True) is True
    assert await r.getset("a", "4") == "2"
    assert await r.mset({"m1": "x", "m2": "y"}) is True
    assert await r.mget("m1", "m2", "nope") == ["x", "y", None]
    assert await r.exists("m1", "m2", "nope") == 2
    assert await r.type("m1") == "string"
    assert await r.type("nope") == "none"
    assert await r.getdel("m1") == "x"
    assert await r.get("m1") is None
    assert await r.delete("m2", "a", "nope") == 2
    assert await r.unlink("new") == 1
    assert await r.dbsize() == 0


async def test_expiry_family(r: aioredis.Redis, fake_clock: FakeClock) -> None:
    assert await r.set("t", "x", ex=100)
    assert await r.ttl("t") == 100
    assert await r.pttl("t") == 100_000
    fake_clock.advance(40)
    assert await r.ttl("t") == 60
    assert await r.persist("t") is True
    assert await r.ttl("t") == -1
    assert await r.ttl("nope") == -2
    assert await r.expire("t", 5) is True
    assert await r.expire("t", 50, gt=True) is True
    assert await r.expire("t", 10, gt=True) is False
    assert await r.pexpire("t", 2000) is True
    assert await r.pttl("t") == 2000
    now = int(fake_clock.wall())
    assert await r.expireat("t", now + 30) is True
    assert await r.ttl("t") == 30
    assert await r.set("k", "v", px=1500, get=False)
    assert await r.set("k", "w", keepttl=True)
    assert await r.pttl("k") == 1500
    assert await r.getex("k", ex=9) == "w"
    assert await r.ttl("k") == 9
    assert await r.set("at", "v", exat=now + 7)
    assert await r.ttl("at") == 7
    fake_clock.advance(10)
    assert await r.get("at") is None  # expired: gone at once
    assert await r.expire("k", -1) is False  # already expired at +10 s: no such key
    assert await r.set("gone", "v")
    assert await r.expire("gone", 0) is True  # an expiry in the past deletes
    assert await r.exists("gone") == 0
    with pytest.raises(ResponseError, match="invalid expire time"):
        await r.set("bad", "v", ex=0)


async def test_keys_scan_and_flush(r: aioredis.Redis) -> None:
    await r.mset({f"user:{i:03d}": str(i) for i in range(50)} | {"other": "o"})
    assert sorted(await r.keys("user:00?")) == [f"user:00{i}" for i in range(10)]
    assert await r.keys("user:0[0-1]0") == ["user:000", "user:010"]
    seen = [k async for k in r.scan_iter(match="user:*", count=7)]
    assert sorted(seen) == [f"user:{i:03d}" for i in range(50)]  # each exactly once
    assert len(seen) == 50
    cursor, first = await r.scan(0, count=5)
    assert cursor != 0
    assert len(first) == 5
    assert await r.flushdb() is True
    assert await r.dbsize() == 0
    assert await r.flushall() is True


async def test_connection_and_introspection(r: aioredis.Redis) -> None:
    assert await r.select(0) is True
    with pytest.raises(ResponseError, match="DB index is out of range"):
        await r.select(1)
    assert await r.client_setname("me") is True
    assert await r.client_getname() == "me"
    assert await r.client_id() > 0
    info = await r.info()
    assert info["redis_version"]
    assert "alive_members" in info
    assert info["replication_queued_writes"] == 0
    assert set(await r.info("keyspace")) <= {"db0"}
    assert await r.config_get("appendonly") == {"appendonly": "no"}
    seconds, _ = await r.time()
    assert seconds > 1_600_000_000
    assert await r.command_count() > 30


async def test_errors_keep_the_connection(r: aioredis.Redis) -> None:
    with pytest.raises(ResponseError, match="unknown command 'NOPE'"):
        await r.execute_command("NOPE", "x")
    with pytest.raises(ResponseError, match="wrong number of arguments for 'get' command"):
        await r.execute_command("GET")
    with pytest.raises(ResponseError, match="the key is 65 characters long; the limit is 64"):
        await r.set("k" * 65, "v")
    with pytest.raises(ResponseError, match="not supported by kvmesh"):
        await r.incr("n")
    with pytest.raises(ResponseError, match="syntax error"):
        await r.execute_command("SET", "a", "b", "NX", "XX")
    with pytest.raises(ResponseError, match="not an integer"):
        await r.execute_command("EXPIRE", "a", "soon")
    assert await r.get("a") is None  # nothing above changed anything
    assert await r.ping() is True


async def test_multi_exec_is_one_batch(serve: Serve) -> None:
    node, server = await serve()
    r = aioredis.Redis(port=server.port, decode_responses=True)
    async with r.pipeline(transaction=True) as p:
        p.set("x", "1")
        p.set("y", "2", ex=50)
        p.get("x")
        p.delete("y")
        p.set("y", "3")
        replies = await p.execute()
    assert replies == [True, True, "1", 1, True]
    x, y = node.store.entry("x"), node.store.entry("y")
    assert x is not None
    assert y is not None
    assert x.ts == y.ts  # one timestamp: all of it or none, on every replica
    assert y.value == "3"
    await r.aclose()


async def test_multi_rules(serve: Serve) -> None:
    _, server = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

    async def call(*args: str) -> bytes:
        writer.write(
            b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args)
        )
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)

    assert await call("EXEC") == b"-ERR EXEC without MULTI\r\n"
    assert await call("DISCARD") == b"-ERR DISCARD without MULTI\r\n"
    assert await call("MULTI") == b"+OK\r\n"
    assert await call("MULTI") == b"-ERR MULTI calls can not be nested\r\n"
    assert await call("SET", "a", "1") == b"+QUEUED\r\n"
    assert (await call("NOPE")).startswith(b"-ERR unknown command")
    assert await call("EXEC") == b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    assert await call("GET", "a") == b"$-1\r\n"  # nothing applied
    assert await call("MULTI") == b"+OK\r\n"
    assert await call("FLUSHDB") == b"-ERR FLUSHDB is not allowed inside MULTI in kvmesh\r\n"
    assert await call("DISCARD") == b"+OK\r\n"
    writer.close()


async def test_watch_has_its_local_meaning(serve: Serve) -> None:
    _, server = await serve()
    a = aioredis.Redis(port=server.port, decode_responses=True)
    b = aioredis.Redis(port=server.port, decode_responses=True)
    async with a.pipeline(transaction=True) as p:
        await p.watch("w")
        await b.set("w", "changed")
        p.multi()
        p.set("w", "mine")
        with pytest.raises(WatchError):
            await p.execute()
    assert await a.get("w") == "changed"
    await a.aclose()
    await b.aclose()


async def test_auth(serve: Serve) -> None:
    _, server = await serve(resp_password="s3cret")
    # No retries: redis-py retries a connection error (an auth error is one) with backoff.
    anon = aioredis.Redis(port=server.port, protocol=2, retry=Retry(NoBackoff(), 0))
    with pytest.raises(AuthenticationError, match="Authentication required"):
        await anon.get("k")  # NOAUTH
    with pytest.raises(AuthenticationError):
        await anon.execute_command("AUTH", "nope")  # WRONGPASS
    await anon.aclose()
    # On one connection (redis-py drops a connection after an authentication error):
    got = await raw(server, b"GET k\r\nAUTH nope\r\nAUTH s3cret\r\nGET k\r\n")
    assert got == (
        b"-NOAUTH Authentication required.\r\n"
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        b"+OK\r\n$-1\r\n"
    )
    for proto in (2, 3):
        client = aioredis.Redis(port=server.port, password="s3cret", protocol=proto)
        assert await client.ping() is True
        await client.aclose()


async def raw(server: RespServer, data: bytes, read: int = 65536) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    out = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(read), 5):
            out += chunk
    finally:
        writer.close()
    return out


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (b"PING\r\n", b"+PONG\r\n"),  # inline, as telnet and redis-benchmark send
        (b"ECHO  hi \r\nPING\n", b"$2\r\nhi\r\n+PONG\r\n"),
        (b"AUTH nope\r\n", b"-ERR AUTH <password> called without any password configured"),
        (b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"+PONG\r\n$-1\r\n"),
        (b"*1\r\n$4\r\nPI", b""),  # truncated, then the client goes: nothing to answer
        (b"*2\r\n:1\r\n:2\r\n", b"-ERR Protocol error: expected an array of bulk strings\r\n"),
        (b"*1\r\n$-5x\r\n", b"-ERR Protocol error"),
    ],
)
async def test_raw_input(serve: Serve, data: bytes, reply: bytes) -> None:
    _, server = await serve()
    assert (await raw(server, data)).startswith(reply)


async def test_a_huge_declared_length_is_refused_without_buffering_it(serve: Serve) -> None:
    _, server = await serve(resp_max_bytes=4096)
    got = await raw(server, b"*1\r\n$999999999\r\n" + b"x" * 10_000)
    assert got.startswith(b"-ERR Protocol error: request larger than 4096 bytes")


async def test_binary_garbage_and_a_flood_of_pipelined_commands(serve: Serve) -> None:
    node, server = await serve()
    got = await raw(server, bytes(range(256)) * 4)
    assert got == b"" or got.startswith(b"-")  # inline garbage: errors, never a crash
    n = 5000
    flood = b"".join(b"*3\r\n$3\r\nSET\r\n$2\r\nk%d\r\n$1\r\nv\r\n" % (i % 10) for i in range(n))
    assert await raw(server, flood) == b"+OK\r\n" * n
    assert len(node.store) == 10
    client = aioredis.Redis(port=server.port)
    assert await client.ping() is True  # still serving
    await client.aclose()


async def test_a_client_that_never_reads_does_not_stall_others(serve: Serve) -> None:
    _, server = await serve()
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    big = b"*2\r\n$4\r\nECHO\r\n$200\r\n" + b"x" * 200 + b"\r\n"
    for _ in range(200):
        writer.write(big * 100)  # 20,000 replies it never reads
    other = aioredis.Redis(port=server.port)
    assert await asyncio.wait_for(other.ping(), 5) is True
    await other.aclose()
    writer.transport.abort()
