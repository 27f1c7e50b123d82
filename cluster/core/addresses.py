"""The one parser of "host:port" addresses (seeds, --advertise, gossip and peer addresses).

IPv6 literals are written in brackets, as in URLs ("[::1]:8080"); the brackets are removed from the
host returned. Errors say what was expected, so a mistyped --join names itself.
"""

from __future__ import annotations

from cluster.errors import AddressError


def parse_hostport(value: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """'host:port' -> (host, port); AddressError if malformed.

    `allow_zero` accepts port 0 ("any free port", for a node's own address before it binds).
    """
    host, sep, port = value.rpartition(":")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise AddressError(f"expected [ipv6]:port, got {value!r}")
        host = host[1:-1]
    elif ":" in host:
        raise AddressError(f"an IPv6 address needs brackets: [{host}]:{port}, got {value!r}")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise AddressError(f"expected host:port, got {value!r}")
    number = int(port)
    if not (0 if allow_zero else 1) <= number <= 65535:
        raise AddressError(f"the port must be 1..65535, got {value!r}")
    return host, number


def format_hostport(host: str, port: int) -> str:
    """(host, port) -> 'host:port', bracketing an IPv6 literal."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
