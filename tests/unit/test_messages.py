"""Wire format: round trips, the append-only tag table, and one error type for every bad input."""

from __future__ import annotations

import contextlib
import dataclasses

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.membership import messages as m
from cluster.membership.messages import (
    MESSAGE_TYPES,
    Ack,
    Alive,
    Dead,
    DecodeError,
    Leave,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    decode_packet,
    encode_packet,
    encoded_size,
    sign,
    verify,
)

KEY = "correct horse battery staple"

SAMPLES: list[Message] = [
    Ping(1, "n2", "n1", "127.0.0.1:8001"),
    Ack(1, "n2"),
    PingReq(7, "n3", "10.0.0.3:8080", "n1", "10.0.0.1:8080", True),
    Nack(7, "n2"),
    Suspect("n3", 12, "n1"),
    Alive("n3", "node-3.local:8080", 1_700_000_000_123),
    Dead("n3", 12, "n1"),
    Leave("n3", 13, "n3"),
    PushPull(
        "n1",
        "[::1]:8080",
        True,
        False,
        (
            MemberState("n1", "[::1]:8080", "alive", 5),
            MemberState("n2", "10.0.0.2:8080", "left", 9),
            MemberState("ünïcode", "h:1", "suspect", 0),
        ),
    ),
]


def test_the_tag_table_is_append_only() -> None:
    # Changing this list breaks every mixed-version mesh: only ever add at the end.
    names = [cls.__name__ for cls in MESSAGE_TYPES]
    assert names == [
        "Ping",
        "Ack",
        "PingReq",
        "Nack",
        "Suspect",
        "Alive",
        "Dead",
        "Leave",
        "PushPull",
    ]


def test_decoders_match_the_dataclass_fields() -> None:
    for cls in MESSAGE_TYPES:
        assert len(m._DECODERS[cls]) == len(dataclasses.fields(cls)), cls.__name__


@pytest.mark.parametrize("key", [None, KEY, b"\x00binary key"])
@pytest.mark.parametrize("msg", SAMPLES, ids=lambda x: type(x).__name__)
def test_round_trip(msg: Message, key: str | bytes | None) -> None:
    data = encode_packet([msg], key, sent_ms=1_700_000_000_000)
    packet = decode_packet(data, key, max_size=m.MAX_PUSH_PULL)
    assert packet.messages == (msg,)
    assert packet.sent_ms == 1_700_000_000_000


def test_a_compound_packet_keeps_order_and_fits_its_estimate() -> None:
    data = encode_packet(SAMPLES[:-1], None, sent_ms=1_700_000_000_000)
    assert decode_packet(data, None).messages == tuple(SAMPLES[:-1])
    estimate = m.PACKET_OVERHEAD + sum(encoded_size(x) for x in SAMPLES[:-1])
    assert len(data) <= estimate


def test_messages_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SAMPLES[0].seq = 2  # type: ignore[misc, union-attr]


def test_sign_and_verify() -> None:
    signed = sign(KEY, b"payload")
    assert verify(KEY, signed) == b"payload"
    assert verify("other key", signed) is None
    assert verify(KEY, signed[:-1]) is None
    assert verify(KEY, signed[:-1] + b"X") is None
    assert verify(KEY, b"payload") is None
    assert verify(KEY, b"") is None
    assert verify(KEY.encode(), signed) == b"payload"  # str and bytes keys agree


def _reason(data: bytes, key: str | None = None, max_size: int = m.MAX_DATAGRAM) -> str:
    with pytest.raises(DecodeError) as info:
        decode_packet(data, key, max_size)
    return info.value.reason


GOOD = encode_packet([Ping(1, "n2", "n1", "127.0.0.1:8001")], None, 5)


def _plain(raw: object) -> bytes:
    return m.PLAIN + orjson.dumps(raw)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (m.PLAIN, "truncated"),
        (GOOD[:-1], "malformed"),  # truncated JSON
        (b"\x02" + GOOD[1:], "malformed"),  # unknown format marker
        (m.PLAIN + b"\xff\xfe", "malformed"),
        (_plain({"v": 1}), "malformed"),
        (_plain([1, 5]), "malformed"),  # no message
        (_plain([2, 5, [1, 1, "n1"]]), "version"),
        (_plain([True, 5, [1, 1, "n1"]]), "version"),
        (_plain([1, -5, [1, 1, "n1"]]), "malformed"),
        (_plain([1, 5, [99, 1, "n1"]]), "malformed"),  # unknown tag
        (_plain([1, 5, [-1, 1, "n1"]]), "malformed"),
        (_plain([1, 5, [1, 1]]), "malformed"),  # too few fields
        (_plain([1, 5, [1, 1, "n1", 3]]), "malformed"),  # too many
        (_plain([1, 5, [1, "1", "n1"]]), "malformed"),  # wrong type
        (_plain([1, 5, [1, True, "n1"]]), "malformed"),  # bool is not an int here
        (_plain([1, 5, [1, 1.5, "n1"]]), "malformed"),
        (m.PLAIN + b'[1,5,[1,18446744073709551616,"n1"]]', "malformed"),
        (_plain([1, 5, [1, 2**63, "n1"]]), "malformed"),
        (_plain([1, 5, [1, 1, ""]]), "malformed"),  # empty name
        (_plain([1, 5, [1, 1, "x" * 300]]), "malformed"),
        (_plain([1, 5, [5, "n", "no-port", 1]]), "malformed"),
        (_plain([1, 5, [5, "n", "h:99999", 1]]), "malformed"),
        (_plain([1, 5, [5, "n", "h:²", 1]]), "malformed"),
        (_plain([1, 5, [8, "n", "h:1", False, False, [["a", "h:1", "zombie", 1]]]]), "malformed"),
        (_plain([1, 5, [8, "n", "h:1", False, False, [["a", "h:1", "alive"]]]]), "malformed"),
        (_plain([1, 5, [8, "n", "h:1", False, False, {"a": 1}]]), "malformed"),
        (_plain([1, 5, [8, "n", "h:1", 0, False, []]]), "malformed"),
        (m.PLAIN + b"[" * 5000 + b"]" * 5000, "malformed"),  # nesting beyond the parser's limit
        (m.PLAIN + b"[1e400]", "malformed"),
    ],
)
def test_bad_input_raises_the_one_error(data: bytes, reason: str) -> None:
    assert _reason(data) == reason


def test_oversized() -> None:
    assert _reason(GOOD, max_size=len(GOOD) - 1) == "oversized"
    assert _reason(b"\x00" + b" " * (m.MAX_DATAGRAM + 1)) == "oversized"


def test_authentication() -> None:
    signed = encode_packet([Ack(1, "n1")], KEY, 5)
    assert decode_packet(signed, KEY).messages == (Ack(1, "n1"),)
    assert _reason(signed, "another key") == "auth"
    assert _reason(GOOD, KEY) == "auth"  # unsigned, but we need a key
    assert _reason(signed, None) == "auth"  # signed, but we have no key
    tampered = signed[:-3] + b"9]]"
    assert _reason(tampered, KEY) == "auth"
    assert _reason(signed[:20], KEY) == "truncated"
    # A valid signature over a body that is not a packet is still the one error.
    assert _reason(sign(KEY, b"not json"), KEY) == "malformed"


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    for key in (None, KEY):
        with contextlib.suppress(DecodeError):
            decode_packet(data, key)


@given(st.binary(max_size=512))
def test_arbitrary_bodies_behind_the_markers(body: bytes) -> None:
    # Authentic packets whose body is garbage: never an auth failure, never another exception.
    for data, key in ((m.PLAIN + body, None), (sign(KEY, body), KEY)):
        reason = None
        try:
            decode_packet(data, key)
        except DecodeError as exc:
            reason = exc.reason
        assert reason in (None, "truncated", "malformed", "version")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6),
    max_leaves=30,
)


@given(st.lists(json_values, max_size=6))
def test_arbitrary_json_arrays(tail: list[object]) -> None:
    # Well-formed JSON of the right outer shape but arbitrary content: the decoder's checks.
    for head in ([1, 5], [1, 5, [0, 1, "a", "b", "h:1"]]):
        try:
            decode_packet(m.PLAIN + orjson.dumps(head + tail), None)
        except DecodeError:
            pass
        except orjson.JSONEncodeError:  # the strategy made something JSON cannot carry
            pass
