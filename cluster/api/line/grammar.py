"""The line protocol's grammar and replies: pure, no state, no IO.

`parse_line(bytes) -> Command | KVError` never raises: a malformed line comes back as the error to
answer with. `error_reply` is the one place a KVError becomes a line (its human message, as HTTP
shows it); malformed input never closes the connection.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

import orjson

from cluster.errors import BadRequest, KVError

Op = Literal["PUT", "GET", "DEL", "START", "COMMIT", "ROLLBACK"]


class Command(NamedTuple):
    """One parsed line. `key` and `value` are "" where the command takes none."""

    op: Op
    key: str = ""
    value: str = ""


_OPS: Final[dict[str, Op]] = {
    "PUT": "PUT",
    "GET": "GET",
    "DEL": "DEL",
    "START": "START",
    "COMMIT": "COMMIT",
    "ROLLBACK": "ROLLBACK",
}
_BARE: Final[dict[Op, Command]] = {
    "START": Command("START"),
    "COMMIT": Command("COMMIT"),
    "ROLLBACK": Command("ROLLBACK"),
}
_COMMANDS = "PUT key value, GET key, DEL key, START, COMMIT or ROLLBACK"


def _clip(text: str, limit: int = 40) -> str:
    """A bounded quote of client input for an error message (lines may be a MiB long)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_line(line: bytes) -> Command | KVError:
    """Parse one line (without its newline) into a Command, or the error to answer it with.

    Pure and total: never raises. Fields are separated by runs of spaces; surrounding spaces and
    a trailing CR are ignored; the command name is case-insensitive (ASCII only, so that Unicode
    case folding cannot turn another word into a command). PUT's value is the rest of the line
    after the key, surrounding spaces trimmed, and may contain spaces. Keys and values are not
    checked against the limits here: `Session` does that with `KV.check_key` / `check_value`.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRequest(
            f"the line is not valid UTF-8 (bad byte at offset {exc.start})", "INVALID_PARAMETER"
        )
    text = text.strip(" \r")
    if not text:
        return BadRequest(f"empty line: expected {_COMMANDS}", "INVALID_PARAMETER")
    head, _, rest = text.partition(" ")
    op = _OPS.get(head)
    if op is None and head.isascii():
        op = _OPS.get(head.upper())
    if op is None:
        return BadRequest(
            f"unknown command {_clip(head)}: expected {_COMMANDS}", "INVALID_PARAMETER"
        )
    rest = rest.lstrip(" ")
    if op == "PUT":
        key, _, value = rest.partition(" ")
        if not key:
            return BadRequest("PUT needs a key and a value: PUT key value", "MISSING_KEY_PARAM")
        value = value.lstrip(" ")
        if not value:
            return BadRequest(
                "PUT needs a value after the key: PUT key value", "MISSING_VALUE_PARAM"
            )
        return Command("PUT", key, value)
    if op == "GET" or op == "DEL":
        if not rest:
            return BadRequest(f"{op} needs a key: {op} key", "MISSING_KEY_PARAM")
        if " " in rest:
            return BadRequest(
                f"{op} takes one key (keys cannot contain spaces): {op} key", "INVALID_PARAMETER"
            )
        return Command(op, rest)
    if rest:
        return BadRequest(f"{op} takes no arguments", "INVALID_PARAMETER")
    return _BARE[op]


# --- replies -------------------------------------------------------------------------------------

OK: Final = b'{"status":"Ok"}\n'


def ok_result(value: str) -> bytes:
    return b'{"status":"Ok","result":' + orjson.dumps(value) + b"}\n"


def error_reply(exc: KVError) -> bytes:
    """The one place a KVError becomes a line: its human message, as HTTP shows it."""
    return orjson.dumps({"status": "Error", "mesg": exc.message}) + b"\n"
