"""RESP on the wire: requests in (hiredis's Reader, and inline commands), replies out. Pure.

Requests are RESP arrays of bulk strings, parsed by hiredis's C `Reader`; a request that does not
start with `*` is an inline command (`PING\\r\\n`, as telnet and redis-benchmark's PING_INLINE
send), split on whitespace. Memory is bounded: a request may hold at most `max_request` bytes,
however its lengths are declared; past that, or on any malformed frame, the decoder yields a
`ProtocolError` and decodes nothing more (Redis closes such a connection, and so does the server).

Replies are encoded for the connection's protocol version: RESP2, or RESP3 after `HELLO 3`
(a null is `_`, a map is `%`, where RESP2 has `$-1` and a flat array).
"""

from __future__ import annotations

from collections.abc import Iterable

import hiredis

CRLF = b"\r\n"
OK = b"+OK\r\n"
QUEUED = b"+QUEUED\r\n"
PONG = b"+PONG\r\n"


class ProtocolError(Exception):
    """Bytes that are not a RESP request; the connection is closed after answering it."""


Request = list[bytes]


class RequestDecoder:
    """Bytes to requests, in order; bounded memory.

    A connection speaks RESP arrays or inline commands, decided by its first byte (`*`: arrays),
    as every client does; Redis allows mixing them, which no client needs.
    """

    __slots__ = ("_buf", "_failed", "_fed", "_inline", "_reader", "max_request")

    def __init__(self, max_request: int) -> None:
        self.max_request = max_request
        self._reader = hiredis.Reader(notEnoughData=False)
        self._inline: bool | None = None  # decided by the first byte
        self._buf = b""  # an unfinished inline command
        self._fed = 0  # bytes fed to the reader without a complete request coming out
        self._failed = False

    def feed(self, data: bytes) -> list[Request | ProtocolError]:
        out: list[Request | ProtocolError] = []
        if self._failed or not data:
            return out
        if self._inline is None:
            first = data.lstrip(b"\r\n")[:1]
            if not first:
                return out
            self._inline = first != b"*"
        if self._inline:
            return self._feed_inline(data, out)
        self._fed += len(data)
        self._reader.feed(data)
        while True:
            try:
                request = self._reader.gets()
            except hiredis.ProtocolError as exc:
                return self._fail(out, str(exc) or "invalid request")
            if request is False:
                break
            self._fed = 0
            if type(request) is not list:
                return self._fail(out, "expected an array of bulk strings")
            for arg in request:
                if type(arg) is not bytes:
                    return self._fail(out, "expected an array of bulk strings")
            if request:
                out.append(request)
        if self._fed > self.max_request:
            return self._fail(out, f"request larger than {self.max_request} bytes")
        return out

    def _feed_inline(
        self, data: bytes, out: list[Request | ProtocolError]
    ) -> list[Request | ProtocolError]:
        buf = self._buf + data if self._buf else data
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1 :]
            if len(line) > self.max_request:
                return self._fail(out, "too big inline request")
            args = line.strip().split()
            if args:
                out.append(args)
        if len(buf) > self.max_request:
            return self._fail(out, "too big inline request")
        self._buf = buf
        return out

    def _fail(self, out: list[Request | ProtocolError], why: str) -> list[Request | ProtocolError]:
        self._failed = True
        out.append(ProtocolError(why))
        return out


# --- replies --------------------------------------------------------------------------------------


def simple(text: str) -> bytes:
    return b"+" + text.encode() + CRLF


def error(text: str) -> bytes:
    """`text` starts with the error's code word (ERR, WRONGPASS, EXECABORT, ...)."""
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode() + CRLF


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def bulk(value: str | bytes | None, proto: int) -> bytes:
    if value is None:
        return b"_\r\n" if proto == 3 else b"$-1\r\n"
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(items: Iterable[bytes]) -> bytes:
    """An array of already encoded replies."""
    items = list(items)
    return b"*%d\r\n" % len(items) + b"".join(items)


def null_array(proto: int) -> bytes:
    return b"_\r\n" if proto == 3 else b"*-1\r\n"


def mapping(pairs: Iterable[tuple[bytes, bytes]], proto: int) -> bytes:
    """A map of encoded keys to encoded values: `%` in RESP3, a flat array in RESP2."""
    pairs = list(pairs)
    head = b"%%%d\r\n" % len(pairs) if proto == 3 else b"*%d\r\n" % (2 * len(pairs))
    return head + b"".join(k + v for k, v in pairs)


def verbatim(text: str, proto: int) -> bytes:
    """Text for people (INFO, CLIENT INFO): a verbatim string in RESP3, a bulk in RESP2."""
    data = text.encode()
    if proto == 3:
        return b"=%d\r\ntxt:%s\r\n" % (len(data) + 4, data)
    return bulk(data, proto)
