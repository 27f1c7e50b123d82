"""The database backend (`cluster.storage.postgres`) against a real PostgreSQL server.

The same promises as the memory store's, checked on the rows: last writer wins by version
whatever the order, clear and TTL keep their meaning, listings page by key, and a database that
goes away is an error that ends when it returns.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.core.patterns import compile_glob
from cluster.core.store import Mutation, Store
from cluster.errors import StorageUnavailable
from cluster.storage.postgres import PgStore, describe
from loadtest import procs
from tests.integration.inproc import Running, Start, until

NOW = 1_800_000_000.0


@pytest.fixture
async def db(postgres: procs.Postgres) -> AsyncIterator[PgStore]:
    store = PgStore(postgres.url, pool_size=4)
    await store.open()
    await _empty(store)
    yield store
    await store.close()


async def _empty(store: PgStore) -> None:
    await store._execute("TRUNCATE kv_entries")
    await store._execute("UPDATE kv_clear SET ts = 0, node = '' WHERE id = 1")


def m(
    key: str, value: str | None, ts: int, node: str = "n1", expires: float | None = None
) -> Mutation:
    return Mutation(key, value, ts, node, expires)


async def live(store: PgStore) -> dict[str, str]:
    page, after = await store.scan(None, 10_000, NOW)
    assert after is None
    return {k: e.value for k, e in page if e.value is not None}


WRITES = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.none() | st.text("xyz", max_size=3),
        st.integers(1, 30),
        st.sampled_from(["n1", "n2"]),
    ),
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=WRITES, seed=st.integers(0, 1000))
async def test_last_writer_wins_whatever_the_order_as_in_memory(
    db: PgStore, writes: list[tuple[str, str | None, int, str]], seed: int
) -> None:
    await _empty(db)
    memory = Store()
    for key, value, ts, node in writes:
        memory.apply(key, value, ts, node)
    shuffled = writes[:]
    random.Random(seed).shuffle(shuffled)
    for key, value, ts, node in shuffled:  # each write alone: statements in another order
        await db.write([m(key, value, ts, node)])
    expected = {k: e.value for k, e in memory.stored_items() if e.value is not None}
    assert await live(db) == expected
    for key in "abcd":
        got = await db.get(key, NOW)
        assert (got.value if got else None) == expected.get(key)


async def test_two_nodes_writing_the_same_keys_at_once_read_the_same_last_writer(
    db: PgStore, postgres: procs.Postgres
) -> None:
    other = PgStore(postgres.url, pool_size=4)
    await other.open()
    try:
        rng = random.Random(7)
        writes = [(f"k{rng.randrange(20)}", rng.randrange(1, 10_000)) for _ in range(400)]
        await asyncio.gather(
            *(
                (db if i % 2 else other).write([m(k, f"{ts}", ts, "n1" if i % 2 else "n2")])
                for i, (k, ts) in enumerate(writes)
            )
        )
        best: dict[str, tuple[int, str]] = {}
        for i, (k, ts) in enumerate(writes):
            best[k] = max(best.get(k, (0, "")), (ts, "n1" if i % 2 else "n2"))
        for k, (ts, node) in best.items():
            for reader in (db, other):
                entry = await reader.get(k, NOW)
                assert entry is not None
                assert (entry.ts, entry.node, entry.value) == (ts, node, f"{ts}")
    finally:
        await other.close()


async def test_a_clear_hides_everything_older_at_once_and_a_later_write_survives(
    db: PgStore,
) -> None:
    await db.write([m("old", "v", 10), m("older", "v", 5)])
    await db.clear(20, "n1")
    await db.write([m("late-but-stamped-before", "v", 15)])  # refused: at or below the clear
    await db.write([m("after", "v", 25)])
    assert await live(db) == {"after": "v"}
    assert await db.get("old", NOW) is None
    assert await db.purge_cleared() == 2  # the covered rows go afterwards
    await db.clear(15, "n1")  # an older clear changes nothing
    assert await live(db) == {"after": "v"}


async def test_a_delete_is_a_tombstone_an_older_write_cannot_undo(db: PgStore) -> None:
    await db.write([m("k", "v", 10)])
    await db.write([m("k", None, 20)])
    await db.write([m("k", "resurrected?", 15)])  # a late, older write
    assert await db.get("k", NOW) is None
    assert await db.purge_tombstones(below_ts=21) == 1
    assert await db.count(NOW) == 0


async def test_expired_values_are_never_read_and_become_tombstones(db: PgStore) -> None:
    await db.write([m("gone", "v", 10, expires=NOW - 1), m("stays", "v", 10, expires=NOW + 60)])
    assert await db.get("gone", NOW) is None
    assert (await db.get("stays", NOW)) is not None
    assert await db.count(NOW) == 1
    assert await db.reclaim_expired(NOW) == 1
    await db.write([m("gone", "older write", 5)])  # the tombstone keeps the expired version
    assert await db.get("gone", NOW) is None


async def test_listings_page_by_key_in_bounded_pages_with_a_pattern(db: PgStore) -> None:
    keys = [f"user:{i:05d}" for i in range(3000)] + [f"other:{i}" for i in range(500)]
    await db.write([m(k, "v", 10 + i) for i, k in enumerate(keys)])
    for pattern, expected in (
        (None, sorted(keys)),
        (compile_glob("user:*"), sorted(k for k in keys if k.startswith("user:"))),
        (
            compile_glob("*:1?"),
            sorted(k for k in keys if k.split(":")[1] in {f"1{d}" for d in "0123456789"}),
        ),
    ):
        got: list[str] = []
        after = None
        while True:
            page, after = await db.scan(after, 700, NOW, pattern)
            got += [k for k, _ in page]
            if after is None:
                break
        assert got == expected


async def test_an_unreachable_database_is_an_error_naming_it_and_ends_when_it_returns(
    postgres: procs.Postgres,
) -> None:
    store = PgStore(postgres.url, pool_size=2, timeout=2.0)
    await store.open()
    try:
        await store.write([m("k", "v", 10)])
        postgres.stop("immediate")
        try:
            with pytest.raises(StorageUnavailable) as refused:
                await store.get("k", NOW)
            assert describe(postgres.url) in str(refused.value)
            assert "kvmesh@" not in str(refused.value)
            with pytest.raises(StorageUnavailable):
                await store.write([m("k2", "v", 11)])
        finally:
            postgres.start()
        entry = await store.get("k", NOW)  # the pool reconnects by itself
        assert entry is not None
        assert entry.value == "v"
    finally:
        await store.close()


def test_the_schema_uses_only_statements_both_databases_document() -> None:
    """A reminder with teeth: the statements this backend sends, by their first words."""
    from cluster.storage import postgres as pg

    statements = [*pg.SCHEMA, pg.UPSERT, pg.GET, pg.SCAN, pg.SCAN_PREFIX, pg.COUNT, pg.CLEAR,
                  pg.CLEARED_BATCH, pg.EXPIRED_BATCH, pg.TOMBSTONES_BATCH]  # fmt: skip
    verbs = {s.split()[0].upper() for s in statements}
    assert verbs <= {"CREATE", "INSERT", "SELECT", "UPDATE", "DELETE"}
    assert not any("DECLARE" in s.upper() or "CURSOR" in s.upper() for s in statements)
    assert asyncpg.__version__


# --- whole nodes in database mode ---------------------------------------------------------------


async def test_two_stateless_nodes_over_one_database_serve_the_same_data_and_survive_its_outage(
    start: Start, postgres: procs.Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await asyncpg.connect(postgres.url)
    await conn.execute("DROP TABLE IF EXISTS kv_entries, kv_clear")
    await conn.close()
    a = await start("a", store=postgres.url)
    b = await start("b", store=postgres.url, join=(a.address,))

    async def both_serve() -> bool:
        return (await a.get("/health"))[0] == 200 and (await b.get("/health"))[0] == 200

    await until(both_serve)
    assert await b.states() == {"a": "alive", "b": "alive"}  # membership still gossips
    resp = await a.client.put("/keys/k", json={"value": "from a"})
    assert (resp.status, resp.headers["X-Replicas"]) == (200, "1/1")
    assert (await b.get("/keys/k"))[1]["value"] == "from a"  # written on a, read on b
    assert a.node.replicator.sent_requests == 0  # the database is the one copy: no replication

    postgres.stop("immediate")
    try:
        for node in (a, b):
            status, body = await node.get("/keys/k")
            assert (status, body["code"]) == (503, "STORAGE_UNAVAILABLE")
            assert describe(postgres.url) in body["error"]
            resp = await node.client.put("/keys/k", json={"value": "lost?"})
            assert resp.status == 503
            status, body = await node.get("/health")
            assert (status, body["code"]) == (503, "STORAGE_UNAVAILABLE")
    finally:
        postgres.start()

    async def recovered() -> bool:
        status, body = await b.get("/keys/k")
        return status == 200 and body["value"] == "from a"  # nothing acknowledged was lost

    await until(recovered)
    assert not [r for r in caplog.records if r.exc_info], "a traceback in the logs"


SCRIPT = [
    "PUT   a    3 * 3 = 9 ",
    "GET a",
    "get A",
    "DEL a",
    "GET a",
    "DEL never-there",
    "START",
    "PUT x 1",
    "GET x",
    "DEL x",
    "GET x",
    "PUT y 2",
    "COMMIT",
    "GET x",
    "GET y",
    "COMMIT",
    "START",
    "PUT z 3",
    "ROLLBACK",
    "GET z",
    "START",
    "START",
    "FROB x",
    "PUT w 4",
    "COMMIT",
    "GET w",
    "PUT",
    "GET " + "k" * 100,
]


async def _transcript(node: Running, pipelined: bool) -> list[dict[str, str]]:
    from cluster.api.line.server import start_line_server

    server = await start_line_server(node.node.make_line_server(), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        replies = []
        if pipelined:
            writer.write("".join(line + "\n" for line in SCRIPT).encode())
            replies = [orjson.loads(await reader.readline()) for _ in SCRIPT]
        else:
            for line in SCRIPT:
                writer.write(line.encode() + b"\n")
                replies.append(orjson.loads(await reader.readline()))
        return replies
    finally:
        writer.close()
        await server.close()


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-by-one", "pipelined"])
async def test_the_line_protocol_answers_the_same_over_the_database_as_in_memory(
    start: Start, postgres: procs.Postgres, pipelined: bool
) -> None:
    conn = await asyncpg.connect(postgres.url)
    await conn.execute("DROP TABLE IF EXISTS kv_entries, kv_clear")
    await conn.close()
    memory = await start("memory")
    database = await start("database", store=postgres.url)
    expected = await _transcript(memory, pipelined)
    assert await _transcript(database, pipelined) == expected
    assert expected[1] == {"status": "Ok", "result": "3 * 3 = 9"}
    assert expected[14] == {"status": "Ok", "result": "2"}  # the committed transaction
    assert (await database.get("/keys/y"))[1]["value"] == "2"  # and it is in the database
