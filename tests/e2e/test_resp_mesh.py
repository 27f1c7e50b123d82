"""RESP as users will meet it: a 3-node mesh of node.py processes behind nginx's stream proxy,
driven by redis-py (sync, RESP3 and RESP2) and by Debian's redis-cli.

Processes run on free loopback ports and are stopped by PID (Mesh.stop) in the fixture.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis

from loadtest import mesh as meshlib
from loadtest import procs

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(procs.nginx_binary() is None, reason="nginx is not installed"),
]


@pytest.mark.parametrize("protocol", [3, 2])
def test_writes_through_the_balancer_are_read_on_every_node(
    running_mesh: meshlib.Mesh, protocol: int
) -> None:
    plan = running_mesh.plan
    lb = redis.Redis(port=plan.resp_port, protocol=protocol, decode_responses=True)
    assert lb.set("greeting", "hello") is True  # sync mode: on every node once acknowledged
    with lb.pipeline(transaction=True) as p:
        p.set("a", "1").set("b", "2").get("greeting")
        assert p.execute() == [True, True, "hello"]
    for spec in plan.nodes:
        direct = redis.Redis(port=spec.resp_port, protocol=protocol, decode_responses=True)
        assert direct.mget("greeting", "a", "b") == ["hello", "1", "2"], spec.name
        assert direct.info("mesh")["alive_members"] == 3
        direct.close()
    lb.close()


def test_redis_cli(running_mesh: meshlib.Mesh) -> None:
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli (Debian's redis-tools) is not installed"
    port = str(running_mesh.plan.resp_port)

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [cli, "-p", port, *args], input=stdin, capture_output=True, text=True, timeout=20
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run("-3", "SET", "k1", "v1").strip() == "OK"
    hello = run("-3", "HELLO", "3").splitlines()  # the RESP3 map, one pair a line
    assert "server redis" in hello
    assert "proto 3" in hello
    for i in range(20):
        run("SET", f"scan:{i:02d}", str(i))
    keys = run("--scan", "--pattern", "scan:*").split()
    assert sorted(keys) == [f"scan:{i:02d}" for i in range(20)]
    script = "MULTI\nSET t1 x\nSET t2 y\nEXEC\nMGET t1 t2\n"
    out = run(stdin=script).split()
    assert out[:3] == ["OK", "QUEUED", "QUEUED"]
    assert out[-2:] == ["x", "y"]
    assert "ERR unknown command" in run("NOSUCH")  # an error, and the CLI still exits 0
