"""The line protocol over real loopback sockets (port 0): commands, pipelining, bad input, idle
clients, dropped connections, many clients, transactions under concurrency, flow control, and the
wiring into the node's app.

The scenarios are plain coroutines over an `Env`; the async tests run them on pytest-asyncio's
loop, and `test_scenario_on_uvloop` runs the same ones on uvloop, the loop the node runs on.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest
import uvloop
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.api.line.server import LineConnection, LineServer, start_line_server
from cluster.api.ports import Writes
from cluster.app import Node, build_app
from cluster.config import Config
from cluster.core.clock import FakeClock
from cluster.core.kv import Batch
from loadtest import procs
from loadtest.procs import free_port

OK = {"status": "Ok"}


def result(value: str) -> dict[str, str]:
    return {"status": "Ok", "result": value}


class Client:
    """A line-protocol client over asyncio streams: send lines, read JSON replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, *lines: str | bytes) -> None:
        data = b"".join((x.encode() if isinstance(x, str) else x) + b"\n" for x in lines)
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        assert line.endswith(b"\n"), f"connection closed: {line!r}"
        out: dict[str, Any] = orjson.loads(line)
        return out

    async def replies(self, n: int) -> list[dict[str, Any]]:
        return [await self.reply() for _ in range(n)]

    async def call(self, line: str | bytes) -> dict[str, Any]:
        await self.send(line)
        return await self.reply()

    async def at_eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 5) == b""

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    def reset(self) -> None:
        """Drop the connection abruptly (an RST, as when a client process dies)."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


@dataclass
class Env:
    node: Node
    server: LineServer
    clients: list[Client] = field(default_factory=list)

    async def connect(self) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        client = Client(reader, writer)
        self.clients.append(client)
        return client

    def connection(self) -> LineConnection:
        """The server side of the only open connection."""
        (conn,) = self.server.connections
        return conn


class GatedNode(Node):
    """A fake mesh: `replicate` records the batch and returns only when `gate` is set (or raises
    when `fail` is set), as a sync-mode write waiting for its peers would."""

    def __init__(self, config: Config, clock: FakeClock) -> None:
        super().__init__(config, clock=clock)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.fail = False
        self.batches: list[Batch] = []

    def has_peers(self) -> bool:
        return True

    async def replicate(self, batch: Batch) -> tuple[int, int]:
        self.batches.append(batch)
        self.entered.set()
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("replication exploded")
        return 3, 3


def _writes(node: Node) -> Writes:
    """A GatedNode stands in for the mesh; any other node replicates as wired."""
    return node if isinstance(node, GatedNode) else node.replicator


@asynccontextmanager
async def serving(node: Node | None = None, **overrides: Any) -> AsyncIterator[Env]:
    node = node if node is not None else Node(Config.for_tests(**overrides), clock=FakeClock())
    server = await start_line_server(node.make_line_server(_writes(node)), "127.0.0.1", 0)
    env = Env(node, server)
    try:
        yield env
    finally:
        for client in env.clients:
            await client.close()
        await server.close(grace=1.0)
        if node.db is not None:
            await node.db.close()


async def stored(node: Node, key: str) -> str | None:
    """What the node reads for `key` (from its store, or the database in database mode)."""
    entry = await node.data.get(key)
    return None if entry is None else entry.value


def count(node: Node, status: str) -> float:
    value = node.metrics.registry.get_sample_value("line_command_count_total", {"status": status})
    return value or 0.0


# --- scenarios (run on both loops) ---------------------------------------------------------------

CONVERSATION: list[tuple[str | bytes, dict[str, Any]]] = [
    ("PUT a 1", OK),
    ("GET a", result("1")),
    ("PUT   a    3 * 3 = 9 ", OK),
    ("GET a", result("3 * 3 = 9")),
    (b"put b crlf\r", OK),
    ("gEt b", result("crlf")),
    ("PUT u \u00e9t\u00e9 \u2603", OK),
    ("GET u", result("\u00e9t\u00e9 \u2603")),
    ("DEL a", OK),
    ("GET a", {"status": "Error", "mesg": "no such key: a"}),
    ("DEL a", OK),  # missing: still Ok
    ("del never-existed", OK),
    (
        "FROB x",
        {
            "status": "Error",
            "mesg": "unknown command 'FROB': expected PUT key value, "
            "GET key, DEL key, START, COMMIT or ROLLBACK",
        },
    ),
    (
        "",
        {
            "status": "Error",
            "mesg": "empty line: expected PUT key value, GET key, DEL key, "
            "START, COMMIT or ROLLBACK",
        },
    ),
    ("PUT", {"status": "Error", "mesg": "PUT needs a key and a value: PUT key value"}),
    ("PUT a", {"status": "Error", "mesg": "PUT needs a value after the key: PUT key value"}),
    ("GET", {"status": "Error", "mesg": "GET needs a key: GET key"}),
    ("DEL", {"status": "Error", "mesg": "DEL needs a key: DEL key"}),
    (
        "GET a b",
        {"status": "Error", "mesg": "GET takes one key (keys cannot contain spaces): GET key"},
    ),
    ("START x", {"status": "Error", "mesg": "START takes no arguments"}),
    (
        "PUT " + "k" * 65 + " v",
        {"status": "Error", "mesg": "the key is 65 characters long; the limit is 64"},
    ),
    (
        "PUT k " + "v" * 257,
        {"status": "Error", "mesg": "the value is 257 characters long; the limit is 256"},
    ),
    (
        b"GET \xff",
        {"status": "Error", "mesg": "the line is not valid UTF-8 (bad byte at offset 4)"},
    ),
    ("COMMIT", {"status": "Error", "mesg": "COMMIT without START: no transaction is open"}),
    ("ROLLBACK", {"status": "Error", "mesg": "ROLLBACK without START: no transaction is open"}),
    ("START", OK),
    ("start", {"status": "Error", "mesg": "a transaction is already open: START cannot nest"}),
    ("PUT t1 one", OK),
    ("PUT t2 two", OK),
    ("DEL b", OK),
    ("GET t1", result("one")),
    ("GET b", {"status": "Error", "mesg": "no such key: b"}),
    ("COMMIT", OK),
    ("GET t2", result("two")),
    ("GET b", {"status": "Error", "mesg": "no such key: b"}),
    ("START", OK),
    ("PUT t1 changed", OK),
    ("ROLLBACK", OK),
    ("GET t1", result("one")),
]


async def scenario_every_command(env: Env) -> None:
    """Each command's success and failure, one at a time, on one connection that stays usable."""
    client = await env.connect()
    for line, expected in CONVERSATION:
        assert await client.call(line) == expected, line
    assert await stored(env.node, "t1") == "one"
    assert await stored(env.node, "b") is None
    errors = sum(1 for _, e in CONVERSATION if e["status"] == "Error")
    assert count(env.node, "error") == errors
    assert count(env.node, "ok") == len(CONVERSATION) - errors


async def scenario_pipelined_conversation(env: Env) -> None:
    """The same conversation sent in one write: the same replies, in order."""
    client = await env.connect()
    await client.send(*(line for line, _ in CONVERSATION))
    assert await client.replies(len(CONVERSATION)) == [e for _, e in CONVERSATION]


async def scenario_pipelining_1000(env: Env) -> None:
    client = await env.connect()
    rng = random.Random(7)
    model: dict[str, str] = {}
    lines: list[str] = []
    expected: list[dict[str, Any]] = []
    for i in range(1000):
        key = f"k{rng.randrange(20)}"
        op = rng.choice(("PUT", "GET", "DEL"))
        if op == "PUT":
            model[key] = f"v{i}"
            lines.append(f"PUT {key} v{i}")
            expected.append(OK)
        elif op == "DEL":
            model.pop(key, None)
            lines.append(f"DEL {key}")
            expected.append(OK)
        else:
            lines.append(f"GET {key}")
            expected.append(
                result(model[key])
                if key in model
                else {"status": "Error", "mesg": f"no such key: {key}"}
            )
    await client.send(*lines)
    assert await client.replies(1000) == expected


async def scenario_overlong_line(env: Env) -> None:
    """A 3 MiB line gets one Error; the next command on the same connection works."""
    client = await env.connect()
    await client.call("PUT x 1")
    client.writer.write(b"PUT big " + b"x" * (3 << 20) + b"\nGET x\n")
    await client.writer.drain()
    big = await client.reply()
    assert big == {
        "status": "Error",
        "mesg": f"the line is longer than {env.node.config.line_max_bytes} bytes; "
        "skipped to the next newline",
    }
    assert await client.reply() == result("1")
    assert len(env.connection().framer.partial) == 0


async def scenario_invalid_utf8(env: Env) -> None:
    client = await env.connect()
    await client.send(b"\xc3\x28", b"PUT k \xe2\x82", b"PUT \xff v", b"PUT k fine")
    replies = await client.replies(4)
    assert [r["status"] for r in replies] == ["Error", "Error", "Error", "Ok"]
    assert all("not valid UTF-8" in r["mesg"] for r in replies[:3])
    assert await stored(env.node, "k") == "fine"


async def scenario_concurrent_connections(env: Env) -> None:
    """300 clients at once, each writing and reading its own keys."""

    async def one(i: int) -> None:
        client = await env.connect()
        await client.send(f"PUT c{i} v{i}", f"GET c{i}", "START", f"PUT d{i} {i}", "COMMIT")
        assert await client.replies(5) == [OK, result(f"v{i}"), OK, OK, OK]
        assert await client.call(f"GET d{i}") == result(str(i))

    await asyncio.gather(*(one(i) for i in range(300)))
    assert await env.node.data.count() == 600
    assert len(env.server.connections) == 300


async def scenario_constant_sum(env: Env) -> None:
    """Writers move amounts between the keys of a pair in transactions; readers read every key in
    one pipelined write and never see a pair (or the total) off its constant sum.

    Why a reader's GETs form a snapshot: they arrive in one segment, so the server runs them all
    inside one `data_received` with no await between them, and a COMMIT (another connection's)
    applies all its writes inside one call with no await either: it lands wholly before or after.
    Why the writers' own reads are consistent: START and both GETs also go in one write.
    """
    pairs = [(f"p{i}a", f"p{i}b") for i in range(4)]
    keys = [k for pair in pairs for k in pair]
    total = 100
    setup = await env.connect()
    await setup.send(*(f"PUT {a} {total}" for a, _ in pairs), *(f"PUT {b} 0" for _, b in pairs))
    assert await setup.replies(len(keys)) == [OK] * len(keys)
    done = asyncio.Event()
    snapshots = 0

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        client = await env.connect()
        for _ in range(150):
            a, b = rng.choice(pairs)
            await client.send("START", f"GET {a}", f"GET {b}")
            start, ra, rb = await client.replies(3)
            assert start == OK
            va, vb = int(ra["result"]), int(rb["result"])
            move = rng.randint(-vb, va)
            await client.send(f"PUT {a} {va - move}", f"PUT {b} {vb + move}", f"GET {a}", "COMMIT")
            assert await client.replies(4) == [OK, OK, result(str(va - move)), OK]

    async def reader() -> None:
        nonlocal snapshots
        client = await env.connect()
        while not done.is_set():
            await client.send(*(f"GET {k}" for k in keys))
            values = {
                k: int(r["result"])
                for k, r in zip(keys, await client.replies(len(keys)), strict=True)
            }
            for a, b in pairs:
                assert values[a] + values[b] == total, values
            snapshots += 1

    async def writers() -> None:
        await asyncio.gather(*(writer(seed) for seed in range(8)))
        done.set()

    await asyncio.gather(writers(), *(reader() for _ in range(4)))
    assert snapshots > 0
    final = [await stored(env.node, k) for k in keys]
    assert sum(int(v or 0) for v in final) == total * len(pairs)


async def scenario_dropped_connection_rolls_back(env: Env) -> None:
    client = await env.connect()
    await client.send("START", "PUT lost 1", "DEL kept")
    assert await client.replies(3) == [OK, OK, OK]
    session = env.connection().session
    assert session.in_transaction
    await client.close()
    await asyncio.wait_for(env.server.all_closed.wait(), 5)
    assert not session.in_transaction
    assert session.txn is None
    other = await env.connect()
    assert await other.call("GET lost") == {"status": "Error", "mesg": "no such key: lost"}
    assert await other.call("COMMIT") == {
        "status": "Error",
        "mesg": "COMMIT without START: no transaction is open",
    }


async def scenario_half_close(env: Env) -> None:
    """A client that sends its commands and shuts its side down still gets every reply, the
    unterminated last line included, then the server closes."""
    client = await env.connect()
    client.writer.write(b"PUT h 1\nGET h\nDEL h\nGET h")
    client.writer.write_eof()
    replies = await client.replies(4)
    assert replies[:3] == [OK, result("1"), OK]
    assert replies[3]["status"] == "Error"
    assert await client.at_eof()


SCENARIOS: list[Callable[[Env], Awaitable[None]]] = [
    scenario_every_command,
    scenario_pipelined_conversation,
    scenario_pipelining_1000,
    scenario_overlong_line,
    scenario_invalid_utf8,
    scenario_concurrent_connections,
    scenario_constant_sum,
    scenario_dropped_connection_rolls_back,
    scenario_half_close,
]


# sync: every write's reply waits for `await node.replicate` in the drain task; async: the
# connection runs replication's first step inline and only falls back to the task if it suspends.
WRITE_MODES = pytest.mark.parametrize("write_mode", ["sync", "async"])
BY_NAME = pytest.mark.parametrize(
    "scenario", SCENARIOS, ids=lambda s: s.__name__.removeprefix("scenario_")
)


@WRITE_MODES
@BY_NAME
async def test_scenario(scenario: Callable[[Env], Awaitable[None]], write_mode: str) -> None:
    async with serving(write_mode=write_mode) as env:
        await scenario(env)


@BY_NAME
async def test_scenario_over_postgresql(
    scenario: Callable[[Env], Awaitable[None]], postgres: procs.Postgres
) -> None:
    """The same scenarios in database mode: every command answered by PostgreSQL."""
    conn = await asyncpg.connect(postgres.url)
    await conn.execute("DROP TABLE IF EXISTS kv_entries, kv_clear")
    await conn.close()
    async with serving(store=postgres.url) as env:
        await scenario(env)


@WRITE_MODES
@BY_NAME
def test_scenario_on_uvloop(scenario: Callable[[Env], Awaitable[None]], write_mode: str) -> None:
    async def main() -> None:
        async with serving(write_mode=write_mode) as env:
            await scenario(env)

    uvloop.run(main())


# --- bad input and limits ------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1 << 20, 4096, 1000])
async def test_overlong_line_in_pieces_keeps_memory_bounded(chunk: int) -> None:
    """Sent in pieces and without a newline for a while: answered once the limit is crossed,
    before the line ends, and the server never holds more than the limit."""
    async with serving(line_max_bytes=64 * 1024) as env:
        client = await env.connect()
        await client.send("PUT x 1", "START")
        assert await client.replies(2) == [OK, OK]
        conn = env.connection()
        sent = 0
        client.writer.write(b"PUT y ")
        while sent < 256 * 1024:
            client.writer.write(b"y" * chunk)
            await client.writer.drain()
            sent += chunk
            assert len(conn.framer.partial) <= 64 * 1024
        error = await client.reply()  # before the newline was sent
        assert error["status"] == "Error"
        assert "longer than 65536 bytes" in error["mesg"]
        await client.send(b"yyyy still the same line", "GET x", "COMMIT")
        assert await client.reply() == result("1")
        commit = await client.reply()  # the over-long line doomed the open transaction
        assert commit["status"] == "Error"
        assert "nothing was applied" in commit["mesg"]
        assert await stored(env.node, "y") is None


async def test_line_exactly_at_the_limit_is_accepted() -> None:
    async with serving(line_max_bytes=64) as env:
        client = await env.connect()
        line = "PUT k " + "v" * 58
        assert len(line) == 64
        assert await client.call(line) == OK
        over = await client.call(line + "v")
        assert over["status"] == "Error"
        assert await client.call("GET k") == result("v" * 58)


async def test_transaction_over_the_write_limit_is_aborted() -> None:
    async with serving(txn_max_writes=10) as env:
        client = await env.connect()
        await client.send("START", *(f"PUT w{i} {i}" for i in range(12)), "COMMIT", "GET w0")
        replies = await client.replies(15)
        assert replies[:11] == [OK] * 11
        assert replies[11] == {
            "status": "Error",
            "mesg": "a transaction may buffer at most 10 writes; it was aborted and its writes "
            "discarded",
        }
        assert replies[12]["status"] == "Error"  # later writes do not apply one by one
        assert replies[13] == {
            "status": "Error",
            "mesg": "the transaction was aborted (more than 10 writes); nothing was applied",
        }
        assert replies[14] == {"status": "Error", "mesg": "no such key: w0"}


async def test_idle_client_is_told_and_closed() -> None:
    async with serving(line_idle_timeout=0.2) as env:
        quiet = await env.connect()
        busy = await env.connect()
        await busy.send("START", "PUT p 1")
        assert await busy.replies(2) == [OK, OK]
        assert await quiet.reply() == {
            "status": "Error",
            "mesg": "no command for 0.2 seconds; closing the connection",
        }
        assert await quiet.at_eof()
        assert (await busy.reply())["status"] == "Error"  # idle too, a bit later
        assert await busy.at_eof()
        await asyncio.wait_for(env.server.all_closed.wait(), 5)
        assert await stored(env.node, "p") is None  # its transaction was rolled back


async def test_activity_postpones_the_idle_timeout() -> None:
    async with serving(line_idle_timeout=0.5) as env:
        client = await env.connect()
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < 1.0:  # twice the timeout, talking all along
            assert await client.call("GET nothing") == {
                "status": "Error",
                "mesg": "no such key: nothing",
            }
            await asyncio.sleep(0.05)
        closing = await client.reply()
        assert "no command for 0.5 seconds" in closing["mesg"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
            st.sampled_from([b"START", b"COMMIT", b"ROLLBACK", b"PUT a 1", b"GET a", b"DEL a"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_arbitrary_lines_over_a_socket_get_one_reply_each(lines: list[bytes]) -> None:
    async def main() -> None:
        async with serving() as env:
            client = await env.connect()
            await client.send(*lines, "GET sentinel-key")
            replies = await client.replies(len(lines) + 1)
            assert all(r["status"] in ("Ok", "Error") for r in replies)
            assert replies[-1] == {"status": "Error", "mesg": "no such key: sentinel-key"}
            assert len(env.server.connections) == 1  # still connected

    uvloop.run(main())


# --- ordering with replication -------------------------------------------------------------------


@WRITE_MODES
async def test_replies_wait_for_replication_and_stay_in_order(write_mode: str) -> None:
    node = GatedNode(Config.for_tests(write_mode=write_mode), FakeClock())
    async with serving(node) as env:
        client = await env.connect()
        await client.send("GET before", "PUT a 1", "GET a", "START", "PUT b 2", "COMMIT", "GET b")
        assert await client.reply() == {"status": "Error", "mesg": "no such key: before"}
        await asyncio.wait_for(node.entered.wait(), 5)
        assert await stored(node, "a") == "1"  # applied here, not yet acknowledged
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.reader.readline(), 0.05)
        assert len(env.connection().backlog) == 5  # the read behind the write waits too
        node.gate.set()
        assert await client.replies(6) == [OK, result("1"), OK, OK, OK, result("2")]
        assert [[m.key for m in b.mutations] for b in node.batches] == [["a"], ["b"]]


@WRITE_MODES
async def test_replication_failure_answers_an_error_and_the_connection_goes_on(
    write_mode: str,
) -> None:
    node = GatedNode(Config.for_tests(write_mode=write_mode), FakeClock())
    node.fail = True
    node.gate.set()
    async with serving(node) as env:
        client = await env.connect()
        await client.send("PUT a 1", "GET a")
        assert await client.replies(2) == [
            {"status": "Error", "mesg": "replication failed; see the node's log"},
            result("1"),  # applied locally all the same: anti-entropy carries it
        ]
        assert node.metrics.registry.get_sample_value("internal_error_count_total") == 1
        node.fail = False
        assert await client.call("PUT b 2") == OK


@WRITE_MODES
async def test_a_client_that_drops_during_replication_does_not_stop_it(write_mode: str) -> None:
    node = GatedNode(Config.for_tests(write_mode=write_mode), FakeClock())
    async with serving(node) as env:
        client = await env.connect()
        await client.send("START", "PUT a 1", "PUT b 2", "COMMIT", "PUT c 3")
        assert await client.replies(3) == [OK, OK, OK]
        await asyncio.wait_for(node.entered.wait(), 5)
        client.reset()
        await asyncio.wait_for(env.server.all_closed.wait(), 5)
        (task,) = env.server.orphans
        node.gate.set()
        await task
        assert not env.server.orphans
        assert await stored(node, "a") == "1"
        assert await stored(node, "b") == "2"
        assert await stored(node, "c") is None  # queued behind the pending write: dropped with it
        assert len(node.batches) == 1


@WRITE_MODES
async def test_a_client_that_half_closes_during_replication_gets_every_reply(
    write_mode: str,
) -> None:
    node = GatedNode(Config.for_tests(write_mode=write_mode), FakeClock())
    async with serving(node) as env:
        client = await env.connect()
        await client.send("PUT a 1", "GET a", "PUT c 3")
        await asyncio.wait_for(node.entered.wait(), 5)
        client.writer.write_eof()
        await asyncio.sleep(0)
        node.gate.set()
        assert await client.replies(3) == [OK, result("1"), OK]
        assert await client.at_eof()
        assert await stored(node, "c") == "3"


@WRITE_MODES
async def test_server_close_waits_for_pending_writes_then_closes_clients(write_mode: str) -> None:
    node = GatedNode(Config.for_tests(write_mode=write_mode), FakeClock())
    server = await start_line_server(node.make_line_server(_writes(node)), "127.0.0.1", 0)
    port = server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = Client(reader, writer)
    await client.send("PUT a 1")
    await asyncio.wait_for(node.entered.wait(), 5)
    closing = asyncio.create_task(server.close(grace=5))
    await asyncio.sleep(0)
    node.gate.set()
    assert await client.reply() == OK  # the acknowledged write is answered before closing
    assert await client.at_eof()
    await closing
    await client.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


@WRITE_MODES
async def test_server_close_cancels_replication_stuck_past_the_grace(write_mode: str) -> None:
    node = GatedNode(Config.for_tests(write_mode=write_mode), FakeClock())
    server = await start_line_server(node.make_line_server(_writes(node)), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    client = Client(reader, writer)
    await client.send("PUT a 1", "GET a")
    await asyncio.wait_for(node.entered.wait(), 5)
    (conn,) = server.connections
    task = conn.task
    assert task is not None
    await server.close(grace=0.05)  # the gate never opens
    assert task.cancelled()
    assert await client.at_eof()  # no reply for the unacknowledged write, nor behind it
    await client.close()


# --- flow control --------------------------------------------------------------------------------


async def test_a_client_that_does_not_read_is_paused_not_buffered() -> None:
    """Pipelined GETs of a large value, replies unread: the server stops reading once its write
    buffer is full, holds a bounded amount, and serves everything once the client reads."""
    async with serving() as env:
        client = await env.connect()
        value = "v" * 256
        assert await client.call(f"PUT big {value}") == OK
        n = 60_000  # about 17 MiB of replies for 0.5 MiB of requests
        sender = asyncio.create_task(client.send(*(["GET big"] * n)))
        conn = env.connection()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not conn.read_paused:
            assert loop.time() < deadline, "the server never paused reading"
            await asyncio.sleep(0.01)
        assert conn.transport is not None
        assert conn.transport.get_write_buffer_size() < 16 << 20
        expected = b'{"status":"Ok","result":"' + value.encode() + b'"}\n'
        got = await asyncio.wait_for(client.reader.readexactly(len(expected) * n), 10)
        assert got == expected * n
        await sender
        assert not conn.read_paused
        assert await client.call("GET big") == result(value)


# --- wiring and the mesh -------------------------------------------------------------------------


async def test_the_app_starts_and_stops_the_line_server() -> None:
    port = free_port()
    node = Node(Config.for_tests(tcp_port=port), clock=FakeClock())
    server = TestServer(build_app(node))
    await server.start_server()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = Client(reader, writer)
        assert await client.call("PUT wired yes") == OK
        async with TestClient(server) as http:
            resp = await http.get("/keys/wired")
            assert (await resp.json())["value"] == "yes"
            metrics = await (await http.get("/metrics")).text()
            assert 'line_command_count_total{status="ok"} 1.0' in metrics
    finally:
        await server.close()
    assert await client.at_eof()
    await client.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_commit_reaches_a_peer_whole_with_one_timestamp() -> None:
    """Two real nodes in sync mode: once COMMIT is acknowledged the peer holds every write of the
    transaction, all stamped with the commit's timestamp."""
    nodes: list[Node] = []
    clients: list[TestClient[Any, Any]] = []
    for name in ("n0", "n1"):
        node = Node(Config.for_tests(name=name, antientropy_interval=3600.0))
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(node)))
        await client.start_server()
        nodes.append(node)
        clients.append(client)
    try:
        n0, n1 = nodes
        n0.replicator.peer_up("n1", f"127.0.0.1:{clients[1].port}")
        n1.replicator.peer_up("n0", f"127.0.0.1:{clients[0].port}")
        async with serving(n0) as env:
            line = await env.connect()
            await line.send("PUT gone x", "START", "PUT a 1", "PUT b 2", "DEL gone", "COMMIT")
            assert await line.replies(6) == [OK] * 6
            entries = [n1.store.entry(k) for k in ("a", "b", "gone")]
            assert [e.value if e else "missing" for e in entries] == ["1", "2", None]
            assert len({e.ts for e in entries if e}) == 1
            assert entries[0] is not None
            assert entries[0].ts == n0.store.entry("a").ts  # type: ignore[union-attr]
    finally:
        for client in clients:
            await client.close()
