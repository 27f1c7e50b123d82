"""Key filters: `*` and `$` match any run of characters, `?` exactly one, all else is literal."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.core.patterns import MAX_PATTERN_LENGTH, compile_pattern


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        # The contract's own example: `$` is a wildcard like `*`.
        ("wo$d", "world", True),
        ("wo$d", "wod", True),
        ("wo$d", "word", True),
        ("wo$d", "wood", True),
        ("wo$d", "worlds", False),
        ("wo$d", "sword", False),
        # `*` matches any run, also an empty one.
        ("*", "", True),
        ("*", "anything at all", True),
        ("user:*", "user:", True),
        ("user:*", "user:42", True),
        ("user:*", "users:42", False),
        ("*:42", "user:42", True),
        ("*:42", "user:421", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "a-b-c", True),
        ("a*b*c", "a-c-b", False),
        ("***", "", True),
        # `?` is exactly one character (a code point, not a byte).
        ("?", "a", True),
        ("?", "", False),
        ("?", "ab", False),
        ("?", "😀", True),
        ("k?y", "key", True),
        ("k?y", "ky", False),
        ("k?y", "keey", False),
        ("??", "é😀", True),
        # Wildcards match newlines too: a key may contain any character.
        ("a*", "a\nb", True),
        ("a?b", "a\nb", True),
        # Regex metacharacters are literal.
        (".", "a", False),
        (".", ".", True),
        ("a.c", "abc", False),
        ("a.c", "a.c", True),
        ("a+", "aa", False),
        ("a+", "a+", True),
        ("[ab]", "a", False),
        ("[ab]", "[ab]", True),
        ("(x|y)", "x", False),
        ("(x|y)", "(x|y)", True),
        ("^a", "a", False),
        ("^a", "^a", True),
        ("a{2}", "aa", False),
        ("a{2}", "a{2}", True),
        ("\\d", "1", False),
        ("\\d", "\\d", True),
        ("a\\*", "a\\", True),  # a backslash does not escape the wildcard
        ("a\\*", "a\\xyz", True),
        # Matching is of the whole key, case-sensitively.
        ("abc", "abcd", False),
        ("abc", "xabc", False),
        ("abc", "ABC", False),
        ("", "", True),
        ("", "a", False),
    ],
)
def test_matches(pattern: str, key: str, matches: bool) -> None:
    assert compile_pattern(pattern).matches(key) is matches


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("user:*", "user:"),
        ("user:$:x", "user:"),
        ("user:?", "user:"),
        ("abc", "abc"),
        ("*abc", ""),
        ("?abc", ""),
        ("$", ""),
        ("", ""),
        ("a.b[c*d", "a.b[c"),
    ],
)
def test_literal_prefix(pattern: str, prefix: str) -> None:
    assert compile_pattern(pattern).prefix == prefix


def test_an_over_long_pattern_is_refused() -> None:
    compile_pattern("*" * MAX_PATTERN_LENGTH)
    with pytest.raises(ValueError, match="longer than"):
        compile_pattern("a" * (MAX_PATTERN_LENGTH + 1))


def test_many_stars_do_not_backtrack_catastrophically() -> None:
    # `a*a*a*...a*b` against a long run of `a`s is exponential in a naive matcher.
    pattern = compile_pattern("a*" * 30 + "b")
    assert not pattern.matches("a" * 60)


# Characters that matter: wildcards, regex metacharacters, a few plain ones.
_alphabet = st.sampled_from([*"*$?ab.\\[]()+^|{}\n", "é", "😀"])


def _reference(pattern: str, key: str) -> bool:
    """A dynamic-programming wildcard matcher, independent of the regex translation."""
    n, m = len(pattern), len(key)
    ok = [[False] * (m + 1) for _ in range(n + 1)]
    ok[0][0] = True
    for i in range(1, n + 1):
        p = pattern[i - 1]
        ok[i][0] = ok[i - 1][0] and p in "*$"
        for j in range(1, m + 1):
            if p in "*$":
                ok[i][j] = ok[i - 1][j] or ok[i][j - 1]
            elif p == "?":
                ok[i][j] = ok[i - 1][j - 1]
            else:
                ok[i][j] = ok[i - 1][j - 1] and p == key[j - 1]
    return ok[n][m]


@given(pattern=st.text(_alphabet, max_size=8), key=st.text(_alphabet, max_size=10))
def test_agrees_with_a_reference_matcher(pattern: str, key: str) -> None:
    compiled = compile_pattern(pattern)
    assert compiled.matches(key) is _reference(pattern, key)
    # The literal prefix is sound: every matching key starts with it.
    if compiled.matches(key):
        assert key.startswith(compiled.prefix)


@given(key=st.text(max_size=20))
def test_a_pattern_without_wildcards_matches_only_itself(key: str) -> None:
    literal = re.sub(r"[*$?]", "", key)
    compiled = compile_pattern(literal)
    assert compiled.matches(literal)
    assert compiled.prefix == literal
    assert not compiled.matches(literal + "x")
