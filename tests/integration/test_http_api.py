"""Every HTTP route of the contract (design.md), through a real aiohttp test server on loopback.

Time is the node's FakeClock: TTLs expire when a test advances it, never by sleeping.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from yarl import URL

from cluster.app import Node
from cluster.core.clock import FakeClock
from cluster.core.store import Mutation, Version
from tests.conftest import MakeClient, MakeNode
from tests.helpers import key_url
from tests.integration.backends import (  # noqa: F401 (fixtures: every test on both backends)
    config_on_backend,
    make_node_on_backend,
    on_both_backends,
)

Client = TestClient[Any, Any]

START = 1_700_000_000.0  # FakeClock's default start
EMOJI = "😀"  # one code point, four UTF-8 bytes
HTTP_DATE = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")

# Keys with characters that mean something in a URL, in JSON or to a shell.
SPECIAL_KEYS = [
    "a/b",
    "/leading",
    "trailing/",
    "a//b",
    "a?b",
    "a#b",
    "100%",
    "%2F",
    "a&b=c",
    "a+b",
    "a b",
    " padded ",
    "a;b",
    "tab\there",
    "new\nline",
    'quote"s',
    "back\\slash",
    "ünïcödé",
    "日本語",
    EMOJI * 3,
    "../up",
    ".",
    "..",
    "~tilde",
    "*",
    "$",
]


def url(path_and_query: str) -> URL:
    """A URL sent exactly as written (already percent-encoded)."""
    return URL(path_and_query, encoded=True)


def q(path: str, **params: str) -> URL:
    """`path?params`, every parameter fully percent-encoded."""
    return url(path + "?" + urlencode(params, quote_via=quote))


async def ok(resp: ClientResponse, status: int = 200) -> Any:
    """The JSON body of a successful reply, checking its status and content type."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    assert resp.charset == "utf-8"
    return await resp.json()


async def expect_error(resp: ClientResponse, status: int, code: str) -> str:
    """Check a reply is the contract's error shape; returns the message."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    assert resp.charset == "utf-8"
    body = await resp.json()
    assert set(body) == {"error", "code"}, body
    assert body["code"] == code, body
    assert isinstance(body["error"], str)
    assert body["error"]
    return str(body["error"])


Snapshot = tuple[dict[str, str], list[Mutation], Version]


async def snapshot(client: Client, node: Node) -> Snapshot:
    """Everything a request could change: the full listing and the stored entries (in the
    node's store, or in the database)."""
    listing = await ok(await client.get("/keys"))
    assert listing["next_cursor"] is None
    if node.db is not None:
        rows = await node.db._fetch("SELECT k, v, ts, node, expires FROM kv_entries ORDER BY k")
        clear = await node.db._fetch("SELECT ts, node FROM kv_clear WHERE id = 1")
        return listing["data"], [Mutation(*r) for r in rows], (clear[0][0], clear[0][1])
    return listing["data"], node.store.mutations(None, 10**9)[0], node.store.clear_version


def memory_only(node: Node, why: str) -> None:
    if node.db is not None:
        pytest.skip(f"not applicable: {why}")


async def put(client: Client, key: str, value: str, **body: Any) -> Any:
    return await ok(await client.put(key_url(key), json={"value": value, **body}))


async def listing(client: Client, **params: str) -> dict[str, str]:
    body = await ok(await client.get(q("/keys", **params) if params else "/keys"))
    assert body["next_cursor"] is None
    data: dict[str, str] = body["data"]
    return data


@pytest.fixture
async def seeded(client: Client, node: Node) -> Client:
    """A store with plain keys, a key with a TTL and a tombstone."""
    for key, value in [("a", "1"), ("b", "2"), ("user:1", "x"), ("gone", "g")]:
        await put(client, key, value)
    await put(client, "expiring", "e", ttl=100)
    await ok(await client.delete("/keys/gone"))
    return client


# --- REST: one key ------------------------------------------------------------------------------


async def test_put_then_get(client: Client) -> None:
    resp = await client.put("/keys/greeting", json={"value": "hello"})
    assert await ok(resp) == {"key": "greeting", "value": "hello", "ttl": None}
    assert resp.headers["X-Replicas"] == "1/1"  # a mesh of one: applied here, nowhere else
    got = await ok(await client.get("/keys/greeting"))
    assert got == {"key": "greeting", "value": "hello", "ttl": None}


async def test_put_overwrites(client: Client) -> None:
    await put(client, "k", "first")
    await put(client, "k", "second")
    assert (await ok(await client.get("/keys/k")))["value"] == "second"
    assert await listing(client) == {"k": "second"}


async def test_an_empty_value_is_a_value(client: Client) -> None:
    assert await put(client, "k", "") == {"key": "k", "value": "", "ttl": None}
    assert (await ok(await client.get("/keys/k")))["value"] == ""


async def test_get_a_missing_key(client: Client) -> None:
    message = await expect_error(await client.get("/keys/nope"), 404, "NOT_FOUND")
    assert "nope" in message


async def test_head(client: Client) -> None:
    await put(client, "k", "v")
    resp = await client.head("/keys/k")
    assert resp.status == 200
    assert await resp.read() == b""
    missing = await client.head("/keys/nope")
    assert missing.status == 404
    assert await missing.read() == b""


async def test_delete(client: Client) -> None:
    await put(client, "k", "v")
    resp = await client.delete("/keys/k")
    assert await ok(resp) == {"deleted": "k"}
    assert resp.headers["X-Replicas"] == "1/1"
    await expect_error(await client.get("/keys/k"), 404, "NOT_FOUND")
    await expect_error(await client.delete("/keys/k"), 404, "NOT_FOUND")
    assert await listing(client) == {}


async def test_a_deleted_key_can_be_written_again(client: Client) -> None:
    await put(client, "k", "v1")
    await client.delete("/keys/k")
    await put(client, "k", "v2")
    assert (await ok(await client.get("/keys/k")))["value"] == "v2"


@pytest.mark.parametrize("key", SPECIAL_KEYS)
async def test_keys_with_url_special_characters_in_the_path(client: Client, key: str) -> None:
    value = f"value of {key}"
    assert await ok(await client.put(key_url(key), json={"value": value})) == {
        "key": key,
        "value": value,
        "ttl": None,
    }
    assert (await ok(await client.get(key_url(key))))["key"] == key
    assert (await client.head(key_url(key))).status == 200
    assert await listing(client) == {key: value}
    assert await ok(await client.delete(key_url(key))) == {"deleted": key}
    assert await listing(client) == {}


# --- REST: TTL ----------------------------------------------------------------------------------


async def test_ttl_counts_down_and_the_key_expires(client: Client, fake_clock: FakeClock) -> None:
    assert await put(client, "k", "v", ttl=10) == {"key": "k", "value": "v", "ttl": 10}
    assert (await ok(await client.get("/keys/k")))["ttl"] == 10
    fake_clock.advance(4)
    assert (await ok(await client.get("/keys/k")))["ttl"] == 6
    fake_clock.advance(5.999)
    assert (await ok(await client.get("/keys/k")))["ttl"] == pytest.approx(0.001)
    fake_clock.advance(0.001)
    await expect_error(await client.get("/keys/k"), 404, "NOT_FOUND")
    assert (await client.head("/keys/k")).status == 404
    await expect_error(await client.delete("/keys/k"), 404, "NOT_FOUND")
    assert await listing(client) == {}
    assert await ok(await client.get("/getAll")) == {}


async def test_expire_in_is_accepted_as_ttl(client: Client, fake_clock: FakeClock) -> None:
    resp = await client.put("/keys/k", json={"value": "v", "expire_in": 2.5})
    assert (await ok(resp))["ttl"] == 2.5
    fake_clock.advance(2.4)
    assert (await ok(await client.get("/keys/k")))["ttl"] == pytest.approx(0.1)
    fake_clock.advance(0.1)
    await expect_error(await client.get("/keys/k"), 404, "NOT_FOUND")


async def test_a_null_ttl_means_no_expiry(client: Client, fake_clock: FakeClock) -> None:
    await put(client, "k", "v", ttl=None)
    fake_clock.advance(10**6)
    assert (await ok(await client.get("/keys/k")))["ttl"] is None


async def test_rewriting_without_ttl_keeps_the_key(client: Client, fake_clock: FakeClock) -> None:
    await put(client, "k", "v", ttl=1)
    await put(client, "k", "forever")
    fake_clock.advance(100)
    assert await ok(await client.get("/keys/k")) == {"key": "k", "value": "forever", "ttl": None}


async def test_an_expired_key_can_be_written_again(client: Client, fake_clock: FakeClock) -> None:
    await put(client, "k", "v", ttl=1)
    fake_clock.advance(1)
    await put(client, "k", "again")
    assert (await ok(await client.get("/keys/k")))["value"] == "again"


# --- REST: the batch ----------------------------------------------------------------------------


async def test_batch_put_stores_every_pair_under_one_timestamp(client: Client, node: Node) -> None:
    pairs = {"a": "1", "b": "", "c/d": "3", EMOJI: EMOJI}
    resp = await client.put("/keys", json=pairs)
    assert await ok(resp) == {"stored": 4}
    assert resp.headers["X-Replicas"] == "1/1"
    assert await listing(client) == pairs
    memory_only(node, "the database's rows are checked by test_postgres.py")
    stamps = {node.store.entry(k).ts for k in pairs}  # type: ignore[union-attr]
    assert len(stamps) == 1


async def test_batch_put_overwrites_and_an_empty_batch_stores_nothing(client: Client) -> None:
    await put(client, "a", "old")
    assert await ok(await client.put("/keys", json={"a": "new", "b": "2"})) == {"stored": 2}
    assert await listing(client) == {"a": "new", "b": "2"}
    assert await ok(await client.put("/keys", json={})) == {"stored": 0}
    assert await listing(client) == {"a": "new", "b": "2"}


async def test_batch_put_with_expire_in(client: Client, fake_clock: FakeClock) -> None:
    await ok(await client.put(q("/keys", expire_in="5"), json={"a": "1", "b": "2"}))
    await put(client, "keeper", "k")
    assert (await ok(await client.get("/keys/a")))["ttl"] == 5
    fake_clock.advance(5)
    assert await listing(client) == {"keeper": "k"}


@pytest.mark.parametrize(
    ("pairs", "code"),
    [
        ({"ok1": "1", "bad": 2, "ok2": "3"}, "INVALID_BODY"),
        ({"ok1": "1", "bad": None}, "INVALID_BODY"),
        ({"ok1": "1", "bad": ["x"]}, "INVALID_BODY"),
        ({"ok1": "1", "bad": {"value": "x"}}, "INVALID_BODY"),
        ({"ok1": "1", "": "empty key"}, "EMPTY_KEY"),
        ({"ok1": "1", "k" * 65: "long key"}, "KEY_TOO_LONG"),
        ({"ok1": "1", "long value": "v" * 257}, "VALUE_TOO_LONG"),
    ],
)
async def test_batch_put_with_one_bad_pair_stores_nothing(
    seeded: Client, node: Node, pairs: dict[str, Any], code: str
) -> None:
    before = await snapshot(seeded, node)
    await expect_error(await seeded.put("/keys", json=pairs), 400, code)
    assert await snapshot(seeded, node) == before


# --- REST: listing, filters, pages ------------------------------------------------------------


async def test_list_everything(client: Client) -> None:
    assert await ok(await client.get("/keys")) == {"data": {}, "next_cursor": None}
    await ok(await client.put("/keys", json={"b": "2", "a": "1", "c": "3"}))
    resp = await client.get("/keys")
    assert await ok(resp) == {"data": {"a": "1", "b": "2", "c": "3"}, "next_cursor": None}
    assert resp.headers.get("Transfer-Encoding") == "chunked"  # streamed


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", ["user:1", "user:2", "users", "word", "world", "wod", "x?y", "x.y"]),
        ("user:*", ["user:1", "user:2"]),
        ("user*", ["user:1", "user:2", "users"]),
        ("wo$d", ["wod", "word", "world"]),
        ("wo?d", ["word"]),
        ("x?y", ["x.y", "x?y"]),
        ("x.y", ["x.y"]),
        ("*:?", ["user:1", "user:2"]),
        ("nothing*", []),
        ("", ["user:1", "user:2", "users", "word", "world", "wod", "x?y", "x.y"]),  # no filter
    ],
)
async def test_list_with_a_filter(client: Client, pattern: str, expected: list[str]) -> None:
    keys = ["user:1", "user:2", "users", "word", "world", "wod", "x?y", "x.y"]
    await ok(await client.put("/keys", json={k: k.upper() for k in keys}))
    assert await listing(client, filter=pattern) == {k: k.upper() for k in sorted(expected)}
    paged = await pages(client, {"filter": pattern, "limit": "2"})
    assert paged == {k: k.upper() for k in sorted(expected)}


async def pages(client: Client, params: dict[str, str], between: Any = None) -> dict[str, str]:
    """Follow next_cursor until it is null; fail on any key returned twice."""
    seen: dict[str, str] = {}
    cursor: str | None = None
    for _ in range(10_000):
        query = dict(params, cursor=cursor) if cursor is not None else params
        body = await ok(await client.get(q("/keys", **query)))
        assert set(body) == {"data", "next_cursor"}
        assert len(body["data"]) <= int(params["limit"])
        assert not set(body["data"]) & set(seen), "a key came back twice"
        seen.update(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
        assert isinstance(cursor, str)
        if between is not None:
            await between()
    raise AssertionError("the pages never ended")


async def test_pages_follow_next_cursor_until_null(client: Client) -> None:
    keys = {f"k{i:02}": str(i) for i in range(11)}
    await ok(await client.put("/keys", json=keys))
    first = await ok(await client.get(q("/keys", limit="4")))
    assert list(first["data"]) == ["k00", "k01", "k02", "k03"]
    assert first["next_cursor"] is not None
    for limit in ("1", "3", "4", "11", "12", "10000"):
        assert await pages(client, {"limit": limit}) == keys


async def test_a_cursor_continues_an_unlimited_listing(client: Client) -> None:
    await ok(await client.put("/keys", json={"a": "1", "b": "2", "c": "3"}))
    first = await ok(await client.get(q("/keys", limit="1")))
    rest = await ok(await client.get(q("/keys", cursor=first["next_cursor"])))
    assert rest == {"data": {"b": "2", "c": "3"}, "next_cursor": None}


async def test_pages_with_special_keys(client: Client) -> None:
    keys = {k: k for k in SPECIAL_KEYS}
    await ok(await client.put("/keys", json=keys))
    assert await pages(client, {"limit": "2"}) == keys
    assert await pages(client, {"limit": "3", "filter": "a*"}) == {
        k: k for k in keys if k.startswith("a")
    }


async def test_a_key_present_for_the_whole_scan_appears_exactly_once(client: Client) -> None:
    stable = {f"s{i:02}": "stable" for i in range(20)}
    await ok(await client.put("/keys", json=stable))
    counter = 0

    async def churn() -> None:
        # Between pages: insert keys before, among and after the stable ones, delete others,
        # rewrite a stable key.
        nonlocal counter
        counter += 1
        for key in (f"a{counter}", f"s{counter:02}x", f"z{counter}"):
            await put(client, key, "new")
        if counter > 1:
            await ok(await client.delete(key_url(f"s{counter - 1:02}x")))
        await put(client, f"s{counter % 20:02}", "stable")

    seen = await pages(client, {"limit": "3"}, between=churn)
    assert set(stable) <= set(seen)
    assert counter >= 6


async def test_listing_streams_many_pages(client: Client) -> None:
    # More keys than one stream page (1,000), and a filter that leaves some pages empty.
    keys = {f"key{i:04}": f"v{i}" for i in range(2500)}
    await ok(await client.put("/keys", json=keys))
    assert await listing(client) == keys
    sevens = {k: v for k, v in keys.items() if k.endswith("7")}
    assert await listing(client, filter="*7") == sevens
    only = {"key2499": "v2499"}
    assert await listing(client, filter="key2499") == only
    assert await listing(client, filter="key0*") == {k: keys[k] for k in keys if k < "key1"}
    assert await ok(await client.get("/getKeys")) == list(keys)
    assert await ok(await client.get("/getValues")) == list(keys.values())
    assert await ok(await client.get("/getAll")) == keys
    timed = await ok(await client.get("/get"))
    assert {k: v["value"] for k, v in timed["data"].items()} == keys
    assert {k: v["value"] for k, v in (await ok(await client.get("/all"))).items()} == keys
    assert await pages(client, {"limit": "10000"}) == keys


async def test_clear(seeded: Client, fake_clock: FakeClock) -> None:
    resp = await seeded.delete("/keys")
    assert await ok(resp) == {"cleared": True}
    assert resp.headers["X-Replicas"] == "1/1"
    assert await listing(seeded) == {}
    await expect_error(await seeded.get("/keys/a"), 404, "NOT_FOUND")
    await put(seeded, "a", "after")  # writes after the clear are kept
    assert await listing(seeded) == {"a": "after"}
    assert await ok(await seeded.delete("/keys")) == {"cleared": True}  # idempotent
    assert await listing(seeded) == {}


# --- the task API -------------------------------------------------------------------------------


async def test_task_set_and_get(client: Client) -> None:
    resp = await client.get("/set", params={"k": "a", "v": "1"})
    assert await ok(resp) == {"key": "a", "value": "1"}
    assert resp.headers["X-Replicas"] == "1/1"
    assert await ok(await client.get("/get", params={"k": "a"})) == {"key": "a", "value": "1"}
    await ok(await client.get("/set", params={"k": "a", "v": "2"}))
    assert await ok(await client.get("/get", params={"k": "a"})) == {"key": "a", "value": "2"}


async def test_task_set_with_an_empty_value_stores_the_empty_string(client: Client) -> None:
    assert await ok(await client.get(url("/set?k=a&v="))) == {"key": "a", "value": ""}
    assert await ok(await client.get(url("/get?k=a"))) == {"key": "a", "value": ""}
    assert (await ok(await client.get("/keys/a")))["value"] == ""
    assert (await client.get(url("/is?k=a"))).status == 200


async def test_task_get_missing(client: Client) -> None:
    await expect_error(await client.get(url("/get?k=nope")), 404, "NOT_FOUND")


async def test_task_rm(client: Client) -> None:
    await client.get(url("/set?k=a&v=1"))
    assert await ok(await client.get(url("/rm?k=a"))) == {"deleted": "a"}
    await expect_error(await client.get(url("/get?k=a")), 404, "NOT_FOUND")
    await expect_error(await client.get(url("/rm?k=a")), 404, "NOT_FOUND")


async def test_task_is(client: Client) -> None:
    await client.get(url("/set?k=a&v=1"))
    resp = await client.get(url("/is?k=a"))
    assert resp.status == 200
    assert resp.content_type == "application/json"
    await expect_error(await client.get(url("/is?k=b")), 404, "NOT_FOUND")


async def test_task_clear(seeded: Client) -> None:
    assert await ok(await seeded.get("/clear")) == {"data": {}}
    assert await listing(seeded) == {}
    assert await ok(await seeded.get("/getAll")) == {}


async def test_task_listings(client: Client) -> None:
    assert await ok(await client.get("/getKeys")) == []
    assert await ok(await client.get("/getValues")) == []
    assert await ok(await client.get("/getAll")) == {}
    for k, v in [("b", "2"), ("a", "1"), ("c", "")]:
        await client.get("/set", params={"k": k, "v": v})
    await client.get(url("/rm?k=b"))
    for route, expected in [
        ("/getKeys", ["a", "c"]),
        ("/getValues", ["1", ""]),
        ("/getAll", {"a": "1", "c": ""}),
    ]:
        resp = await client.get(route)
        assert await ok(resp) == expected
        assert resp.headers.get("Transfer-Encoding") == "chunked"


@pytest.mark.parametrize("key", SPECIAL_KEYS)
async def test_task_api_with_url_special_characters(client: Client, key: str) -> None:
    value = f"{key}={key}&{key}"
    assert await ok(await client.get(q("/set", k=key, v=value))) == {"key": key, "value": value}
    assert await ok(await client.get(q("/get", k=key))) == {"key": key, "value": value}
    # The same key through every door: REST, listings, compatibility routes.
    assert (await ok(await client.get(key_url(key))))["value"] == value
    assert await ok(await client.get("/getAll")) == {key: value}
    assert (await ok(await client.get(key_url(key, "/get/"))))["value"] == value
    assert (await ok(await client.get(q("/get", key=key))))["value"] == value
    assert (await client.get(q("/is", k=key))).status == 200
    assert await ok(await client.get(q("/rm", k=key))) == {"deleted": key}
    assert await ok(await client.get("/getAll")) == {}


async def test_plus_in_a_query_is_a_space_and_2b_is_a_plus(client: Client) -> None:
    await ok(await client.get(url("/set?k=a+b&v=c%2Bd")))
    assert await ok(await client.get(url("/get?k=a%20b"))) == {"key": "a b", "value": "c+d"}


# --- compatibility routes -----------------------------------------------------------------------


def parse_http_date(text: str) -> datetime:
    assert HTTP_DATE.match(text), text
    parsed = parsedate_to_datetime(text)
    assert parsed.tzinfo is not None
    return parsed


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(int(epoch), UTC)


async def test_named_set_and_get(client: Client, fake_clock: FakeClock) -> None:
    fake_clock.advance(1.5)
    resp = await client.get(q("/set/color", value="blue"))
    assert await ok(resp) == {"color": {"value": "blue", "time": START + 1.5}}
    assert resp.headers["X-Replicas"] == "1/1"
    fake_clock.advance(10)
    assert await ok(await client.get("/get/color")) == {"value": "blue", "time": START + 1.5}
    await expect_error(await client.get("/get/nope"), 404, "NOT_FOUND")


async def test_named_set_with_an_empty_value(client: Client) -> None:
    assert (await ok(await client.get(url("/set/k?value="))))["k"]["value"] == ""


@pytest.mark.parametrize("key", ["a/b", "a?b", "a#b", "100%", "a b", "a+b", EMOJI, "..", "."])
async def test_named_routes_with_special_keys(client: Client, key: str) -> None:
    body = await ok(await client.get(key_url(key, "/set/").with_query(value="v")))
    assert body == {key: {"value": "v", "time": START}}
    assert (await ok(await client.get(key_url(key, "/get/"))))["value"] == "v"


async def test_get_without_parameters_lists_every_pair_with_its_time(
    client: Client, fake_clock: FakeClock
) -> None:
    assert await ok(await client.get("/get")) == {"data": {}}
    await client.get(url("/set/a?value=1"))
    fake_clock.advance(2)
    await ok(await client.put("/keys/b", json={"value": "2"}))
    resp = await client.get("/get")
    assert await ok(resp) == {
        "data": {"a": {"value": "1", "time": START}, "b": {"value": "2", "time": START + 2}}
    }
    assert resp.headers.get("Transfer-Encoding") == "chunked"


async def test_expiring_set_and_get(client: Client, fake_clock: FakeClock) -> None:
    resp = await client.get(q("/set", key="k", value="v", timeout="30"))
    body = await ok(resp)
    assert set(body) == {"key", "message", "timeout", "value"}
    assert (body["key"], body["message"], body["value"]) == ("k", "Value set successfully", "v")
    assert parse_http_date(body["timeout"]) == at(START + 30)
    assert resp.headers["X-Replicas"] == "1/1"

    fake_clock.advance(10)
    got = await ok(await client.get(q("/get", key="k")))
    assert set(got) == {"current_time", "time_out", "value"}
    assert got["value"] == "v"
    assert parse_http_date(got["current_time"]) == at(START + 10)
    assert parse_http_date(got["time_out"]) == at(START + 30)

    fake_clock.advance(20)
    await expect_error(await client.get(q("/get", key="k")), 404, "NOT_FOUND")
    assert await ok(await client.get("/all")) == {}


async def test_expiring_set_without_timeout(client: Client, fake_clock: FakeClock) -> None:
    body = await ok(await client.get(q("/set", key="k", value="v")))
    assert body == {"key": "k", "message": "Value set successfully", "timeout": None, "value": "v"}
    fake_clock.advance(10**6)
    got = await ok(await client.get(q("/get", key="k")))
    assert (got["value"], got["time_out"]) == ("v", None)
    assert parse_http_date(got["current_time"]) == at(START + 10**6)


async def test_expiring_set_with_an_empty_value(client: Client) -> None:
    assert (await ok(await client.get(url("/set?key=k&value="))))["value"] == ""
    assert (await ok(await client.get(url("/get?key=k"))))["value"] == ""


async def test_expiring_delete(client: Client) -> None:
    await client.get(q("/set", key="k", value="v"))
    assert await ok(await client.get(q("/delete", key="k"))) == {
        "message": "Value deleted successfully"
    }
    await expect_error(await client.get(q("/get", key="k")), 404, "NOT_FOUND")
    await expect_error(await client.get(q("/delete", key="k")), 404, "NOT_FOUND")


async def test_all(client: Client) -> None:
    assert await ok(await client.get("/all")) == {}
    await client.get(q("/set", key="t", value="1", timeout="60"))
    await client.get(q("/set", key="p", value="2"))
    resp = await client.get("/all")
    body = await ok(resp)
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    assert set(body) == {"t", "p"}
    assert body["p"] == {"time_out": None, "value": "2"}
    assert body["t"]["value"] == "1"
    assert parse_http_date(body["t"]["time_out"]) == at(START + 60)


async def test_every_api_sees_the_same_store(client: Client, fake_clock: FakeClock) -> None:
    await client.get(url("/set?k=task&v=1"))
    await client.get(url("/set/named?value=2"))
    await client.get(url("/set?key=expiring&value=3&timeout=5"))
    await ok(await client.put("/keys/rest", json={"value": "4"}))
    expected = {"expiring": "3", "named": "2", "rest": "4", "task": "1"}
    assert await listing(client) == expected
    assert await ok(await client.get("/getAll")) == expected
    assert (await ok(await client.get("/keys/expiring")))["ttl"] == 5
    fake_clock.advance(5)
    del expected["expiring"]
    assert await ok(await client.get("/getAll")) == expected
    await ok(await client.get(url("/rm?k=named")))
    await ok(await client.get(url("/delete?key=rest")))
    await expect_error(await client.get("/get/named"), 404, "NOT_FOUND")
    assert await listing(client) == {"task": "1"}


# --- operations -------------------------------------------------------------------------------


async def test_health(client: Client, node: Node) -> None:
    body = await ok(await client.get("/health"))
    assert body == {"status": "ok", "name": node.config.name, "members": 1, "keys": 0}
    await ok(await client.put("/keys", json={"a": "1", "b": "2"}))
    await client.delete("/keys/a")
    assert (await ok(await client.get("/health")))["keys"] == 1


async def test_metrics(client: Client, node: Node) -> None:
    await put(client, "k", "v")
    await client.get("/keys/k")
    await client.get("/keys/missing")
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    for name in ("request_count", "request_latency_seconds", "internal_error_count"):
        assert re.search(rf"^# TYPE {name}\w* ", text, re.MULTILINE), name
        assert re.search(rf"^{name}\w*(\{{.*\}})? \S+$", text, re.MULTILINE), name
    # Requests are counted by route (the template, not the key), method and status.
    counted = re.findall(r"^request_count\w*\{(.*)\} (\S+)$", text, re.MULTILINE)
    labels = {frozenset(re.findall(r'(\w+)="([^"]*)"', lab)): float(n) for lab, n in counted}
    assert labels[frozenset({("route", "/keys/{key}"), ("method", "GET"), ("status", "200")})] == 1
    assert labels[frozenset({("route", "/keys/{key}"), ("method", "GET"), ("status", "404")})] == 1
    assert labels[frozenset({("route", "/keys/{key}"), ("method", "PUT"), ("status", "200")})] == 1
    assert re.search(r'^request_latency_seconds_count\{route="/keys/\{key\}"\} 3', text, re.M)
    assert re.search(r"^internal_error_count\w* 0", text, re.MULTILINE)
    assert re.search(r"^store_keys 1", text, re.MULTILINE) or node.db is not None


async def test_an_unexpected_exception_is_internal_and_counted(
    client: Client, node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(key: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(node.data, "get", broken)
    await expect_error(await client.get("/keys/k"), 500, "INTERNAL")
    text = await (await client.get("/metrics")).text()
    assert re.search(r"^internal_error_count\w* 1", text, re.MULTILINE)


# --- bad requests: the right error, and nothing changes --------------------------------------

LONG_KEY = "k" * 65
LONG_EMOJI_KEY = EMOJI * 65
LONG_VALUE = "v" * 257
LONG_EMOJI_VALUE = EMOJI * 257


def bad(method: str, target: str | URL, status: int, code: str, id: str, **kwargs: Any) -> Any:
    return pytest.param(method, target if isinstance(target, URL) else url(target), kwargs, status,
                        code, id=id)  # fmt: skip


BAD_REQUESTS = [
    # the key parameter is absent
    bad("GET", "/set?v=1", 400, "MISSING_KEY_PARAM", "set-no-k"),
    bad("GET", "/get?v=1", 400, "MISSING_KEY_PARAM", "get-no-k"),
    bad("GET", "/rm", 400, "MISSING_KEY_PARAM", "rm-no-k"),
    bad("GET", "/is", 400, "MISSING_KEY_PARAM", "is-no-k"),
    bad("GET", "/delete", 400, "MISSING_KEY_PARAM", "delete-no-key"),
    # the value parameter is absent
    bad("GET", "/set?k=a", 400, "MISSING_VALUE_PARAM", "set-no-v"),
    bad("GET", "/set?key=a", 400, "MISSING_VALUE_PARAM", "compat-set-no-value"),
    bad("GET", "/set/a", 400, "MISSING_VALUE_PARAM", "named-set-no-value"),
    bad("PUT", "/keys/a", 400, "MISSING_VALUE_PARAM", "put-no-value", json={}),
    bad("PUT", "/keys/a", 400, "MISSING_VALUE_PARAM", "put-ttl-only", json={"ttl": 5}),
    # the key is the empty string
    bad("GET", "/set?k=&v=1", 400, "EMPTY_KEY", "set-empty-k"),
    bad("GET", "/get?k=", 400, "EMPTY_KEY", "get-empty-k"),
    bad("GET", "/rm?k=", 400, "EMPTY_KEY", "rm-empty-k"),
    bad("GET", "/is?k=", 400, "EMPTY_KEY", "is-empty-k"),
    bad("GET", "/set?key=&value=1", 400, "EMPTY_KEY", "compat-set-empty-key"),
    bad("GET", "/get?key=", 400, "EMPTY_KEY", "compat-get-empty-key"),
    bad("GET", "/delete?key=", 400, "EMPTY_KEY", "compat-delete-empty-key"),
    bad("GET", "/set/?value=1", 400, "EMPTY_KEY", "named-set-empty"),
    bad("GET", "/get/", 400, "EMPTY_KEY", "named-get-empty"),
    bad("PUT", "/keys/", 400, "EMPTY_KEY", "put-empty", json={"value": "v"}),
    bad("GET", "/keys/", 400, "EMPTY_KEY", "get-empty"),
    bad("DELETE", "/keys/", 400, "EMPTY_KEY", "delete-empty"),
    bad("PUT", "/keys", 400, "EMPTY_KEY", "batch-empty-key", json={"": "v"}),
    # over the key limit, in code points
    bad("GET", q("/set", k=LONG_KEY, v="1"), 400, "KEY_TOO_LONG", "set-long-k"),
    bad("GET", q("/set", k=LONG_EMOJI_KEY, v="1"), 400, "KEY_TOO_LONG", "set-long-emoji-k"),
    bad("GET", q("/get", k=LONG_KEY), 400, "KEY_TOO_LONG", "get-long-k"),
    bad("GET", q("/rm", k=LONG_KEY), 400, "KEY_TOO_LONG", "rm-long-k"),
    bad("GET", q("/is", k=LONG_KEY), 400, "KEY_TOO_LONG", "is-long-k"),
    bad("GET", q("/set", key=LONG_KEY, value="1"), 400, "KEY_TOO_LONG", "compat-set-long"),
    bad("GET", q("/get", key=LONG_KEY), 400, "KEY_TOO_LONG", "compat-get-long"),
    bad("GET", q("/delete", key=LONG_KEY), 400, "KEY_TOO_LONG", "compat-delete-long"),
    bad("GET", key_url(LONG_KEY, "/set/").with_query(value="1"), 400, "KEY_TOO_LONG", "named"),
    bad("GET", key_url(LONG_EMOJI_KEY, "/get/"), 400, "KEY_TOO_LONG", "named-get-long"),
    bad("PUT", key_url(LONG_KEY), 400, "KEY_TOO_LONG", "put-long", json={"value": "v"}),
    bad("PUT", key_url(LONG_EMOJI_KEY), 400, "KEY_TOO_LONG", "put-emoji", json={"value": "v"}),
    bad("GET", key_url(LONG_KEY), 400, "KEY_TOO_LONG", "get-long"),
    bad("DELETE", key_url(LONG_KEY), 400, "KEY_TOO_LONG", "delete-long"),
    bad("PUT", "/keys", 400, "KEY_TOO_LONG", "batch-long-key", json={LONG_EMOJI_KEY: "v"}),
    # over the value limit, in code points
    bad("GET", q("/set", k="a", v=LONG_VALUE), 400, "VALUE_TOO_LONG", "set-long-v"),
    bad("GET", q("/set", k="a", v=LONG_EMOJI_VALUE), 400, "VALUE_TOO_LONG", "set-emoji-v"),
    bad("GET", q("/set", key="a", value=LONG_VALUE), 400, "VALUE_TOO_LONG", "compat-set-v"),
    bad("GET", q("/set/a", value=LONG_EMOJI_VALUE), 400, "VALUE_TOO_LONG", "named-set-v"),
    bad("PUT", "/keys/a", 400, "VALUE_TOO_LONG", "put-long-v", json={"value": LONG_VALUE}),
    bad("PUT", "/keys/a", 400, "VALUE_TOO_LONG", "put-emoji-v", json={"value": LONG_EMOJI_VALUE}),
    bad("PUT", "/keys", 400, "VALUE_TOO_LONG", "batch-long-v", json={"a": LONG_EMOJI_VALUE}),
    # malformed JSON, wrong shape, non-string value
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-malformed", data=b'{"value": '),
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-empty-body", data=b""),
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-not-utf8", data=b'{"value": "\xff"}'),
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-lone-surrogate", data=b'{"value":"\\ud800"}'),
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-array", json=["value", "v"]),
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-string", json="v"),
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-null-body", json=None),
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-number-value", json={"value": 1}),
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-bool-value", json={"value": True}),
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-null-value", json={"value": None}),
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-list-value", json={"value": ["v"]}),
    bad("PUT", "/keys/a", 400, "INVALID_BODY", "put-object-value", json={"value": {"v": "v"}}),
    bad("PUT", "/keys", 400, "INVALID_BODY", "batch-malformed", data=b"{"),
    bad("PUT", "/keys", 400, "INVALID_BODY", "batch-empty-body", data=b""),
    bad("PUT", "/keys", 400, "INVALID_BODY", "batch-array", json=[["a", "1"]]),
    bad("PUT", "/keys", 400, "INVALID_BODY", "batch-number-value", json={"a": 1}),
    bad("PUT", "/keys", 400, "INVALID_BODY", "batch-null-value", json={"a": None}),
    # a bad limit, cursor, ttl, timeout, expire_in or filter
    bad("GET", "/keys?limit=0", 400, "INVALID_PARAMETER", "limit-0"),
    bad("GET", "/keys?limit=-1", 400, "INVALID_PARAMETER", "limit-negative"),
    bad("GET", "/keys?limit=abc", 400, "INVALID_PARAMETER", "limit-text"),
    bad("GET", "/keys?limit=1.5", 400, "INVALID_PARAMETER", "limit-fraction"),
    bad("GET", "/keys?limit=", 400, "INVALID_PARAMETER", "limit-empty"),
    bad("GET", "/keys?limit=10001", 400, "INVALID_PARAMETER", "limit-huge"),
    bad("GET", "/keys?limit=2&cursor=!!!", 400, "INVALID_PARAMETER", "cursor-garbage"),
    bad("GET", "/keys?limit=2&cursor=YQ%3D%3D", 400, "INVALID_PARAMETER", "cursor-padded"),
    bad("GET", "/keys?limit=2&cursor=_w", 400, "INVALID_PARAMETER", "cursor-not-utf8"),
    bad("GET", "/keys?limit=2&cursor=", 400, "INVALID_PARAMETER", "cursor-empty"),
    bad("GET", "/keys?cursor=%25%25", 400, "INVALID_PARAMETER", "cursor-no-limit"),
    bad("GET", q("/keys", filter="a" * 1025), 400, "INVALID_PARAMETER", "filter-too-long"),
    bad("PUT", "/keys/a", 400, "INVALID_PARAMETER", "ttl-0", json={"value": "v", "ttl": 0}),
    bad("PUT", "/keys/a", 400, "INVALID_PARAMETER", "ttl-neg", json={"value": "v", "ttl": -1}),
    bad("PUT", "/keys/a", 400, "INVALID_PARAMETER", "ttl-text", json={"value": "v", "ttl": "x"}),
    bad("PUT", "/keys/a", 400, "INVALID_PARAMETER", "ttl-bool", json={"value": "v", "ttl": True}),
    bad("PUT", "/keys/a", 400, "INVALID_PARAMETER", "ttl-list", json={"value": "v", "ttl": [1]}),
    bad("PUT", "/keys/a", 400, "INVALID_PARAMETER", "ttl-huge", json={"value": "v", "ttl": 1e12}),
    bad(
        "PUT",
        "/keys/a",
        400,
        "INVALID_PARAMETER",
        "ttl-and-expire_in",
        json={"value": "v", "ttl": 5, "expire_in": 5},
    ),
    bad(
        "PUT",
        "/keys/a",
        400,
        "INVALID_PARAMETER",
        "expire_in-neg",
        json={"value": "v", "expire_in": -5},
    ),
    bad(
        "PUT",
        "/keys/a",
        400,
        "INVALID_PARAMETER",
        "expire_in-text",
        json={"value": "v", "expire_in": "soon"},
    ),
    bad(
        "PUT",
        "/keys?expire_in=abc",
        400,
        "INVALID_PARAMETER",
        "batch-expire_in-text",
        json={"a": "1"},
    ),
    bad("PUT", "/keys?expire_in=0", 400, "INVALID_PARAMETER", "batch-expire_in-0", json={"a": "1"}),
    bad(
        "PUT",
        "/keys?expire_in=nan",
        400,
        "INVALID_PARAMETER",
        "batch-expire_in-nan",
        json={"a": "1"},
    ),
    bad(
        "PUT",
        "/keys?expire_in=",
        400,
        "INVALID_PARAMETER",
        "batch-expire_in-empty",
        json={"a": "1"},
    ),
    bad("GET", "/set?key=a&value=1&timeout=abc", 400, "INVALID_PARAMETER", "timeout-text"),
    bad("GET", "/set?key=a&value=1&timeout=-1", 400, "INVALID_PARAMETER", "timeout-negative"),
    bad("GET", "/set?key=a&value=1&timeout=0", 400, "INVALID_PARAMETER", "timeout-0"),
    bad("GET", "/set?key=a&value=1&timeout=inf", 400, "INVALID_PARAMETER", "timeout-inf"),
    bad("GET", "/set?key=a&value=1&timeout=", 400, "INVALID_PARAMETER", "timeout-empty"),
    # text that is not UTF-8 is refused, not silently turned into another key
    bad("PUT", "/keys/%FF", 400, "INVALID_PARAMETER", "path-not-utf8", json={"value": "v"}),
    bad("GET", "/set?k=%FF&v=1", 400, "INVALID_PARAMETER", "query-key-not-utf8"),
    bad("GET", "/set?k=a&v=%C3", 400, "INVALID_PARAMETER", "query-value-not-utf8"),
    bad("GET", "/set?k=%ED%A0%80&v=1", 400, "INVALID_PARAMETER", "query-surrogate"),
    # no such key, no such route
    bad("GET", "/keys/missing", 404, "NOT_FOUND", "get-missing"),
    bad("DELETE", "/keys/missing", 404, "NOT_FOUND", "delete-missing"),
    bad("GET", "/get?k=missing", 404, "NOT_FOUND", "task-get-missing"),
    bad("GET", "/rm?k=missing", 404, "NOT_FOUND", "task-rm-missing"),
    bad("GET", "/is?k=missing", 404, "NOT_FOUND", "task-is-missing"),
    bad("GET", "/rm?k=gone", 404, "NOT_FOUND", "task-rm-deleted"),
    bad("GET", "/get/missing", 404, "NOT_FOUND", "named-get-missing"),
    bad("GET", "/get?key=missing", 404, "NOT_FOUND", "compat-get-missing"),
    bad("GET", "/delete?key=missing", 404, "NOT_FOUND", "compat-delete-missing"),
    bad("GET", "/nope", 404, "NOT_FOUND", "unknown-route"),
    bad("POST", "/nope", 404, "NOT_FOUND", "unknown-route-post"),
    bad("GET", "/getall", 404, "NOT_FOUND", "routes-are-case-sensitive"),
    # wrong method
    bad("POST", "/keys/a", 405, "METHOD_NOT_ALLOWED", "post-key", json={"value": "v"}),
    bad("PATCH", "/keys/a", 405, "METHOD_NOT_ALLOWED", "patch-key", json={"value": "v"}),
    bad("POST", "/keys", 405, "METHOD_NOT_ALLOWED", "post-keys", json={"a": "1"}),
    bad("POST", "/set?k=a&v=1", 405, "METHOD_NOT_ALLOWED", "post-set"),
    bad("PUT", "/set/a?value=1", 405, "METHOD_NOT_ALLOWED", "put-named"),
    bad("DELETE", "/delete?key=a", 405, "METHOD_NOT_ALLOWED", "delete-delete"),
    bad("DELETE", "/clear", 405, "METHOD_NOT_ALLOWED", "delete-clear"),
    bad("POST", "/getAll", 405, "METHOD_NOT_ALLOWED", "post-getall"),
    bad("PUT", "/health", 405, "METHOD_NOT_ALLOWED", "put-health"),
    bad("DELETE", "/metrics", 405, "METHOD_NOT_ALLOWED", "delete-metrics"),
]


@pytest.mark.parametrize(("method", "target", "kwargs", "status", "code"), BAD_REQUESTS)
async def test_a_bad_request_gets_its_error_and_changes_nothing(
    seeded: Client,
    node: Node,
    method: str,
    target: URL,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    before = await snapshot(seeded, node)
    await expect_error(await seeded.request(method, target, **kwargs), status, code)
    assert await snapshot(seeded, node) == before


@pytest.mark.parametrize(
    ("method", "target", "kwargs"),
    [
        ("PUT", key_url(EMOJI * 64), {"json": {"value": EMOJI * 256}}),
        ("GET", q("/set", k=EMOJI * 64, v=EMOJI * 256), {}),
        ("GET", q("/set", key=EMOJI * 64, value=EMOJI * 256), {}),
        ("GET", key_url(EMOJI * 64, "/set/").with_query(value=EMOJI * 256), {}),
        ("PUT", url("/keys"), {"json": {EMOJI * 64: EMOJI * 256}}),
    ],
    ids=["rest", "task", "compat", "named", "batch"],
)
async def test_limits_are_counted_in_code_points(
    client: Client, method: str, target: URL, kwargs: dict[str, Any]
) -> None:
    """A 64-character key and a 256-character value are fine, whatever their UTF-8 size."""
    assert (await client.request(method, target, **kwargs)).status == 200
    assert await listing(client) == {EMOJI * 64: EMOJI * 256}


async def test_limits_follow_the_configuration(
    make_node: MakeNode, make_client: MakeClient
) -> None:
    client = await make_client(make_node(max_key_length=3, max_value_length=2))
    await ok(await client.get(url("/set?k=abc&v=12")))
    await expect_error(await client.get(url("/set?k=abcd&v=1")), 400, "KEY_TOO_LONG")
    await expect_error(await client.get(url("/set?k=a&v=123")), 400, "VALUE_TOO_LONG")


async def test_a_body_over_the_limit_is_413_and_changes_nothing(
    make_node: MakeNode, make_client: MakeClient
) -> None:
    node = make_node(max_body_bytes=1024)
    client = await make_client(node)
    await ok(await client.put("/keys", json={"a": "1"}))
    before = await snapshot(client, node)
    big = {f"k{i}": "v" * 200 for i in range(10)}  # valid pairs, but about 2 kB
    await expect_error(await client.put("/keys", json=big), 413, "BODY_TOO_LARGE")
    padded = b'{"value": "v", "pad": "' + b" " * 2048 + b'"}'
    await expect_error(await client.put("/keys/a", data=padded), 413, "BODY_TOO_LARGE")
    assert await snapshot(client, node) == before
    # Just under the limit is fine.
    fits = b'{"value": "v", "pad": "' + b" " * 900 + b'"}'
    await ok(await client.put("/keys/b", data=fits))
