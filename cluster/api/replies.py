"""What every HTTP face shares: JSON replies, request parsing, listings, write headers.

Parsing raises the contract's KVErrors; `cluster.api.middleware` is the one place they become
HTTP replies. Listings stream their JSON page by page from the store's sorted key index, so memory
stays flat however many keys there are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import unquote, unquote_to_bytes

import orjson
from aiohttp import web

from cluster.api.ports import Writes
from cluster.core.cursor import decode_cursor
from cluster.core.kv import Batch
from cluster.core.patterns import Pattern, compile_pattern
from cluster.core.store import Entry
from cluster.errors import STATUS, BadRequest, DecodeError, KVError

JSON = "application/json"
MAX_PAGE = 10_000
STREAM_PAGE = 1_000

Render = Callable[[list[tuple[str, Entry]]], bytes]


JSON_TYPE = {"Content-Type": "application/json; charset=utf-8"}


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # The Content-Type as a header, not content_type=/charset=: aiohttp then copies one dict
    # instead of checking and joining the two (on every request).
    return web.Response(
        body=orjson.dumps(obj),
        status=status,
        headers=JSON_TYPE if headers is None else {**JSON_TYPE, **headers},
    )


def error_response(exc: KVError) -> web.Response:
    return json_response({"error": exc.message, "code": exc.code}, status=STATUS[exc.code])


def parse_cursor(cursor: str | None) -> str | None:
    """The key a listing cursor resumes after (None: from the start); INVALID_PARAMETER if it is
    not one this server returned."""
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except DecodeError:
        raise BadRequest(
            "cursor is not a cursor this server returned", "INVALID_PARAMETER"
        ) from None


def key_from_path(request: web.Request, prefix: str) -> str:
    """The key after `prefix` in the raw path, percent-decoded strictly (so `%2F` is a slash in
    the key and invalid UTF-8 is an error rather than a silently different key)."""
    raw = request.rel_url.raw_path[len(prefix) :]
    try:
        return unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the key is not valid UTF-8", "INVALID_PARAMETER") from None


def check_query_utf8(raw_query: str) -> None:
    """Refuse a query string whose percent-escapes are not UTF-8: decoding it would silently
    substitute U+FFFD and store or read a different key (the path is decoded strictly too).

    Checking the whole string is exact: `&`, `=` and `+` are ASCII, which never occurs inside a
    multi-byte sequence. Only strings with an escape are decoded, so the hot path pays one scan.
    """
    if "%" in raw_query:
        try:
            unquote_to_bytes(raw_query).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the query string is not valid UTF-8", "INVALID_PARAMETER") from None


def parse_limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest("limit must be an integer", "INVALID_PARAMETER") from None
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}", "INVALID_PARAMETER")
    return limit


def parse_filter(raw: str | None) -> Pattern | None:
    if raw is None or raw == "":
        return None
    try:
        return compile_pattern(raw)
    except ValueError as exc:
        raise BadRequest(str(exc), "INVALID_PARAMETER") from None


def parse_json(body: bytes) -> Any:
    if not body:
        raise BadRequest("the body is empty; expected JSON", "INVALID_BODY")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", "INVALID_BODY") from None


async def replicate_headers(writes: Writes, batch: Batch) -> dict[str, str]:
    """Hand a write to replication (in sync mode: wait for the acks); the reply's headers."""
    acked, expected = await writes.replicate(batch)
    return {"X-Replicas": f"{acked}/{expected}", "X-Timestamp": str(batch.ts)}


def _render(shape: str) -> Render:
    if shape == "object":
        return lambda page: orjson.dumps({k: e.value for k, e in page})[1:-1]
    if shape == "keys":
        return lambda page: orjson.dumps([k for k, _ in page])[1:-1]
    return lambda page: orjson.dumps([e.value for _, e in page])[1:-1]


class Scanner(Protocol):
    """What a listing reads its pages from (`cluster.api.data.Data`)."""

    async def scan(
        self, after: str | None, limit: int, pattern: Pattern | None
    ) -> tuple[list[tuple[str, Entry]], str | None]: ...


async def stream_listing(
    request: web.Request,
    data: Scanner,
    shape: str,
    after: str | None,
    pattern: Pattern | None,
    head: bytes,
    tail: bytes,
    render: Render | None = None,
) -> web.StreamResponse:
    """Write a listing in chunks: `head`, the pages joined by commas, `tail`.

    `shape` is "object" (k: value), "keys" or "values"; `render` overrides it. Between pages
    the event loop serves others and the store may change: each page resumes after the last
    key written, so no key is listed twice.
    """
    resp = web.StreamResponse(headers={"Content-Type": f"{JSON}; charset=utf-8"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(head)
    draw = render if render is not None else _render(shape)
    first = True
    while True:
        page, after = await data.scan(after, STREAM_PAGE, pattern)
        if page:
            chunk = draw(page)
            await resp.write(chunk if first else b"," + chunk)
            first = False
        if after is None:
            break
        await asyncio.sleep(0)
    await resp.write(tail)
    await resp.write_eof()
    return resp
