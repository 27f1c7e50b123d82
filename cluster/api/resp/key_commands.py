"""RESP key commands: GET, SET and its options, GETSET, GETDEL, GETEX, MSET, MGET, DEL, UNLINK,
EXISTS, TYPE, the expiry family, KEYS, SCAN, FLUSHDB/FLUSHALL (the mesh-wide clear). Pure (no IO).

Each handler reads and writes through the call's `Staged` write set, so the same handler serves a
lone command and a command inside MULTI/EXEC. Commands that read, modify and write one key (INCR,
APPEND, ...) are refused: every node accepts writes and the newest write wins, so two nodes
incrementing at once would lose one increment.
"""

from __future__ import annotations

import math
from typing import Final

from cluster.api.resp import codec
from cluster.api.resp.table import (
    COMMANDS,
    Call,
    Command,
    Handler,
    RespError,
    Result,
    command,
    done,
)
from cluster.core.patterns import Pattern, compile_glob

SCAN_COUNT: Final = 10


# --- expiry ---------------------------------------------------------------------------------------


def _expiry(call: Call, unit: str, amount: int, cmd: str) -> float:
    """An absolute expiry from EX/PX (relative) or EXAT/PXAT (absolute)."""
    now = call.ctx.kv.clock.wall()
    seconds = amount / 1000 if unit in ("PX", "PXAT") else float(amount)
    expires = seconds if unit in ("EXAT", "PXAT") else now + seconds
    if amount <= 0 or expires - now > call.ctx.kv.limits.max_ttl:
        raise RespError(f"ERR invalid expire time in '{cmd}' command")
    return expires


def _remaining_ms(call: Call, key: str) -> int:
    """-2 for a missing key, -1 for one without expiry, else the milliseconds left."""
    found = call.staged.get(key)
    if found is None:
        return -2
    if found[1] is None:
        return -1
    return max(0, math.ceil((found[1] - call.ctx.kv.clock.wall()) * 1000))


# --- keys -----------------------------------------------------------------------------------------


@command("GET", 2)
def _get(call: Call) -> Result:
    found = call.staged.get(call.key(1))
    return done(codec.bulk(found[0] if found else None, call.proto))


@command("SET", -3)
def _set(call: Call) -> Result:
    key, value = call.key(1), call.value(2)
    condition, get, keep_ttl = "", False, False
    expires: float | None = None
    timed = False
    i = 3
    while i < len(call.args):
        option = call.word(i)
        if option in ("NX", "XX") and not condition:
            condition = option
        elif option == "GET" and not get:
            get = True
        elif option == "KEEPTTL" and not timed:
            keep_ttl = timed = True
        elif option in ("EX", "PX", "EXAT", "PXAT") and not timed and i + 1 < len(call.args):
            expires = _expiry(call, option, call.integer(i + 1), "set")
            timed = True
            i += 1
        else:
            raise RespError("ERR syntax error")
        i += 1
    if not (condition or get or keep_ttl):  # the common SET: nothing to read first
        call.staged.put(key, value, expires)
        return codec.OK, None
    old = call.staged.get(key)
    if (condition == "NX" and old is not None) or (condition == "XX" and old is None):
        return done(codec.bulk(old[0] if get and old else None, call.proto))
    if keep_ttl and old is not None:
        expires = old[1]
    call.staged.put(key, value, expires)
    return done(codec.bulk(old[0] if old else None, call.proto) if get else codec.OK)


@command("GETSET", 3)
def _getset(call: Call) -> Result:
    key, value = call.key(1), call.value(2)
    old = call.staged.get(key)
    call.staged.put(key, value)
    return done(codec.bulk(old[0] if old else None, call.proto))


@command("GETDEL", 2)
def _getdel(call: Call) -> Result:
    key = call.key(1)
    found = call.staged.get(key)
    if found is not None:
        call.staged.delete(key)
    return done(codec.bulk(found[0] if found else None, call.proto))


@command("GETEX", -2)
def _getex(call: Call) -> Result:
    key = call.key(1)
    found = call.staged.get(key)
    if len(call.args) > 2:
        option = call.word(2)
        if option == "PERSIST" and len(call.args) == 3:
            expires = None
        elif option in ("EX", "PX", "EXAT", "PXAT") and len(call.args) == 4:
            expires = _expiry(call, option, call.integer(3), "getex")
        else:
            raise RespError("ERR syntax error")
        if found is not None:
            call.staged.put(key, found[0], expires)
    return done(codec.bulk(found[0] if found else None, call.proto))


@command("MSET", -3)
def _mset(call: Call) -> Result:
    if len(call.args) % 2 == 0:
        raise RespError("ERR wrong number of arguments for 'mset' command")
    pairs = [(call.key(i), call.value(i + 1)) for i in range(1, len(call.args), 2)]
    for key, value in pairs:  # all checked first: a bad pair stores nothing
        call.staged.put(key, value)
    return done(codec.OK)


@command("MGET", -2)
def _mget(call: Call) -> Result:
    values = []
    for i in range(1, len(call.args)):
        found = call.staged.get(call.key(i))
        values.append(codec.bulk(found[0] if found else None, call.proto))
    return done(codec.array(values))


def _delete(call: Call) -> Result:
    keys = [call.key(i) for i in range(1, len(call.args))]
    deleted = 0
    for key in dict.fromkeys(keys):
        if call.staged.get(key) is not None:
            call.staged.delete(key)
            deleted += 1
    return done(codec.integer(deleted))


command("DEL", -2)(_delete)
command("UNLINK", -2)(_delete)


@command("EXISTS", -2)
def _exists(call: Call) -> Result:
    count = sum(call.staged.get(call.key(i)) is not None for i in range(1, len(call.args)))
    return done(codec.integer(count))


@command("TYPE", 2)
def _type(call: Call) -> Result:
    return done(codec.simple("string" if call.staged.get(call.key(1)) else "none"))


def _expire(call: Call, unit: str, cmd: str) -> Result:
    key, amount = call.key(1), call.integer(2)
    condition = call.word(3) if len(call.args) > 3 else ""
    if len(call.args) > 4 or condition not in ("", "NX", "XX", "GT", "LT"):
        raise RespError("ERR Unsupported option" if condition else "ERR syntax error")
    found = call.staged.get(key)
    if found is None:
        return done(codec.integer(0))
    now = call.ctx.kv.clock.wall()
    scale = 1000 if unit in ("PX", "PXAT") else 1
    at = amount / scale if unit in ("EXAT", "PXAT") else now + amount / scale
    current = found[1]
    skip = (
        (condition == "NX" and current is not None)
        or (condition == "XX" and current is None)
        or (condition == "GT" and (current is None or at <= current))
        or (condition == "LT" and current is not None and at >= current)
    )
    if skip:
        return done(codec.integer(0))
    if at <= now:
        call.staged.delete(key)  # an expiry in the past deletes, as in Redis
    else:
        call.staged.put(key, found[0], _expiry(call, unit, amount, cmd))
    return done(codec.integer(1))


command("EXPIRE", -3)(lambda call: _expire(call, "EX", "expire"))
command("PEXPIRE", -3)(lambda call: _expire(call, "PX", "pexpire"))
command("EXPIREAT", -3)(lambda call: _expire(call, "EXAT", "expireat"))
command("PEXPIREAT", -3)(lambda call: _expire(call, "PXAT", "pexpireat"))


@command("TTL", 2)
def _ttl(call: Call) -> Result:
    ms = _remaining_ms(call, call.key(1))
    return done(codec.integer(ms if ms < 0 else (ms + 500) // 1000))


@command("PTTL", 2)
def _pttl(call: Call) -> Result:
    return done(codec.integer(_remaining_ms(call, call.key(1))))


@command("PERSIST", 2)
def _persist(call: Call) -> Result:
    key = call.key(1)
    found = call.staged.get(key)
    if found is None or found[1] is None:
        return done(codec.integer(0))
    call.staged.put(key, found[0], None)
    return done(codec.integer(1))


def _glob(call: Call, i: int) -> Pattern:
    try:
        return compile_glob(call.text(i))
    except ValueError as exc:
        raise RespError(f"ERR {exc}") from None


@command("KEYS", 2)
def _keys(call: Call) -> Result:
    pattern = _glob(call, 1)
    store, now = call.ctx.kv.store, call.ctx.kv.clock.wall()
    keys: list[bytes] = []
    after: str | None = None
    while True:
        page, after = store.scan(after, 10_000, now, pattern)
        keys += [codec.bulk(k, call.proto) for k, _ in page]
        if after is None:
            return done(codec.array(keys))


def _cursor_to_key(raw: bytes) -> str | None:
    """SCAN's cursor: "0" starts, else the key the last page ended after, as a decimal number
    (the key's UTF-8 behind a 1 byte), so any node resumes it and redis-py's int() holds it."""
    try:
        n = int(raw)
    except ValueError:
        raise RespError("ERR invalid cursor") from None
    if n == 0:
        return None
    data = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if data[:1] != b"\x01":
        raise RespError("ERR invalid cursor")
    try:
        return data[1:].decode("utf-8")
    except UnicodeDecodeError:
        raise RespError("ERR invalid cursor") from None


def _key_to_cursor(key: str | None) -> bytes:
    if key is None:
        return b"0"
    return str(int.from_bytes(b"\x01" + key.encode("utf-8"), "big")).encode()


@command("SCAN", -2)
def _scan(call: Call) -> Result:
    after = _cursor_to_key(call.args[1])
    pattern: Pattern | None = None
    count = SCAN_COUNT
    i = 2
    while i < len(call.args):
        option = call.word(i)
        if option == "MATCH" and i + 1 < len(call.args):
            pattern = _glob(call, i + 1)
        elif option == "COUNT" and i + 1 < len(call.args):
            count = call.integer(i + 1)
            if count < 1:
                raise RespError("ERR syntax error")
        elif option == "TYPE" and i + 1 < len(call.args):
            if call.text(i + 1).lower() != "string":
                return done(codec.array([codec.bulk("0", 2), codec.array([])]))
        else:
            raise RespError("ERR syntax error")
        i += 2
    store, now = call.ctx.kv.store, call.ctx.kv.clock.wall()
    page, nxt = store.scan(after, min(count, 10_000), now, pattern)
    keys = codec.array([codec.bulk(k, call.proto) for k, _ in page])
    return done(codec.array([codec.bulk(_key_to_cursor(nxt), 2), keys]))


def _flush(call: Call) -> Result:
    if len(call.args) > 2 or (len(call.args) == 2 and call.word(1) not in ("ASYNC", "SYNC")):
        raise RespError("ERR syntax error")
    return codec.OK, call.ctx.kv.clear()


command("FLUSHDB", -1, queueable=False)(_flush)
command("FLUSHALL", -1, queueable=False)(_flush)


def _refused(name: str) -> Handler:
    def refuse(call: Call) -> Result:
        raise RespError(
            f"ERR {name} is not supported by kvmesh: every node accepts writes and the newest "
            "write wins, so a read-modify-write on two nodes at once would lose one of them; "
            "compute the value and SET it"
        )

    return refuse


for _name in ("INCR", "INCRBY", "INCRBYFLOAT", "DECR", "DECRBY", "APPEND", "SETRANGE"):
    COMMANDS[_name] = Command(_name, -2, _refused(_name))


@command("UNWATCH", 1)
def _unwatch(call: Call) -> Result:
    call.client.watched = {}
    return done(codec.OK)
