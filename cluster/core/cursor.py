"""The one cursor codec: listing pages (GET /keys?cursor=) and snapshot pages resume after a key.

A cursor is the key, UTF-8, base64url without padding. Decoding is strict: only what `encode`
could have produced is accepted, so a mangled cursor is an error instead of silently restarting or
skipping part of a scan.
"""

from __future__ import annotations

import base64
import binascii

from cluster.errors import DecodeError


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The key a cursor resumes after; DecodeError if this codec could not have produced it."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        key = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        key = ""
    if not key or encode_cursor(key) != cursor:
        raise DecodeError("not a cursor this server returned")
    return key
