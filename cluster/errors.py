"""The error hierarchy of the node, and the one table of machine codes.

    KVError                      every error a client can cause; carries a code and a message
    ├── BadRequest (400)         MISSING_KEY_PARAM, MISSING_VALUE_PARAM, EMPTY_KEY, KEY_TOO_LONG,
    │                            VALUE_TOO_LONG, INVALID_BODY, INVALID_PARAMETER
    ├── BodyTooLarge (413)       BODY_TOO_LARGE
    ├── NotFound (404)           NOT_FOUND
    ├── MethodNotAllowed (405)   METHOD_NOT_ALLOWED
    ├── Unauthorized (401)       UNAUTHORIZED
    ├── NoSeedReachable (502)    NO_SEED_REACHABLE
    ├── SeedRefused (502)        SEED_REFUSED: a seed answered but refused us (the keys differ)
    ├── Unavailable (503)        UNAVAILABLE: the node is still joining (streaming its snapshot)
    ├── StorageUnavailable (503) STORAGE_UNAVAILABLE: the disk copy (--data-dir) takes no writes
    └── Internal (500)           INTERNAL: a bug; logged with a traceback and counted

    DecodeError                  bytes from a peer, or a cursor, that do not decode (every decoder)
    AddressError                 a "host:port" that does not parse
    ClockSkewError               a remote timestamp too far ahead of our clock

`STATUS` maps every code to its HTTP status; `cluster.api.middleware` is the only place that turns
an error into an HTTP reply and `cluster.api.line.grammar.error_reply` the only place that turns it
into a line reply. The message is
the same human text on both.
"""

from __future__ import annotations

from typing import Final

# code -> HTTP status; the single source of truth for both protocols.
STATUS: Final[dict[str, int]] = {
    "MISSING_KEY_PARAM": 400,
    "MISSING_VALUE_PARAM": 400,
    "EMPTY_KEY": 400,
    "KEY_TOO_LONG": 400,
    "VALUE_TOO_LONG": 400,
    "INVALID_BODY": 400,
    "INVALID_PARAMETER": 400,
    "BODY_TOO_LARGE": 413,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "UNAUTHORIZED": 401,
    "NO_SEED_REACHABLE": 502,
    "SEED_REFUSED": 502,
    "UNAVAILABLE": 503,
    "STORAGE_UNAVAILABLE": 503,
    "INTERNAL": 500,
}


class KVError(Exception):
    """An error a client can cause: a machine code plus a message for people."""

    code: str = "INTERNAL"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            if code not in STATUS:
                raise ValueError(f"unknown error code {code!r}")
            self.code = code

    @property
    def status(self) -> int:
        return STATUS[self.code]


class BadRequest(KVError):
    code = "INVALID_PARAMETER"


class BodyTooLarge(KVError):
    code = "BODY_TOO_LARGE"


class NotFound(KVError):
    code = "NOT_FOUND"


class MethodNotAllowed(KVError):
    code = "METHOD_NOT_ALLOWED"


class Unauthorized(KVError):
    code = "UNAUTHORIZED"


class NoSeedReachable(KVError):
    code = "NO_SEED_REACHABLE"


class SeedRefused(KVError):
    """A seed answered but would not take us in; the message names the seed and why."""

    code = "SEED_REFUSED"


class Unavailable(KVError):
    code = "UNAVAILABLE"


class StorageUnavailable(KVError):
    """The disk copy refuses writes (full, failing): writes are refused, reads go on."""

    code = "STORAGE_UNAVAILABLE"


class Internal(KVError):
    code = "INTERNAL"


class DecodeError(ValueError):
    """Bytes from a peer (a gossip packet, a replication body, an anti-entropy or snapshot page)
    or a cursor from a client that do not decode. Never a crash: the message is refused and
    counted under `reason` ("malformed", "truncated", "oversized", "auth", "version").

    The one decode error of the package: every decoder raises it and nothing else.
    """

    def __init__(self, detail: str, reason: str = "malformed") -> None:
        super().__init__(detail if reason == "malformed" else f"{reason}: {detail}")
        self.reason = reason


class AddressError(ValueError):
    """A "host:port" that does not parse; the message says what was expected."""


class ClockSkewError(Exception):
    """A remote timestamp is further ahead of our wall clock than the maximum offset.

    Not a client error: replication and gossip drop the message and log it.
    """
