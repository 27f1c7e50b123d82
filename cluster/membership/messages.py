"""Gossip wire messages, their encoding, and the HMAC envelope; no IO.

A datagram (and a push/pull HTTP body) is one *packet*: a one-byte format marker, an optional
HMAC-SHA256 tag, and a compact JSON array:

    0x00 body                       no cluster key
    0x01 tag[32] body               tag = HMAC-SHA256(key, 0x01 + body)
    body = [VERSION, sent_ms, [type_tag, field, ...], [type_tag, field, ...], ...]

Each message is an array of its dataclass fields in declaration order behind its type tag, so
a packet of a ping plus a dozen piggybacked updates fits in one 1,400-byte datagram. `sent_ms`
is the sender's wall clock: with a key, the IO layer drops packets older than its replay window
(every message is also idempotent under incarnation ordering, so a replay inside the window changes
nothing that a retransmission would not).

What must stay true
- Type tags are indexes into `MESSAGE_TYPES`: ONLY APPEND TO THAT LIST, never reorder or reuse.
  A change to a message's fields is a new `VERSION`.
- `decode_packet` raises `DecodeError` and nothing else, whatever the bytes: garbage, truncated,
  oversized, wrong types, unknown tags, a bad or missing HMAC. Its `reason` says which, so the IO
  layer counts drops by cause.
- A node with a key accepts only packets signed with that key; a node without one accepts only
  unsigned packets. Two meshes with different keys never exchange a single message.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final, Literal

import orjson

from cluster.core.addresses import parse_hostport
from cluster.errors import AddressError, DecodeError

VERSION: Final = 1
MAX_DATAGRAM: Final = 65_507  # the largest UDP payload over IPv4
MAX_PUSH_PULL: Final = 8 * 1024 * 1024  # bytes of one push/pull HTTP body
MAX_NAME: Final = 256  # characters of a node name
MAX_ADDRESS: Final = 300  # characters of a "host:port" address
MAX_UINT: Final = 2**63 - 1  # incarnations and sequence numbers fit a signed 64-bit int

PLAIN: Final = b"\x00"  # format markers; also append-only
SIGNED: Final = b"\x01"
TAG_BYTES: Final = 32

STATES: Final = ("alive", "suspect", "dead", "left")
Key = str | bytes
Reason = Literal["oversized", "truncated", "malformed", "auth", "version"]


# --- the messages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Are you alive? `target` names the intended node: a new owner of the address ignores it."""

    seq: int
    target: str
    source: str
    source_address: str


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a ping (or a relayed answer to a ping-req), matched by `seq`."""

    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class PingReq:
    """Please ping `target` for me and relay its ack; send a nack if `nack` and none comes."""

    seq: int
    target: str
    target_address: str
    source: str
    source_address: str
    nack: bool


@dataclass(frozen=True, slots=True)
class Nack:
    """Lifeguard: I tried your ping-req and got nothing. Proves the relay (and we) are fine."""

    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Suspect:
    """`sender` suspects `node` at `incarnation`; the node refutes with a higher incarnation."""

    node: str
    incarnation: int
    sender: str


@dataclass(frozen=True, slots=True)
class Alive:
    """`node` is alive at `address` with `incarnation` (a join, a refutation, a rejoin)."""

    node: str
    address: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class Dead:
    """`sender` declares `node` dead at `incarnation` (its suspicion timed out)."""

    node: str
    incarnation: int
    sender: str


@dataclass(frozen=True, slots=True)
class Leave:
    """An intent: `node` leaves at `incarnation`. `sender == node` is a graceful leave; otherwise
    `sender` removed it by force (the incarnation is one past what it knew, so the member's own
    alive message at that incarnation cannot undo it)."""

    node: str
    incarnation: int
    sender: str


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member as a full state exchange carries it."""

    name: str
    address: str
    state: str  # one of STATES
    incarnation: int


@dataclass(frozen=True, slots=True)
class PushPull:
    """A full state exchange (over HTTP). The request has `reply` False; the answer True.

    `join` marks the first exchange of a joining node (a left node accepts only those).
    """

    sender: str
    address: str
    join: bool
    reply: bool
    members: tuple[MemberState, ...]


Message = Ping | Ack | PingReq | Nack | Suspect | Alive | Dead | Leave | PushPull

# ONLY APPEND TO THIS LIST: a message's type tag is its index here, on the wire, forever.
MESSAGE_TYPES: Final[tuple[type[Message], ...]] = (
    Ping,  # 0
    Ack,  # 1
    PingReq,  # 2
    Nack,  # 3
    Suspect,  # 4
    Alive,  # 5
    Dead,  # 6
    Leave,  # 7
    PushPull,  # 8
)
_TAG_OF: Final[dict[type[Message], int]] = {cls: i for i, cls in enumerate(MESSAGE_TYPES)}
_FIELDS: Final[dict[type[Message], tuple[str, ...]]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in MESSAGE_TYPES
}


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded datagram: the sender's wall clock in ms and its messages, in order."""

    sent_ms: int
    messages: tuple[Message, ...]


# --- encoding -------------------------------------------------------------------------------------


def _wire(msg: Message) -> list[object]:
    if isinstance(msg, PushPull):
        members = [[m.name, m.address, m.state, m.incarnation] for m in msg.members]
        return [_TAG_OF[PushPull], msg.sender, msg.address, msg.join, msg.reply, members]
    cls = type(msg)
    return [_TAG_OF[cls], *(getattr(msg, name) for name in _FIELDS[cls])]


def encoded_size(msg: Message) -> int:
    """Bytes `msg` adds to a packet body (its JSON array plus the separating comma)."""
    return len(orjson.dumps(_wire(msg))) + 1


PACKET_OVERHEAD: Final = 1 + TAG_BYTES + 32  # marker, tag, "[1,<13-digit ms>," and "]"


def encode_packet(
    messages: tuple[Message, ...] | list[Message], key: Key | None, sent_ms: int
) -> bytes:
    """One packet of `messages`, signed when `key` is set."""
    body = orjson.dumps([VERSION, sent_ms, *(_wire(m) for m in messages)])
    if key is None:
        return PLAIN + body
    return sign(key, body)


# --- the HMAC envelope (reused for replication bodies) --------------------------------------------


def _key_bytes(key: Key) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


def sign(key: Key, payload: bytes) -> bytes:
    """`payload` behind the SIGNED marker and its HMAC-SHA256 tag."""
    tag = hmac.new(_key_bytes(key), SIGNED + payload, hashlib.sha256).digest()
    return SIGNED + tag + payload


def verify(key: Key, data: bytes) -> bytes | None:
    """The payload of data made by `sign(key, ...)`, or None if it is not exactly that."""
    if len(data) < 1 + TAG_BYTES or data[:1] != SIGNED:
        return None
    tag, payload = data[1 : 1 + TAG_BYTES], data[1 + TAG_BYTES :]
    expected = hmac.new(_key_bytes(key), SIGNED + payload, hashlib.sha256).digest()
    return payload if hmac.compare_digest(tag, expected) else None


# --- decoding -------------------------------------------------------------------------------------

_Field = Callable[[object], object]


def _bad(detail: str) -> DecodeError:
    return DecodeError(reason="malformed", detail=detail)


def _name(v: object) -> str:
    if type(v) is not str or not 0 < len(v) <= MAX_NAME:
        raise _bad("a name must be a non-empty string")
    return v


def _address(v: object) -> str:
    if type(v) is not str or not 0 < len(v) <= MAX_ADDRESS:
        raise _bad("an address must be a non-empty string")
    try:
        parse_hostport(v)
    except AddressError:
        raise _bad(f"an address must be host:port, got {v[:40]!r}") from None
    return v


def _uint(v: object) -> int:
    if type(v) is not int or not 0 <= v <= MAX_UINT:
        raise _bad("expected a non-negative 64-bit integer")
    return v


def _bool(v: object) -> bool:
    if type(v) is not bool:
        raise _bad("expected a boolean")
    return v


def _state(v: object) -> str:
    if v not in STATES or type(v) is not str:
        raise _bad("unknown member state")
    return v


def _members(v: object) -> tuple[MemberState, ...]:
    if type(v) is not list:
        raise _bad("members must be a list")
    out = []
    for item in v:
        if type(item) is not list or len(item) != 4:
            raise _bad("a member must be [name, address, state, incarnation]")
        out.append(MemberState(_name(item[0]), _address(item[1]), _state(item[2]), _uint(item[3])))
    return tuple(out)


# Field decoders per type, in field order (a unit test checks they match the dataclasses).
_DECODERS: Final[dict[type[Message], tuple[_Field, ...]]] = {
    Ping: (_uint, _name, _name, _address),
    Ack: (_uint, _name),
    PingReq: (_uint, _name, _address, _name, _address, _bool),
    Nack: (_uint, _name),
    Suspect: (_name, _uint, _name),
    Alive: (_name, _address, _uint),
    Dead: (_name, _uint, _name),
    Leave: (_name, _uint, _name),
    PushPull: (_name, _address, _bool, _bool, _members),
}


def _message(raw: object) -> Message:
    if type(raw) is not list or not raw:
        raise _bad("a message must be a non-empty array")
    tag = raw[0]
    if type(tag) is not int or not 0 <= tag < len(MESSAGE_TYPES):
        raise _bad(f"unknown message type {str(tag)[:20]}")
    cls = MESSAGE_TYPES[tag]
    decoders = _DECODERS[cls]
    if len(raw) != len(decoders) + 1:
        raise _bad(f"{cls.__name__} needs {len(decoders)} fields, got {len(raw) - 1}")
    args: list[Any] = [decode(value) for decode, value in zip(decoders, raw[1:], strict=True)]
    return cls(*args)


def decode_packet(data: bytes, key: Key | None, max_size: int = MAX_DATAGRAM) -> Packet:
    """Check, authenticate and decode one packet; raise DecodeError for anything else."""
    if len(data) > max_size:
        raise DecodeError(reason="oversized", detail=f"{len(data)} bytes > {max_size}")
    if not data:
        raise DecodeError(reason="truncated", detail="empty packet")
    marker = data[:1]
    if key is None:
        if marker == SIGNED:
            raise DecodeError(
                reason="auth", detail="a signed packet but no cluster key is configured"
            )
        if marker != PLAIN:
            raise DecodeError(reason="malformed", detail="unknown packet format")
        body = data[1:]
    else:
        if marker != SIGNED:
            raise DecodeError(
                reason="auth", detail="an unsigned packet but a cluster key is configured"
            )
        if len(data) < 1 + TAG_BYTES:
            raise DecodeError(reason="truncated", detail="shorter than its HMAC")
        verified = verify(key, data)
        if verified is None:
            raise DecodeError(reason="auth", detail="bad HMAC")
        body = verified
    if not body:
        raise DecodeError(reason="truncated", detail="no body")
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(reason="malformed", detail=f"not JSON ({exc})") from None
    if type(raw) is not list or len(raw) < 3:
        raise _bad("a packet must be [version, sent_ms, message, ...]")
    if raw[0] != VERSION or type(raw[0]) is not int:
        raise DecodeError(reason="version", detail=f"unsupported version {str(raw[0])[:20]}")
    return Packet(_uint(raw[1]), tuple(_message(m) for m in raw[2:]))
