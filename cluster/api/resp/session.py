"""One RESP connection's state and the execution of its commands: no IO, no await.

`execute(request)` returns the reply bytes and, for a write, the batch to replicate before they
are sent (as the line protocol's session does). Every command runs against a `Staged` write set:
alone, it is committed right after the command (one batch); inside MULTI, the queued commands run
at EXEC against one write set committed once, so a transaction is one timestamp and one
replication batch, visible all or nothing on every replica. Redis's MULTI rules: no nesting,
EXEC/DISCARD need MULTI, a command refused while queueing (unknown, wrong arity) makes EXEC
answer EXECABORT, a command that fails while EXEC runs answers its error inside the array.

WATCH has its honest local meaning: EXEC answers null (nothing applied) if a watched key changed
on this node since WATCH. A write made on another node and not yet replicated here is not seen.
"""

from __future__ import annotations

from typing import Final

from cluster.api.reply import Reply
from cluster.api.resp import codec
from cluster.api.resp.commands import COMMANDS, Call, Client, Context, RespError
from cluster.core.kv import Staged
from cluster.errors import KVError

# Commands that run at once inside MULTI instead of being queued.
_NOT_QUEUED: Final = frozenset({"EXEC", "DISCARD", "MULTI", "WATCH", "QUIT", "RESET"})
# Commands allowed before AUTH when a password is set.
_BEFORE_AUTH: Final = frozenset({"AUTH", "HELLO", "QUIT", "RESET"})
# Commands that act on the session's transaction state rather than on the data.
_SESSION_OPS: Final = frozenset({"MULTI", "EXEC", "DISCARD", "WATCH"})


# The command table by the exact bytes clients send (upper and lower case): no decode, no
# upper() on the hot path.
_BY_NAME: Final = {
    spelled: cmd
    for name, cmd in COMMANDS.items()
    for spelled in (name.encode(), name.lower().encode())
}


class RespSession:
    def __init__(self, ctx: Context, client_id: int) -> None:
        self.ctx = ctx
        self.kv = ctx.kv
        self.client = Client(client_id, authed=ctx.password is None)

    @property
    def in_transaction(self) -> bool:
        return self.client.multi is not None

    def reset(self) -> None:
        """RESET, or the connection went away: back to a fresh connection's state."""
        c = self.client
        c.multi, c.multi_failed, c.watched = None, False, {}
        c.proto, c.name = 2, ""
        c.authed = self.ctx.password is None

    def execute(self, request: list[bytes] | codec.ProtocolError) -> Reply:
        if isinstance(request, codec.ProtocolError):
            return Reply(False, codec.error(f"ERR Protocol error: {request}"), close=True)
        command = _BY_NAME.get(request[0])  # the names clients send, as they send them
        if command is None:
            command = COMMANDS.get(request[0].decode("utf-8", "replace").upper())
        name = command.name if command is not None else ""
        client = self.client
        if command is None:
            shown = " ".join(f"'{a[:40].decode('utf-8', 'replace')}'" for a in request[1:4])
            return self._refused(
                f"ERR unknown command '{request[0][:40].decode('utf-8', 'replace')}', "
                f"with args beginning with: {shown}"
            )
        if not command.arity_ok(len(request)):
            return self._refused(f"ERR wrong number of arguments for '{name.lower()}' command")
        if not client.authed and name not in _BEFORE_AUTH:
            return Reply(False, codec.error("NOAUTH Authentication required."))
        if client.multi is not None and name not in _NOT_QUEUED:
            if not command.queueable:
                return self._refused(f"ERR {name} is not allowed inside MULTI in kvmesh")
            client.multi.append(request)
            return Reply(True, codec.QUEUED)
        if name in _SESSION_OPS:
            return self._session_op(name, request)
        staged = Staged(self.kv)
        call = Call(self.ctx, client, staged, request)
        try:
            line, batch = command.run(call)
        except (RespError, KVError) as exc:
            return Reply(False, _error_line(exc))
        if batch is None and staged.ops:
            batch = staged.commit()
        return Reply(True, line, batch, call.close)

    def _session_op(self, name: str, request: list[bytes]) -> Reply:
        """MULTI, EXEC, DISCARD and WATCH: the transaction state of this connection."""
        client = self.client
        if name == "MULTI":
            return self._multi()
        if name == "EXEC":
            return self._exec()
        if name == "DISCARD":
            if client.multi is None:
                return Reply(False, codec.error("ERR DISCARD without MULTI"))
            self._end_multi()
            return Reply(True, codec.OK)
        if client.multi is not None:  # WATCH
            return Reply(False, codec.error("ERR WATCH inside MULTI is not allowed"))
        return self._watch(request[1:])

    # --- transactions ----------------------------------------------------------------------------

    def _refused(self, text: str) -> Reply:
        """A command refused before it ran; inside MULTI it also dooms the transaction."""
        if self.client.multi is not None:
            self.client.multi_failed = True
        return Reply(False, codec.error(text))

    def _multi(self) -> Reply:
        if self.client.multi is not None:
            return Reply(False, codec.error("ERR MULTI calls can not be nested"))
        self.client.multi, self.client.multi_failed = [], False
        return Reply(True, codec.OK)

    def _end_multi(self) -> None:
        c = self.client
        c.multi, c.multi_failed, c.watched = None, False, {}

    def _watch(self, keys: list[bytes]) -> Reply:
        store = self.ctx.kv.store
        for raw in keys:
            key = raw.decode("utf-8", "replace")
            entry = store.entry(key)
            self.client.watched.setdefault(key, entry.version if entry is not None else None)
        return Reply(True, codec.OK)

    def _watch_broken(self) -> bool:
        store = self.ctx.kv.store
        for key, version in self.client.watched.items():
            entry = store.entry(key)
            if (entry.version if entry is not None else None) != version:
                return True
        return False

    def _exec(self) -> Reply:
        client = self.client
        queued = client.multi
        if queued is None:
            return Reply(False, codec.error("ERR EXEC without MULTI"))
        failed, broken = client.multi_failed, self._watch_broken()
        self._end_multi()
        if failed:
            return Reply(
                False, codec.error("EXECABORT Transaction discarded because of previous errors.")
            )
        if broken:
            return Reply(True, codec.null_array(client.proto))
        # Every queued command against one write set: one timestamp, one batch, no await.
        staged = self.ctx.kv.stage()
        replies = []
        for request in queued:
            command = COMMANDS[request[0].decode("utf-8", "replace").upper()]
            call = Call(self.ctx, client, staged, request)
            try:
                line, _ = command.run(call)
            except (RespError, KVError) as exc:
                line = _error_line(exc)
            replies.append(line)
        return Reply(True, codec.array(replies), staged.commit())


def _error_line(exc: RespError | KVError) -> bytes:
    if isinstance(exc, RespError):
        return codec.error(exc.text)
    return codec.error(f"ERR {exc.message}")
