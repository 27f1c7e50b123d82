"""Authentication of node-to-node HTTP bodies with the shared cluster key.

When `--cluster-key` is set, every replication, snapshot and anti-entropy request carries
`X-KV-Signature: hex(HMAC-SHA256(key, method + path + body))`; a request without a valid one is
refused and counted, so a node that does not know the key can neither write data nor learn it.
With no key configured every request is accepted (a trusted network, like Redis without AUTH).
Gossip datagrams and push/pull bodies are signed inside the packet instead (messages.py).
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-KV-Signature"


def signature(key: str, method: str, path: str, body: bytes) -> str:
    mac = hmac.new(key.encode(), digestmod=hashlib.sha256)
    mac.update(method.upper().encode() + b" " + path.encode() + b"\n")
    mac.update(body)
    return mac.hexdigest()


def valid(key: str | None, method: str, path: str, body: bytes, sig: str | None) -> bool:
    """True if no key is configured, or `sig` is the signature of this request."""
    if key is None:
        return True
    if not sig:
        return False
    return hmac.compare_digest(signature(key, method, path, body), sig)
