"""RESP connection and introspection commands: PING, ECHO, AUTH, HELLO, SELECT, QUIT, RESET,
CLIENT, COMMAND, INFO, CONFIG GET, DBSIZE, TIME. Pure (no IO)."""

from __future__ import annotations

from typing import Final

from cluster import __version__
from cluster.api.resp import codec
from cluster.api.resp.table import (
    COMMANDS,
    REDIS_VERSION,
    Call,
    Command,
    RespError,
    Result,
    command,
    done,
)
from cluster.core.patterns import compile_glob

# --- connection -------------------------------------------------------------------------------


@command("PING", -1)
def _ping(call: Call) -> Result:
    if len(call.args) > 2:
        raise RespError("ERR wrong number of arguments for 'ping' command")
    return done(codec.bulk(call.args[1], call.proto) if len(call.args) == 2 else codec.PONG)


@command("ECHO", 2)
def _echo(call: Call) -> Result:
    return done(codec.bulk(call.args[1], call.proto))


def _check_password(call: Call, password: bytes) -> None:
    expected = call.ctx.password
    if expected is None:
        raise RespError(
            "ERR AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        )
    if password.decode("utf-8", "replace") != expected:
        raise RespError("WRONGPASS invalid username-password pair or user is disabled.")
    call.client.authed = True


@command("AUTH", -2, queueable=False)
def _auth(call: Call) -> Result:
    if len(call.args) > 3:
        raise RespError("ERR syntax error")
    if len(call.args) == 3 and call.args[1] != b"default":
        raise RespError("WRONGPASS invalid username-password pair or user is disabled.")
    _check_password(call, call.args[-1])
    return done(codec.OK)


@command("HELLO", -1, queueable=False)
def _hello(call: Call) -> Result:
    args, client = call.args, call.client
    proto = client.proto
    i = 1
    if len(args) > 1:
        try:
            proto = int(args[1])
        except ValueError:
            raise RespError("ERR Protocol version is not an integer or out of range") from None
        if proto not in (2, 3):
            raise RespError("NOPROTO unsupported protocol version")
        i = 2
    while i < len(args):
        option = call.word(i)
        if option == "AUTH" and i + 2 < len(args):
            if args[i + 1] != b"default":
                raise RespError("WRONGPASS invalid username-password pair or user is disabled.")
            _check_password(call, args[i + 2])
            i += 3
        elif option == "SETNAME" and i + 1 < len(args):
            client.name = call.text(i + 1)
            i += 2
        else:
            raise RespError(f"ERR Syntax error in HELLO option '{option.lower()}'")
    if not client.authed:
        raise RespError("NOAUTH HELLO must be called with the client already authenticated")
    client.proto = proto

    def b(text: str) -> bytes:
        return codec.bulk(text, proto)

    return done(
        codec.mapping(
            [
                (b("server"), b("redis")),
                (b("version"), b(REDIS_VERSION)),
                (b("proto"), codec.integer(proto)),
                (b("id"), codec.integer(client.id)),
                (b("mode"), b("standalone")),
                (b("role"), b("master")),
                (b("modules"), codec.array([])),
            ],
            proto,
        )
    )


@command("SELECT", 2)
def _select(call: Call) -> Result:
    if call.integer(1) != 0:
        raise RespError("ERR DB index is out of range")
    return done(codec.OK)


@command("QUIT", -1, queueable=False)
def _quit(call: Call) -> Result:
    call.close = True
    return done(codec.OK)


@command("RESET", 1, queueable=False)
def _reset(call: Call) -> Result:
    c = call.client
    c.multi, c.multi_failed, c.watched, c.proto, c.name = None, False, {}, 2, ""
    c.authed = call.ctx.password is None
    return done(codec.simple("RESET"))


@command("CLIENT", -2)
def _client(call: Call) -> Result:
    sub, c = call.word(1), call.client
    if sub == "SETNAME" and len(call.args) == 3:
        c.name = call.text(2)
        return done(codec.OK)
    if sub == "GETNAME" and len(call.args) == 2:
        return done(codec.bulk(c.name or None, call.proto))
    if sub == "ID" and len(call.args) == 2:
        return done(codec.integer(c.id))
    if sub == "SETINFO" and len(call.args) == 4:
        c.lib = call.text(3) if call.word(2) == "LIB-NAME" else c.lib
        return done(codec.OK)
    if sub == "INFO" and len(call.args) == 2:
        return done(codec.verbatim(f"id={c.id} name={c.name} db=0 resp={c.proto}\n", call.proto))
    raise RespError(f"ERR unknown subcommand or wrong number of arguments for '{sub.lower()}'")


# --- introspection -------------------------------------------------------------------------------


@command("COMMAND", -1)
def _command(call: Call) -> Result:
    sub = call.word(1) if len(call.args) > 1 else ""
    if sub == "COUNT":
        return done(codec.integer(len(COMMANDS)))
    if sub == "DOCS":
        return done(codec.mapping([], call.proto))
    if sub in ("", "INFO"):
        names = sorted(COMMANDS) if sub == "" else [call.word(i) for i in range(2, len(call.args))]
        infos = []
        for name in names:
            cmd = COMMANDS.get(name)
            if cmd is None:
                infos.append(codec.null_array(call.proto))
                continue
            first = 1 if name not in ("PING", "ECHO", "QUIT", "MULTI", "EXEC") else 0
            infos.append(
                codec.array(
                    [
                        codec.bulk(name.lower(), call.proto),
                        codec.integer(cmd.arity),
                        codec.array([]),
                        codec.integer(first),
                        codec.integer(first and -1),
                        codec.integer(first),
                    ]
                )
            )
        return done(codec.array(infos))
    raise RespError(f"ERR unknown subcommand '{sub.lower()}'")


@command("INFO", -1)
def _info(call: Call) -> Result:
    ctx = call.ctx
    store = ctx.kv.store
    stats = store.stats()
    members = ctx.mesh.members()
    lines = [
        "# Server",
        f"redis_version:{REDIS_VERSION}",
        f"kvmesh_version:{__version__}",
        "redis_mode:standalone",
        f"uptime_in_seconds:{int(ctx.kv.clock.wall() - ctx.started)}",
        "",
        "# Clients",
        f"connected_clients:{ctx.clients}",
        "",
        "# Keyspace",
        f"db0:keys={len(store)},expires={stats.expiring},avg_ttl=0",
        "",
        "# Mesh",
        f"node:{ctx.name}",
        f"alive_members:{ctx.mesh.alive_members()}",
        *(f"{name}:{value:g}" for name, value in ctx.mesh.replication_stats().items()),
    ]
    lines += [
        f"member{i}:name={m.name},state={m.state},address={m.address}"
        for i, m in enumerate(members)
    ]
    wanted = {call.text(i).lower() for i in range(1, len(call.args))}
    if wanted and not wanted & {"all", "everything", "default"}:
        sections, keep = [], False
        for line in lines:
            if line.startswith("# "):
                keep = line[2:].lower() in wanted
            if keep:
                sections.append(line)
        lines = sections
    return done(codec.verbatim("\r\n".join(lines) + "\r\n", call.proto))


_CONFIG: Final = {"save": "", "appendonly": "no", "databases": "1", "maxmemory": "0"}


@command("CONFIG", -2)
def _config(call: Call) -> Result:
    if call.word(1) != "GET" or len(call.args) < 3:
        raise RespError("ERR CONFIG supports GET only in kvmesh")
    found = []
    for i in range(2, len(call.args)):
        matcher = compile_glob(call.text(i).lower())
        found += [(k, v) for k, v in _CONFIG.items() if matcher.matches(k)]
    pairs = [(codec.bulk(k, call.proto), codec.bulk(v, call.proto)) for k, v in found]
    return done(codec.mapping(pairs, call.proto))


@command("DBSIZE", 1)
def _dbsize(call: Call) -> Result:
    return done(codec.integer(len(call.ctx.kv.store)))


@command("TIME", 1)
def _time(call: Call) -> Result:
    now = call.ctx.kv.clock.wall()
    seconds = int(now)
    micros = int((now - seconds) * 1_000_000)
    return done(codec.array([codec.bulk(str(seconds), 2), codec.bulk(str(micros), 2)]))


# MULTI, EXEC, DISCARD and WATCH are the session's (session.py); listed for COMMAND and arity.
for _name, _arity in (("MULTI", 1), ("EXEC", 1), ("DISCARD", 1), ("WATCH", -2)):
    COMMANDS[_name] = Command(_name, _arity, lambda call: done(codec.OK), queueable=False)
