"""`kvmesh`: the operator's command, a client of a node's (or the balancer's) HTTP API.

    kvmesh members                      the member table, like `consul members`
    kvmesh status [--json]              the dashboard's figures as text (GET /cluster/status)
    kvmesh join SEED [SEED ...]         POST /cluster/join
    kvmesh leave                        POST /cluster/leave
    kvmesh remove NAME                  POST /cluster/remove
    kvmesh get KEY | set KEY VALUE [--ttl S] | del KEY | keys [--filter P] [--limit N]

Every command takes `--url` (default `$KVMESH_URL`, else http://127.0.0.1:8080) and `--token`
(`$KVMESH_TOKEN`, for the admin calls). Errors print the contract's `CODE: message` on stderr
and exit with a code per kind: 1 a refused request (4xx), 2 a usage error (click's), 3 the node
failed (5xx), 4 no answer at all. Not part of a node: it imports nothing of the package's layers.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

import click

EXIT_REFUSED = 1
EXIT_NODE_FAILED = 3
EXIT_UNREACHABLE = 4


class Failed(click.ClickException):
    """A request that did not succeed: the node's `CODE: message` on stderr."""

    def show(self, file: Any = None) -> None:
        click.echo(self.message, err=True)


class Refused(Failed):
    exit_code = EXIT_REFUSED


class NodeFailed(Failed):
    exit_code = EXIT_NODE_FAILED


class Unreachable(Failed):
    exit_code = EXIT_UNREACHABLE


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)
                text = f"{err['code']}: {err['error']}"
            except (ValueError, KeyError, TypeError):
                text = f"HTTP {exc.code}: {raw[:200]!r}"
            raise (NodeFailed if exc.code >= 500 else Refused)(text) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"UNREACHABLE: {self.url}: {reason}") from None
        return json.loads(raw) if raw else None


pass_client = click.make_pass_decorator(Client)


@click.group()
@click.option(
    "--url",
    envvar="KVMESH_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="a node's or the balancer's HTTP address [$KVMESH_URL]",
)
@click.option("--token", envvar="KVMESH_TOKEN", help="the admin token [$KVMESH_TOKEN]")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="seconds")
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None, timeout: float) -> None:
    """Operate a kvmesh mesh through a node's HTTP API."""
    ctx.obj = Client(url, token, timeout)


def _table(rows: list[list[str]]) -> None:
    """Aligned columns, the first row the header; a shorter row's last cell spans the rest."""
    n = len(rows[0])
    widths = [
        max(len(row[i]) for row in rows if i < len(row) - 1 or len(row) == n) for i in range(n)
    ]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())


@main.command()
@pass_client
def members(client: Client) -> None:
    """The members as this node sees them."""
    body = client.call("GET", "/cluster/members")
    rows = [["Node", "Address", "Status", "Incarnation"]]
    for m in body["members"]:
        me = " (this node)" if m["name"] == body["self"] else ""
        rows.append([m["name"] + me, m["address"], m["state"], str(m["incarnation"])])
    _table(rows)


def _since(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.1f}m" if seconds < 3600 else f"{seconds / 3600:.1f}h"


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _num(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _node_row(n: dict[str, Any]) -> list[str]:
    if "error" in n:
        error = str(n["error"])
        return [n["name"], "unreachable: " + (error if len(error) <= 60 else error[:57] + "...")]
    peers = n["peers"]
    failing = [p["name"] for p in peers if p["failing"]]
    hints = str(sum(p["queued"] for p in peers))
    if failing:
        hints += f" (failing: {','.join(failing)})"
    r = n["last_repair"]
    repair = "none"
    if r is not None:
        repair = f"{_clock(r['at'])} with {r['peer']}: {r['leaves']} leaves, "
        repair += f"sent {r['sent']}, got {r['received']}, applied {r['applied']}"
    return [
        n["name"] if n["ready"] else f"{n['name']} (joining)",
        str(n["keys"]),
        _num(n["load"]["requests_per_s"], 1),
        _num(n["load"]["p99_ms"], 2),
        hints,
        str(max((p["lag_ms"] for p in peers), default=0)),
        str(n["refused_for_skew"]),
        str(n["hlc_ahead_ms"]),
        repair,
    ]


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the raw JSON (for scripts)")
@pass_client
def status(client: Client, as_json: bool) -> None:
    """The dashboard's figures (members, nodes, events) as text."""
    body = client.call("GET", "/cluster/status")
    if as_json:
        click.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    me = body["served_by"]
    click.echo(f"mesh as seen by {me}\n")
    rows = [["Node", "Address", "Status", "Incarnation", "Since"]]
    for m in body["members"]:
        name = m["name"] + (" (this node)" if m["name"] == me else "")
        rows.append([name, m["address"], m["state"], str(m["incarnation"]), _since(m["for_s"])])
    _table(rows)
    click.echo()
    header = ["Node", "Keys", "Req/s", "p99 ms", "Hints", "Lag ms", "Skew refused"]
    _table([[*header, "HLC ahead ms", "Last repair"], *map(_node_row, body["nodes"])])
    click.echo("\nEvents (last 15 min):")
    for e in body["events"]:
        detail = f", {e['detail']}" if e["detail"] else ""
        click.echo(
            f"{_clock(e['at'])}  {e['kind']:9}  {e['name']}  incarnation {e['incarnation']}{detail}"
        )
    if not body["events"]:
        click.echo("(none)")


@main.command()
@click.argument("seeds", nargs=-1, required=True)
@pass_client
def join(client: Client, seeds: tuple[str, ...]) -> None:
    """Join the mesh of SEEDS (host:port of its nodes)."""
    body = client.call("POST", "/cluster/join", {"seeds": list(seeds)})
    click.echo(f"joined: {len(body['members'])} members")


@main.command()
@pass_client
def leave(client: Client) -> None:
    """Leave the mesh (the node goes on as a mesh of one)."""
    client.call("POST", "/cluster/leave")
    click.echo("left")


@main.command()
@click.argument("name")
@pass_client
def remove(client: Client, name: str) -> None:
    """Remove member NAME from the mesh, everywhere."""
    client.call("POST", "/cluster/remove", {"name": name})
    click.echo(f"removed: {name}")


def _key_path(key: str) -> str:
    return "/keys/" + quote(key, safe="")


@main.command()
@click.argument("key")
@pass_client
def get(client: Client, key: str) -> None:
    """Print KEY's value."""
    click.echo(client.call("GET", _key_path(key))["value"])


@main.command(name="set")
@click.argument("key")
@click.argument("value")
@click.option("--ttl", type=float, help="seconds until the key expires")
@pass_client
def set_(client: Client, key: str, value: str, ttl: float | None) -> None:
    """Store VALUE under KEY."""
    body: dict[str, Any] = {"value": value}
    if ttl is not None:
        body["ttl"] = ttl
    client.call("PUT", _key_path(key), body)
    click.echo("OK")


@main.command(name="del")
@click.argument("key")
@pass_client
def del_(client: Client, key: str) -> None:
    """Delete KEY."""
    client.call("DELETE", _key_path(key))
    click.echo("deleted")


@main.command()
@click.option("--filter", "pattern", help="wildcard pattern: * and $ any run, ? one character")
@click.option("--limit", type=int, default=1000, show_default=True, help="keys a page")
@pass_client
def keys(client: Client, pattern: str | None, limit: int) -> None:
    """List keys (and values), page by page."""
    cursor: str | None = None
    while True:
        query: dict[str, str | int] = {"limit": limit}
        if pattern:
            query["filter"] = pattern
        if cursor:
            query["cursor"] = cursor
        body = client.call("GET", "/keys?" + urlencode(query))
        for key, value in body["data"].items():
            click.echo(f"{key}\t{value}")
        cursor = body["next_cursor"]
        if cursor is None:
            return


if __name__ == "__main__":
    sys.exit(main())
