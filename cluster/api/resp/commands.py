"""Every RESP command, registered in one table (`table.COMMANDS`) by the modules that define them:
connection and introspection commands, and key commands."""

from __future__ import annotations

from cluster.api.resp import connection_commands, key_commands
from cluster.api.resp.table import COMMANDS, Call, Client, Context, Mesh, RespError

__all__ = [
    "COMMANDS",
    "Call",
    "Client",
    "Context",
    "Mesh",
    "RespError",
    "connection_commands",
    "key_commands",
]
