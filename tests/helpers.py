"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import urllib.request
from urllib.parse import quote

from yarl import URL


def key_url(key: str, prefix: str = "/keys/") -> URL:
    """The URL of `key` under `prefix`, every reserved character percent-encoded.

    Passed to the client already encoded: yarl would otherwise remove the dot segments `.` and
    `..` (RFC 3986 5.2.4) and those two keys could not be addressed. For them the dots are sent as
    `%2E`, which the server decodes; any other key is exactly `quote(key, safe="")`.
    """
    segment = quote(key, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return URL(prefix + segment, encoded=True)


def scrape_metrics(url: str, timeout: float = 10.0) -> dict[str, float]:
    """The unlabelled series of a node's Prometheus `/metrics` at `url`, by name."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
