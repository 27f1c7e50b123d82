"""Database mode as users will meet it: node.py processes started with `--store postgresql://...`
over a private PostgreSQL server (initdb into a temporary directory, its own port; removed
afterwards), joined into one mesh behind nginx as `STORE=postgres make run` starts them.

The database is stopped (`pg_ctl stop -m immediate`, as a crash) under the running mesh: every
request through the balancer answers 503 STORAGE_UNAVAILABLE (nginx passes the nodes' answer on:
loadtest.mesh makes them backup servers in database mode), no node exits or logs a traceback, and
once it is started again reads recover with every acknowledged write.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest

from cluster.storage.postgres import SCHEMA
from loadtest import mesh as meshlib
from loadtest import procs
from tests.e2e.meshes import mesh_of

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(procs.nginx_binary() is None, reason="nginx is not installed"),
    pytest.mark.skipif(
        procs.postgres_bindir() is None,
        reason="PostgreSQL is not installed (Debian package postgresql: make install-system)",
    ),
]


@pytest.fixture
def postgres() -> Iterator[procs.Postgres]:
    pg = procs.start_postgres()
    try:
        yield pg
    finally:
        procs.remove_postgres(pg)


def request(
    port: int, method: str, path: str, body: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    """(status, JSON body) of one request to 127.0.0.1:port; a body that is not JSON fails."""
    with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=10)) as c:
        data = None if body is None else json.dumps(body).encode()
        c.request(method, path, body=data)
        resp = c.getresponse()
        raw = resp.read()
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise AssertionError(f"{method} {path}: {resp.status}, not JSON: {raw[:200]!r}") from None
    assert isinstance(parsed, dict), parsed
    return resp.status, parsed


def read(port: int, key: str) -> object:
    """The value of `key` read with GET /keys/KEY (200 expected)."""
    status, body = request(port, "GET", f"/keys/{key}")
    assert status == 200, (port, key, body)
    return body["value"]


def run_sql(url: str, *statements: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def node_logs(mesh: meshlib.Mesh) -> dict[str, str]:
    return {
        spec.name: (mesh.run_dir / f"{spec.name}.log").read_text(errors="replace")
        for spec in mesh.plan.nodes
    }


def exited(mesh: meshlib.Mesh) -> list[str]:
    """The mesh's processes (nodes, nginx) that are no longer running."""
    return [n for n, c in mesh.children.items() if c.proc is None or c.proc.poll() is not None]


def test_a_mesh_over_postgresql_serves_survives_its_outage_and_recovers(
    postgres: procs.Postgres, tmp_path: Path
) -> None:
    # The schema as any first start leaves it: nodes started at once on an empty database race to
    # create it (test_nodes_started_at_once_on_an_empty_database_all_serve below).
    run_sql(postgres.url, *SCHEMA)
    plan = meshlib.free_plan(2, node_args=("--store", postgres.url, *procs.FAST_MESH_ARGS))
    with mesh_of(plan, tmp_path) as mesh:
        lb = plan.http_port
        nodes = [spec.port for spec in plan.nodes]
        deadline = time.monotonic() + 10
        while True:  # membership still gossips: one mesh of two
            _, body = request(nodes[0], "GET", "/cluster/members")
            members = body["members"]
            assert isinstance(members, list)
            if [m["state"] for m in members] == ["alive", "alive"]:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.1)

        acknowledged: dict[str, str] = {}
        for i in range(30):  # REST and the task API, through the balancer
            key, value = f"db:{i:02d}", f"value {i}"
            if i % 2:
                status, body = request(lb, "PUT", f"/keys/{key}", {"value": value})
            else:
                status, body = request(lb, "GET", f"/set?k={key}&v={quote(value)}")
            assert status == 200, body
            acknowledged[key] = value
        for port in nodes:  # every node reads the one copy
            for key, value in acknowledged.items():
                assert read(port, key) == value
            assert request(port, "GET", "/get?k=db:07") == (
                200,
                {"key": "db:07", "value": "value 7"},
            )

        postgres.stop("immediate")  # as a crash: connections cut, nothing flushed politely
        for i in range(12):
            method, path, body_in = [
                ("GET", "/keys/db:01", None),
                ("GET", "/get?k=db:02", None),
                ("PUT", f"/keys/lost:{i}", {"value": "x"}),
                ("GET", f"/set?k=lost:{i}&v=x", None),
            ][i % 4]
            status, body = request(lb, method, path, body_in)
            assert (status, body.get("code")) == (503, "STORAGE_UNAVAILABLE"), (path, body)
            assert "unreachable" in str(body["error"]), body
            assert "kvmesh@" not in str(body["error"])  # the database is named, not its user
        for port in nodes:
            status, body = request(port, "GET", "/keys/db:03")
            assert (status, body.get("code")) == (503, "STORAGE_UNAVAILABLE"), body
        assert not exited(mesh)

        postgres.start()
        deadline = time.monotonic() + 15
        while request(lb, "GET", "/keys/db:01")[0] != 200:  # the pools reconnect by themselves
            assert time.monotonic() < deadline, "reads did not recover"
            time.sleep(0.1)
        for port in (lb, *nodes):
            for key, value in acknowledged.items():
                assert read(port, key) == value
        assert request(lb, "PUT", "/keys/after", {"value": "back"})[0] == 200
        for port in nodes:
            assert read(port, "after") == "back"
        assert not exited(mesh)
    for name, log in node_logs(mesh).items():
        assert "Traceback" not in log, f"{name}:\n{log}"


def test_nodes_started_at_once_on_an_empty_database_all_serve(
    postgres: procs.Postgres, tmp_path: Path
) -> None:
    # The race, made certain: another session creates the table and commits only once both nodes
    # wait for it inside their own CREATE TABLE IF NOT EXISTS (as when `make run` starts its
    # nodes at once on a new database, which crashed 2 of 3 nodes here).
    async def race() -> None:
        creator = await asyncpg.connect(postgres.url)
        watcher = await asyncpg.connect(postgres.url)  # outside the creator's transaction, which
        try:  # would see one snapshot of pg_stat_activity
            await creator.execute("BEGIN")
            await creator.execute(SCHEMA[0])
            mesh.start_nodes()
            deadline = time.monotonic() + 10
            while await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ) < len(plan.nodes):
                assert time.monotonic() < deadline, "the nodes never waited for the schema"
                await asyncio.sleep(0.05)
            await creator.execute("COMMIT")
        finally:
            await creator.close()
            await watcher.close()

    plan = meshlib.free_plan(2, node_args=("--store", postgres.url, *procs.FAST_MESH_ARGS))
    mesh = meshlib.Mesh(plan, tmp_path, quiet=True)
    try:
        asyncio.run(race())
        mesh.wait_nodes(timeout=15)
        for spec in plan.nodes:
            assert request(spec.port, "GET", "/set?k=a&v=1")[0] == 200
    finally:
        mesh.stop()
    for name, log in node_logs(mesh).items():
        assert "Traceback" not in log, f"{name}:\n{log}"
