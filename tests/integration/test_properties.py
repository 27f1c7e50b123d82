"""Property tests of the HTTP API: arbitrary keys, values and bodies, through a real server.

Any Unicode text (lone surrogates excluded: they are not text and cannot be sent as UTF-8) with
URL-special characters mixed in, of any length around the limits. The round trip must return
exactly what was stored, or the contract's 4xx error; no input may produce a 5xx.

One server serves every example of a test (a server per example would dominate the run time),
so each example clears the store first and checks only what it wrote.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.app import Node
from tests.helpers import key_url
from tests.integration.backends import (  # noqa: F401 (fixtures: every test on both backends)
    config_on_backend,
    make_node_on_backend,
    on_both_backends,
)

Client = TestClient[Any, Any]

MAX_KEY = 64
MAX_VALUE = 256

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Characters with a meaning in URLs, query strings, JSON or paths, drawn often.
URL_SPECIAL = [*"/?#%&+=;:@!$'()*,[]{}|\\^`\"<> .~\t\n\r\x00", "%2F", "%25", "..", "+%20"]
_char = st.one_of(
    st.characters(codec="utf-8"),  # any code point that UTF-8 can carry: no lone surrogates
    st.sampled_from(URL_SPECIAL),
    st.sampled_from(["😀", "é", "\u0301", "\ufeff", "\u2028", "\U0010ffff", "\ufffd"]),
)
keys = st.lists(_char, max_size=MAX_KEY + 4).map("".join)
values = st.lists(_char, max_size=MAX_VALUE + 4).map("".join)


def expected_errors(key: str, value: str, backend: str) -> set[str]:
    """The codes that would be right for this pair; empty when it must be stored."""
    errors = set()
    if backend == "postgres" and ("\x00" in key or "\x00" in value):
        errors.add("INVALID_PARAMETER")  # PostgreSQL's text cannot hold U+0000
    if key == "":
        errors.add("EMPTY_KEY")
    if len(key) > MAX_KEY:
        errors.add("KEY_TOO_LONG")
    if len(value) > MAX_VALUE:
        errors.add("VALUE_TOO_LONG")
    return errors


async def check_error(resp: ClientResponse, allowed: set[str]) -> None:
    body = await resp.json()
    assert resp.status == 400, body
    assert set(body) == {"error", "code"}
    assert body["code"] in allowed, (body, allowed)


async def reset(client: Client) -> None:
    assert (await client.delete("/keys")).status == 200


async def stored(client: Client) -> dict[str, str]:
    resp = await client.get("/getAll")
    assert resp.status == 200
    data: dict[str, str] = await resp.json()
    return data


@PROPERTY_SETTINGS
@given(key=keys, value=values)
async def test_rest_round_trip(client: Client, backend: str, key: str, value: str) -> None:
    # `/keys/{quote(key, safe="")}` (dot-segment keys sent as %2E, see key_url)
    await reset(client)
    resp = await client.put(key_url(key), json={"value": value})
    errors = expected_errors(key, value, backend)
    if errors:
        await check_error(resp, errors)
        assert await stored(client) == {}
        return
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"key": key, "value": value, "ttl": None}
    got = await client.get(key_url(key))
    assert got.status == 200
    assert await got.json() == {"key": key, "value": value, "ttl": None}
    assert await stored(client) == {key: value}
    deleted = await client.delete(key_url(key))
    assert await deleted.json() == {"deleted": key}
    assert await stored(client) == {}


@PROPERTY_SETTINGS
@given(key=keys, value=values)
async def test_task_api_round_trip(client: Client, backend: str, key: str, value: str) -> None:
    await reset(client)
    resp = await client.get("/set", params={"k": key, "v": value})
    errors = expected_errors(key, value, backend)
    if errors:
        await check_error(resp, errors)
        assert await stored(client) == {}
        return
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"key": key, "value": value}
    got = await client.get("/get", params={"k": key})
    assert await got.json() == {"key": key, "value": value}
    assert (await client.get("/is", params={"k": key})).status == 200
    assert await stored(client) == {key: value}
    # The same pair, read through the REST route.
    rest = await client.get(key_url(key))
    assert (await rest.json())["value"] == value


@PROPERTY_SETTINGS
@given(pairs=st.dictionaries(keys, values, max_size=5))
async def test_batch_round_trip(client: Client, backend: str, pairs: dict[str, str]) -> None:
    await reset(client)
    resp = await client.put("/keys", json=pairs)
    errors = set().union(*(expected_errors(k, v, backend) for k, v in pairs.items()))
    if errors:
        await check_error(resp, errors)
        assert await stored(client) == {}  # atomic: not even the valid pairs
        return
    assert await resp.json() == {"stored": len(pairs)}
    assert await stored(client) == pairs
    listed = await client.get("/keys", params={"limit": "2"})
    assert (await listed.json())["data"] == dict(sorted(pairs.items())[:2])


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def encode(doc: Any) -> bytes:
    # json, not orjson: it writes NaN/Infinity and integers past 64 bits, which are not JSON.
    return json.dumps(doc).encode()


bodies = st.one_of(
    json_values.map(encode),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(encode),
    st.dictionaries(keys, values, max_size=3).map(encode),
    st.binary(max_size=64),
    st.sampled_from([b"", b"{", b"{}", b"[]", b"null", b'{"a":"\\ud800"}', b"\xff\xfe", b"{} x"]),
)


async def assert_no_server_error(resp: ClientResponse) -> Any:
    text = await resp.text()
    assert resp.status < 500, text
    assert resp.content_type == "application/json", text
    return orjson.loads(text)


@PROPERTY_SETTINGS
@given(body=bodies)
async def test_arbitrary_bodies_at_the_batch_route(client: Client, node: Node, body: bytes) -> None:
    await reset(client)
    resp = await client.put("/keys", data=body, headers={"Content-Type": "application/json"})
    reply = await assert_no_server_error(resp)
    if resp.status == 200:
        sent = orjson.loads(body)
        assert reply == {"stored": len(sent)}
        assert await stored(client) == sent
    else:
        assert resp.status == 400
        assert set(reply) == {"error", "code"}
        assert reply["code"] in {
            "INVALID_BODY",
            "EMPTY_KEY",
            "KEY_TOO_LONG",
            "VALUE_TOO_LONG",
        }
        assert await stored(client) == {}


@PROPERTY_SETTINGS
@given(body=bodies)
async def test_arbitrary_bodies_at_the_key_route(client: Client, body: bytes) -> None:
    await reset(client)
    resp = await client.put("/keys/k", data=body, headers={"Content-Type": "application/json"})
    reply = await assert_no_server_error(resp)
    if resp.status == 200:
        assert reply["value"] == orjson.loads(body)["value"]
        assert await stored(client) == {"k": reply["value"]}
    else:
        assert resp.status == 400
        assert set(reply) == {"error", "code"}
        assert reply["code"] in {
            "INVALID_BODY",
            "INVALID_PARAMETER",
            "MISSING_VALUE_PARAM",
            "VALUE_TOO_LONG",
        }
        assert await stored(client) == {}
