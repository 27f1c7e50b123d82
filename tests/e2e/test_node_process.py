"""`node.py` as a real process: serves the API over real HTTP, exits cleanly on signals, and
refuses a bad command line with exit status 2 and a message.

Processes are started on free loopback ports and stopped by PID (loadtest.procs).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from loadtest.procs import ROOT, NodeProc, free_port, start_node, stop

pytestmark = pytest.mark.e2e

NODE_PY = str(ROOT / "node.py")


def call(method: str, url: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def call_json(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    status, headers, raw = call(method, url, body)
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    return status, json.loads(raw)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    proc = start_node(tcp_port=0, log_dir=tmp_path)
    try:
        yield proc
    finally:
        stop(proc.proc)


def test_serves_the_api_over_http(node: NodeProc) -> None:
    base = node.url
    key = "a/b?c#d %+é😀"
    path = f"{base}/keys/{quote(key, safe='')}"
    status, body = call_json("PUT", path, {"value": "v1"})
    assert (status, body) == (200, {"key": key, "value": "v1", "ttl": None})
    assert call_json("GET", path) == (200, {"key": key, "value": "v1", "ttl": None})
    assert call("HEAD", path)[0] == 200

    assert call_json("GET", f"{base}/set?k=task&v=") == (200, {"key": "task", "value": ""})
    assert call_json("GET", f"{base}/get?k=task") == (200, {"key": "task", "value": ""})
    assert call_json("GET", f"{base}/getAll") == (200, {key: "v1", "task": ""})

    status, body = call_json("GET", f"{base}/get?k=missing")
    assert (status, body["code"]) == (404, "NOT_FOUND")
    status, body = call_json("PUT", f"{base}/keys/x", {"value": 1})
    assert (status, body["code"]) == (400, "INVALID_BODY")
    status, body = call_json("POST", f"{base}/health", {})
    assert (status, body["code"]) == (405, "METHOD_NOT_ALLOWED")

    status, health = call_json("GET", f"{base}/health")
    assert status == 200
    assert health == {"status": "ok", "name": node.name, "members": 1, "keys": 2}

    status, headers, metrics = call("GET", f"{base}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    for name in (b"request_count", b"request_latency_seconds", b"internal_error_count"):
        assert name in metrics


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_node_cleanly_and_promptly(node: NodeProc, sig: signal.Signals) -> None:
    assert call("GET", f"{node.url}/health")[0] == 200
    os.kill(node.proc.pid, sig)
    assert node.proc.wait(timeout=5) == 0
    log = node.log.read_text()
    assert "Traceback" not in log, log


def test_options_also_read_the_environment(tmp_path: Path) -> None:
    proc = start_node(tcp_port=0, log_dir=tmp_path, env={"KV_MAX_KEY_LENGTH": "3"})
    try:
        assert call_json("GET", f"{proc.url}/set?k=abc&v=1")[0] == 200
        status, body = call_json("GET", f"{proc.url}/set?k=abcd&v=1")
        assert (status, body["code"]) == (400, "KEY_TOO_LONG")
    finally:
        stop(proc.proc)


def run_node(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, NODE_PY, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--no-such-option"], {}, "unrecognized arguments: --no-such-option"),
        (["--port", "http"], {}, "--port"),
        (["--port", "70000"], {}, "--port must be 0..65535"),
        (["--write-mode", "eventually"], {}, "--write-mode"),
        (["--join", "no-port-here"], {}, "--join"),
        ([], {"KV_PORT": "eighty"}, "KV_PORT"),
    ],
    ids=["unknown", "not-a-number", "out-of-range", "bad-choice", "bad-seed", "bad-env"],
)
def test_a_bad_command_line_exits_2_with_a_message(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_node(*args, env=env)
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_help_exits_0() -> None:
    result = run_node("--help")
    assert result.returncode == 0, result
    assert "usage: node.py" in result.stdout
    assert "KV_TCP_PORT" in result.stdout


@pytest.mark.parametrize("option", ["--tcp-port", "--resp-port"])
@pytest.mark.parametrize("join", [False, True], ids=["alone", "joining"])
def test_a_taken_protocol_port_stops_the_node_at_start_with_a_message(
    option: str, join: bool
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--resp-port" if option == "--tcp-port" else "--tcp-port"
        args = [option, str(port), other, "0", "--port", str(free_port())]
        if join:  # a seed that is not there: the node would wait for it, but the port comes first
            args += ["--join", f"127.0.0.1:{free_port()}"]
        result = run_node(*args)
    assert result.returncode == 1, result
    assert "cannot start" in result.stderr
    assert "address already in use" in result.stderr.lower()
    assert "Traceback" not in result.stderr
