"""The RESP codec on its own: requests in any chunking give the same commands; bad bytes give one
ProtocolError and nothing after; replies are encoded per protocol version."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cluster.api.resp import codec


def encode(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


requests = st.lists(
    st.lists(st.binary(max_size=40), min_size=1, max_size=5), min_size=1, max_size=20
)


@given(requests, st.data())
def test_any_chunking_decodes_the_same_requests(
    reqs: list[list[bytes]], data: st.DataObject
) -> None:
    stream = b"".join(encode(*r) for r in reqs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = codec.RequestDecoder(max_request=1 << 20)
    out: list[object] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[a:b])
    assert out == reqs


@given(st.binary(max_size=300), st.integers(1, 50))
def test_any_bytes_give_requests_or_one_protocol_error_never_an_exception(
    data: bytes, chunk: int
) -> None:
    decoder = codec.RequestDecoder(max_request=256)
    out: list[object] = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i : i + chunk])
    errors = [i for i, item in enumerate(out) if isinstance(item, codec.ProtocolError)]
    assert errors in ([], [len(out) - 1])  # at most one, and nothing after it
    assert all(isinstance(x, list) and x for x in out if not isinstance(x, codec.ProtocolError))


def test_a_request_over_the_bound_is_refused_without_waiting_for_it() -> None:
    decoder = codec.RequestDecoder(max_request=100)
    out = decoder.feed(b"*1\r\n$1000000\r\n" + b"x" * 200)
    assert len(out) == 1
    assert isinstance(out[0], codec.ProtocolError)
    assert decoder.feed(encode(b"PING")) == []  # the connection is done


def test_inline_commands() -> None:
    decoder = codec.RequestDecoder(max_request=100)
    assert decoder.feed(b"PING\r\nSET a  b\r\n\r\nGE") == [[b"PING"], [b"SET", b"a", b"b"]]
    assert decoder.feed(b"T a\n") == [[b"GET", b"a"]]


def test_replies_per_protocol() -> None:
    assert codec.bulk(None, 2) == b"$-1\r\n"
    assert codec.bulk(None, 3) == b"_\r\n"
    assert codec.bulk("é", 2) == b"$2\r\n\xc3\xa9\r\n"
    assert codec.mapping([(b"+a\r\n", b":1\r\n")], 3) == b"%1\r\n+a\r\n:1\r\n"
    assert codec.mapping([(b"+a\r\n", b":1\r\n")], 2) == b"*2\r\n+a\r\n:1\r\n"
    assert codec.null_array(2) == b"*-1\r\n"
    assert codec.error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"
    assert codec.verbatim("hi", 3) == b"=6\r\ntxt:hi\r\n"
