"""The line protocol's pure core: the grammar (`parse_line`), the replies, and the transaction
rules of `Session` (redis multi.c), on a real Node with a FakeClock. No sockets here."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.api.line.grammar import OK, Command, error_reply, ok_result, parse_line
from cluster.api.line.session import Reply, Session
from cluster.app import Node
from cluster.config import Config
from cluster.core.clock import FakeClock
from cluster.errors import KVError

# --- the grammar ---------------------------------------------------------------------------------

PARSED: list[tuple[bytes, Command]] = [
    (b"PUT a 1", Command("PUT", "a", "1")),
    (b"PUT   a    3 * 3 = 9 ", Command("PUT", "a", "3 * 3 = 9")),  # the contract's example
    (b"PUT a 3 * 3 = 9\r", Command("PUT", "a", "3 * 3 = 9")),  # CRLF clients
    (b"PUT a  x  y  ", Command("PUT", "a", "x  y")),  # inner spaces are kept
    (b"  put a b", Command("PUT", "a", "b")),
    (b'pUt k {"json": [1, 2]}', Command("PUT", "k", '{"json": [1, 2]}')),
    (b"PUT k \xc3\xa9t\xc3\xa9", Command("PUT", "k", "\u00e9t\u00e9")),
    (b"PUT \xe9\x94\xae \xe5\x80\xbc", Command("PUT", "\u952e", "\u503c")),
    (b"PUT k \t", Command("PUT", "k", "\t")),  # only spaces separate fields
    (b"GET k", Command("GET", "k")),
    (b"get k\r", Command("GET", "k")),
    (b"  Get   k  ", Command("GET", "k")),
    (b"DEL k", Command("DEL", "k")),
    (b"dEl k", Command("DEL", "k")),
    (b"START", Command("START")),
    (b"start\r", Command("START")),
    (b" Commit ", Command("COMMIT")),
    (b"rollback", Command("ROLLBACK")),
]


@pytest.mark.parametrize(("line", "expected"), PARSED)
def test_parse_valid_lines(line: bytes, expected: Command) -> None:
    assert parse_line(line) == expected


REFUSED: list[tuple[bytes, str, str]] = [
    (b"", "INVALID_PARAMETER", "empty line"),
    (b"   \r", "INVALID_PARAMETER", "empty line"),
    (b"FOO a", "INVALID_PARAMETER", "unknown command 'FOO'"),
    (b"GETT a", "INVALID_PARAMETER", "unknown command 'GETT'"),
    (b"GET\ta", "INVALID_PARAMETER", "unknown command"),
    # Unicode case mapping would turn these into START / DEL; commands are ASCII.
    (b"\xc5\xbftart", "INVALID_PARAMETER", "unknown command"),
    (b"de\xc4\xb1 a", "INVALID_PARAMETER", "unknown command"),
    (b"PUT", "MISSING_KEY_PARAM", "PUT needs a key and a value"),
    (b"PUT    ", "MISSING_KEY_PARAM", "PUT needs a key and a value"),
    (b"PUT a", "MISSING_VALUE_PARAM", "PUT needs a value"),
    (b"PUT a    \r", "MISSING_VALUE_PARAM", "PUT needs a value"),
    (b"GET", "MISSING_KEY_PARAM", "GET needs a key"),
    (b"del  ", "MISSING_KEY_PARAM", "DEL needs a key"),
    (b"GET a b", "INVALID_PARAMETER", "GET takes one key"),
    (b"DEL a b", "INVALID_PARAMETER", "DEL takes one key"),
    (b"START now", "INVALID_PARAMETER", "START takes no arguments"),
    (b"COMMIT 1", "INVALID_PARAMETER", "COMMIT takes no arguments"),
    (b"ROLLBACK all", "INVALID_PARAMETER", "ROLLBACK takes no arguments"),
    (b"\xff\xfe", "INVALID_PARAMETER", "not valid UTF-8 (bad byte at offset 0)"),
    (b"PUT k \xc3", "INVALID_PARAMETER", "not valid UTF-8 (bad byte at offset 6)"),
    (b"GET \xed\xa0\x80", "INVALID_PARAMETER", "not valid UTF-8"),  # an encoded surrogate
]


@pytest.mark.parametrize(("line", "code", "message"), REFUSED)
def test_parse_refused_lines(line: bytes, code: str, message: str) -> None:
    err = parse_line(line)
    assert isinstance(err, KVError)
    assert err.code == code
    assert message in err.message


def test_unknown_command_message_is_bounded() -> None:
    err = parse_line(b"X" * 100_000)
    assert isinstance(err, KVError)
    assert len(err.message) < 200


# --- replies -------------------------------------------------------------------------------------


def test_reply_lines_are_single_line_json() -> None:
    assert orjson.loads(OK) == {"status": "Ok"}
    assert OK.endswith(b"\n")
    assert OK.count(b"\n") == 1
    line = ok_result('multi\nline "quoted" \u00e9')
    assert line.count(b"\n") == 1
    assert orjson.loads(line) == {"status": "Ok", "result": 'multi\nline "quoted" \u00e9'}
    err = error_reply(KVError("no such key: a\nb", "NOT_FOUND"))
    assert err.count(b"\n") == 1
    assert orjson.loads(err) == {"status": "Error", "mesg": "no such key: a\nb"}


# --- the session ---------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_node(clock: FakeClock, **overrides: object) -> Node:
    return Node(Config.for_tests(**overrides), clock=clock)


@pytest.fixture
def node(clock: FakeClock) -> Node:
    return make_node(clock)


@pytest.fixture
def session(node: Node) -> Session:
    return Session(node.kv, node.config.txn_max_writes)


def run(session: Session, line: str) -> Reply:
    return session.execute(parse_line(line.encode()))


def reply(session: Session, line: str) -> dict[str, str]:
    out: dict[str, str] = orjson.loads(run(session, line).line)
    return out


def stored(node: Node, key: str) -> str | None:
    entry = node.kv.get(key)
    return None if entry is None else entry.value


def test_put_get_del_outside_a_transaction(node: Node, session: Session) -> None:
    put = run(session, "PUT a 1")
    assert put.ok
    assert put.line == OK
    assert put.batch is not None
    assert [m.key for m in put.batch.mutations] == ["a"]
    assert stored(node, "a") == "1"
    assert reply(session, "GET a") == {"status": "Ok", "result": "1"}
    deleted = run(session, "DEL a")
    assert deleted.ok
    assert deleted.batch is not None
    assert deleted.batch.mutations[0].value is None
    assert reply(session, "GET a") == {"status": "Error", "mesg": "no such key: a"}


def test_del_of_a_missing_key_is_ok_and_writes_nothing(session: Session) -> None:
    r = run(session, "DEL nothing")
    assert r.ok
    assert r.line == OK
    assert r.batch is None


def test_get_of_a_missing_key_is_an_error_without_a_batch(session: Session) -> None:
    r = run(session, "GET nothing")
    assert not r.ok
    assert r.batch is None


def test_limits_use_the_same_messages_as_http(node: Node, clock: FakeClock) -> None:
    small = make_node(clock, max_key_length=4, max_value_length=3)
    s = Session(small.kv, 10)
    assert reply(s, "PUT abcde 1") == {
        "status": "Error",
        "mesg": "the key is 5 characters long; the limit is 4",
    }
    assert reply(s, "PUT abcd 1234") == {
        "status": "Error",
        "mesg": "the value is 4 characters long; the limit is 3",
    }
    assert reply(s, "GET abcde")["status"] == "Error"
    assert reply(s, "PUT \u00e9\u00e9\u00e9\u00e9 \u00e9\u00e9\u00e9")["status"] == "Ok"  # chars
    assert stored(small, "abcd") is None


def test_transaction_commit_applies_all_writes_with_one_timestamp(
    node: Node, session: Session, clock: FakeClock
) -> None:
    run(session, "PUT gone x")
    assert reply(session, "START") == {"status": "Ok"}
    for line in ("PUT a 1", "PUT b 2", "DEL gone", "PUT a 3"):
        r = run(session, line)
        assert r.ok
        assert r.batch is None
    assert stored(node, "a") is None
    assert stored(node, "gone") == "x"
    clock.advance(1.0)
    commit = run(session, "COMMIT")
    assert commit.ok
    assert commit.batch is not None
    assert {m.key: m.value for m in commit.batch.mutations} == {"a": "3", "b": "2", "gone": None}
    assert stored(node, "a") == "3"
    assert stored(node, "b") == "2"
    assert stored(node, "gone") is None
    stamps = {node.store.entry(k).ts for k in ("a", "b", "gone")}  # type: ignore[union-attr]
    assert stamps == {commit.batch.ts}
    assert not session.in_transaction


def test_get_inside_a_transaction_sees_own_buffered_writes(node: Node, session: Session) -> None:
    run(session, "PUT kept old")
    run(session, "PUT dropped here")
    other = Session(node.kv, 10)
    run(session, "START")
    run(session, "PUT kept new")
    run(session, "PUT fresh 1")
    run(session, "DEL dropped")
    assert reply(session, "GET kept") == {"status": "Ok", "result": "new"}
    assert reply(session, "GET fresh") == {"status": "Ok", "result": "1"}
    assert reply(session, "GET dropped") == {"status": "Error", "mesg": "no such key: dropped"}
    # Nobody else sees them before COMMIT.
    assert reply(other, "GET kept") == {"status": "Ok", "result": "old"}
    assert reply(other, "GET dropped") == {"status": "Ok", "result": "here"}
    assert reply(other, "GET fresh")["status"] == "Error"
    run(session, "COMMIT")
    assert reply(other, "GET kept") == {"status": "Ok", "result": "new"}
    assert reply(other, "GET dropped")["status"] == "Error"


def test_rollback_discards_buffered_writes(node: Node, session: Session) -> None:
    run(session, "START")
    run(session, "PUT a 1")
    r = run(session, "ROLLBACK")
    assert r.ok
    assert r.batch is None
    assert stored(node, "a") is None
    assert not session.in_transaction
    assert reply(session, "GET a")["status"] == "Error"


def test_empty_commit_is_ok_and_writes_nothing(node: Node, session: Session) -> None:
    run(session, "START")
    last = node.hlc.last
    r = run(session, "COMMIT")
    assert r.ok
    assert r.batch is None
    assert node.hlc.last == last


TXN_STATE_ERRORS = [
    ("COMMIT", "COMMIT without START: no transaction is open"),
    ("ROLLBACK", "ROLLBACK without START: no transaction is open"),
]


@pytest.mark.parametrize(("line", "message"), TXN_STATE_ERRORS)
def test_commit_and_rollback_need_a_transaction(session: Session, line: str, message: str) -> None:
    assert reply(session, line) == {"status": "Error", "mesg": message}


def test_nested_start_is_refused_and_leaves_the_transaction_usable(
    node: Node, session: Session
) -> None:
    run(session, "START")
    run(session, "PUT a 1")
    assert reply(session, "START") == {
        "status": "Error",
        "mesg": "a transaction is already open: START cannot nest",
    }
    assert session.in_transaction
    assert reply(session, "COMMIT") == {"status": "Ok"}
    assert stored(node, "a") == "1"


def test_a_missing_key_inside_a_transaction_does_not_doom_it(node: Node, session: Session) -> None:
    run(session, "START")
    run(session, "PUT a 1")
    assert reply(session, "GET missing")["status"] == "Error"
    assert reply(session, "COMMIT") == {"status": "Ok"}
    assert stored(node, "a") == "1"


@pytest.mark.parametrize("bad", ["PUT " + "k" * 65 + " v", "PUT k", "FROB", "GET a b", "\udcff"])
def test_a_rejected_command_dooms_the_transaction(node: Node, session: Session, bad: str) -> None:
    """As redis EXECABORT: a client that pipelined START..COMMIT must not get half of it."""
    run(session, "START")
    run(session, "PUT a 1")
    line = bad.encode("utf-8", "surrogateescape")
    assert not session.execute(parse_line(line)).ok
    later = reply(session, "PUT b 2")
    assert later["status"] == "Error"
    assert "aborted" in later["mesg"]
    commit = reply(session, "COMMIT")
    assert commit["status"] == "Error"
    assert "nothing was applied" in commit["mesg"]
    assert stored(node, "a") is None
    assert stored(node, "b") is None
    assert not session.in_transaction
    assert reply(session, "PUT c 3") == {"status": "Ok"}  # the connection goes on


def test_a_doomed_transaction_can_be_rolled_back(node: Node, session: Session) -> None:
    run(session, "START")
    run(session, "FROB")
    assert reply(session, "ROLLBACK") == {"status": "Ok"}
    assert reply(session, "START") == {"status": "Ok"}
    run(session, "PUT a 1")
    assert reply(session, "COMMIT") == {"status": "Ok"}
    assert stored(node, "a") == "1"


def test_too_many_writes_abort_the_transaction(clock: FakeClock) -> None:
    node = make_node(clock, txn_max_writes=3)
    session = Session(node.kv, node.config.txn_max_writes)
    run(session, "START")
    for i in range(3):
        assert reply(session, f"PUT k{i} v") == {"status": "Ok"}
    over = reply(session, "DEL k0")
    assert over == {
        "status": "Error",
        "mesg": "a transaction may buffer at most 3 writes; it was aborted and its writes "
        "discarded",
    }
    assert session.txn == {}  # the buffer is freed at once
    assert reply(session, "PUT k9 v")["status"] == "Error"
    commit = reply(session, "COMMIT")
    assert commit == {
        "status": "Error",
        "mesg": "the transaction was aborted (more than 3 writes); nothing was applied",
    }
    assert all(stored(node, f"k{i}") is None for i in range(10))
    run(session, "START")  # a new transaction starts afresh
    assert reply(session, "PUT k0 v") == {"status": "Ok"}
    assert reply(session, "COMMIT") == {"status": "Ok"}


def test_the_limit_counts_writes_not_keys(clock: FakeClock) -> None:
    node = make_node(clock, txn_max_writes=2)
    session = Session(node.kv, node.config.txn_max_writes)
    run(session, "START")
    run(session, "PUT a 1")
    run(session, "PUT a 2")
    assert reply(session, "PUT a 3")["status"] == "Error"


def test_rollback_on_disconnect_discards_everything(node: Node, session: Session) -> None:
    run(session, "START")
    run(session, "PUT a 1")
    session.rollback()
    assert not session.in_transaction
    assert stored(node, "a") is None
    assert reply(session, "COMMIT")["status"] == "Error"


def test_transactions_are_per_session(node: Node) -> None:
    one = Session(node.kv, 10)
    two = Session(node.kv, 10)
    run(one, "START")
    assert reply(two, "COMMIT")["status"] == "Error"
    assert reply(two, "START") == {"status": "Ok"}
    run(one, "PUT a 1")
    run(two, "PUT a 2")
    run(two, "COMMIT")
    run(one, "COMMIT")
    assert stored(node, "a") == "1"  # the later commit wins (a later HLC timestamp)


# --- arbitrary input -----------------------------------------------------------------------------

VALID = st.sampled_from(
    [
        "START",
        "COMMIT",
        "ROLLBACK",
        "PUT a 1",
        "PUT b  two words ",
        "DEL a",
        "GET a",
        "GET b",
        "put " + "k" * 65 + " v",
        "PUT v " + "x" * 300,
    ]
).map(str.encode)
LINES = st.lists(st.one_of(st.binary(max_size=64), VALID), max_size=40)


@given(lines=LINES)
def test_any_line_gets_exactly_one_reply_and_never_raises(lines: list[bytes]) -> None:
    node = Node(Config.for_tests(txn_max_writes=5), clock=FakeClock())
    session = Session(node.kv, node.config.txn_max_writes)
    for line in lines:
        parsed = parse_line(line)
        assert isinstance(parsed, Command | KVError)
        r = session.execute(parsed)
        assert r.line.endswith(b"\n")
        assert r.line.count(b"\n") == 1
        body = orjson.loads(r.line)
        assert body["status"] == ("Ok" if r.ok else "Error")
        assert set(body) <= {"status", "result", "mesg"}
        if r.batch is not None:
            assert r.ok
    session.rollback()
    assert not session.in_transaction
