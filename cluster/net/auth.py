"""Authentication of node-to-node HTTP bodies with the shared cluster key.

When `--cluster-key` is set, every replication, snapshot and anti-entropy request carries
`X-KV-Signature: hex(HMAC-SHA256(key, method + path + sent time + body))`, the sent time (ms) in
`X-KV-Time`, accepted within REPLAY_WINDOW of the receiver's clock; any other request is refused
and counted, so a node that does not know the key can neither write data nor learn it.
With no key configured every request is accepted (a trusted network, like Redis without AUTH).
Gossip datagrams and push/pull bodies are signed inside the packet instead (messages.py).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

HEADER = "X-KV-Signature"
TIME_HEADER = "X-KV-Time"  # the sender's wall clock in ms, signed: bounds replays
REPLAY_WINDOW = 120.0  # seconds a signed request stays acceptable


def signature(key: str, method: str, path: str, body: bytes, sent_ms: int = 0) -> str:
    mac = hmac.new(key.encode(), digestmod=hashlib.sha256)
    mac.update(b"%s %s %d\n" % (method.upper().encode(), path.encode(), sent_ms))
    mac.update(body)
    return mac.hexdigest()


def stamp(key: str | None, method: str, path: str, body: bytes, wall: float) -> dict[str, str]:
    """The signature headers of a request sent now (none without a key)."""
    if key is None:
        return {}
    sent_ms = int(wall * 1000)
    return {TIME_HEADER: str(sent_ms), HEADER: signature(key, method, path, body, sent_ms)}


def valid(
    key: str | None,
    method: str,
    path: str,
    body: bytes,
    sig: str | None,
    sent_ms: str | None = None,
    now: float | None = None,
) -> bool:
    """True if no key is configured, or `sig` signs this request and it was sent within the
    replay window of `now` (epoch seconds; the receiver's wall clock)."""
    if key is None:
        return True
    if not sig or sent_ms is None or not sent_ms.isdigit():
        return False
    if now is not None and abs(now - int(sent_ms) / 1000.0) > REPLAY_WINDOW:
        return False
    return hmac.compare_digest(signature(key, method, path, body, int(sent_ms)), sig)


# What a joiner is told when a seed refuses it, or answers in a key it cannot verify.
KEYS_DIFFER = "refused our signature: the cluster keys differ"


@dataclass(slots=True)
class RefusalLog:
    """When to log refused senders: once per `interval` per address, with the count since.

    A node with the wrong cluster key retries forever and gossip sends many packets a second:
    logging each one would bury the log. Pure: the caller passes `now`.
    """

    interval: float = 10.0
    _last: dict[str, tuple[float, int]] = field(default_factory=dict)  # address -> (logged, n)

    def refused(self, address: str, now: float) -> int | None:
        """Count one refusal from `address`; the count to log if a line is due, else None."""
        logged, count = self._last.get(address, (float("-inf"), 0))
        count += 1
        if now - logged >= self.interval:
            self._last[address] = (now, 0)
            if len(self._last) > 1024:  # many senders (a scan): forget the quiet ones
                horizon = now - self.interval
                self._last = {a: v for a, v in self._last.items() if v[0] >= horizon}
            return count
        self._last[address] = (logged, count)
        return None
