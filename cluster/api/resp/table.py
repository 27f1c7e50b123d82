"""The RESP command table and what every command handler works with. Pure (no IO).

Each handler reads and writes through the call's `Staged` write set (so the same handler serves a
lone command and a command inside MULTI/EXEC) and returns its encoded reply; a handler that writes
outside the write set (FLUSHDB: the mesh-wide clear) returns its batch too. Keys and values are
checked by the same `KV` rules as HTTP and the line protocol (length limits, valid UTF-8), and their
errors read the same, after Redis's `ERR`. Where clients parse Redis's own error texts (arity,
syntax, integers, AUTH, MULTI), those texts are kept.

"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from cluster.core.kv import KV, Batch, Staged
from cluster.core.store import Version
from cluster.membership.swim import Member

REDIS_VERSION: Final = "7.4.0"  # what we tell clients that branch on the server version


class RespError(Exception):
    """An error reply with Redis's text (its first word is the code: ERR, WRONGPASS, ...)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class Mesh(Protocol):
    """What INFO shows of the mesh (cluster.lifecycle.Lifecycle)."""

    def members(self) -> list[Member]: ...

    def alive_members(self) -> int: ...

    def replication_stats(self) -> dict[str, float]:
        """replication_* figures: peers, writes queued for them (the lag), requests."""
        ...


@dataclass(slots=True)
class Client:
    """What a connection negotiated and holds between commands."""

    id: int
    authed: bool
    proto: int = 2
    name: str = ""
    lib: str = ""
    multi: list[list[bytes]] | None = None  # queued commands, inside MULTI
    multi_failed: bool = False  # a command was refused while queueing: EXEC aborts
    watched: dict[str, Version | None] = field(default_factory=dict)


@dataclass(slots=True)
class Context:
    """What every connection of one server shares."""

    name: str
    kv: KV
    mesh: Mesh
    password: str | None
    started: float  # wall clock when the server started, for INFO
    clients: int = 0


@dataclass(slots=True)
class Call:
    """One command being run: its arguments, the client, and the write set it works on."""

    ctx: Context
    client: Client
    staged: Staged
    args: list[bytes]
    close: bool = False  # close the connection after the reply (QUIT)

    @property
    def proto(self) -> int:
        return self.client.proto

    def text(self, i: int) -> str:
        try:
            return self.args[i].decode("utf-8")
        except UnicodeDecodeError:
            raise RespError("ERR the argument is not valid UTF-8") from None

    def key(self, i: int) -> str:
        return self.ctx.kv.check_key(self.text(i))

    def value(self, i: int) -> str:
        return self.ctx.kv.check_value(self.text(i))

    def word(self, i: int) -> str:
        return self.args[i].decode("latin-1").upper()

    def integer(self, i: int) -> int:
        raw = self.args[i]
        try:
            n = int(raw)
        except ValueError:
            raise RespError("ERR value is not an integer or out of range") from None
        if not -(1 << 63) <= n < (1 << 63) or raw.strip() != raw:
            raise RespError("ERR value is not an integer or out of range")
        return n


Result = tuple[bytes, Batch | None]
Handler = Callable[[Call], Result]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    arity: int  # Redis's: exact when positive, a minimum when negative (the name included)
    run: Handler
    queueable: bool = True  # may be queued inside MULTI

    def arity_ok(self, n: int) -> bool:
        return n == self.arity if self.arity > 0 else n >= -self.arity


COMMANDS: dict[str, Command] = {}


def command(name: str, arity: int, queueable: bool = True) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, arity, handler, queueable)
        return handler

    return register


def done(line: bytes) -> Result:
    return line, None
