"""The small pure helpers of the core: jittered backoff, the host:port parser, the cursor codec."""

from __future__ import annotations

import random

import pytest

from cluster.core.addresses import format_hostport, parse_hostport
from cluster.core.backoff import backoff, ceiling
from cluster.core.cursor import decode_cursor, encode_cursor
from cluster.errors import AddressError, DecodeError


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "step"),
    [
        (1, 0.1, 5.0, 0.1),
        (2, 0.1, 5.0, 0.2),
        (3, 0.1, 5.0, 0.4),
        (6, 0.1, 5.0, 3.2),
        (7, 0.1, 5.0, 5.0),  # capped
        (10_000, 0.1, 5.0, 5.0),  # no overflow however many attempts
        (1, 0.05, 2.0, 0.05),
    ],
)
def test_the_step_doubles_up_to_the_cap(attempt: int, base: float, cap: float, step: float) -> None:
    assert ceiling(attempt, base, cap) == pytest.approx(step)
    assert backoff(attempt, base, cap, None) == pytest.approx(step)


def test_jitter_stays_in_the_upper_half_of_the_step_and_is_seeded() -> None:
    delays = [backoff(4, 0.1, 5.0, random.Random(i)) for i in range(200)]
    assert all(0.4 <= d <= 0.8 for d in delays)
    assert len(set(delays)) > 150  # spread out: no lockstep retries
    assert backoff(4, 0.1, 5.0, random.Random(7)) == backoff(4, 0.1, 5.0, random.Random(7))


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        ceiling(0, 0.1, 1.0)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("node-1.mesh:1", ("node-1.mesh", 1)),
        ("[::1]:8080", ("::1", 8080)),
        ("[fe80::1%eth0]:65535", ("fe80::1%eth0", 65535)),
    ],
)
def test_host_port_parses(text: str, parsed: tuple[str, int]) -> None:
    assert parse_hostport(text) == parsed
    assert parse_hostport(format_hostport(*parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("localhost", "expected host:port"),
        (":8080", "expected host:port"),
        ("host:", "expected host:port"),
        ("host:http", "expected host:port"),
        ("host:0", "1..65535"),
        ("host:65536", "1..65535"),
        ("::1:8080", "needs brackets"),
        ("[::1:8080", "expected"),
        ("[]:80", "expected"),
        ("host:٣", "expected host:port"),  # a Unicode digit is no port
    ],
)
def test_a_bad_address_names_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        parse_hostport(text)


def test_port_zero_only_where_allowed() -> None:
    assert parse_hostport("127.0.0.1:0", allow_zero=True) == ("127.0.0.1", 0)


@pytest.mark.parametrize("key", ["a", "key with spaces", "ключ", "🔑/%2F?&=", "x" * 300])
def test_a_cursor_round_trips(key: str) -> None:
    cursor = encode_cursor(key)
    assert "=" not in cursor
    assert decode_cursor(cursor) == key


@pytest.mark.parametrize("cursor", ["", "@@@", "YQ=", "YQ==", "_w", "gA"])
def test_a_cursor_this_codec_did_not_make_is_refused(cursor: str) -> None:
    with pytest.raises(DecodeError):
        decode_cursor(cursor)
