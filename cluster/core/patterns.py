"""Key filters: the wildcard patterns of `GET /keys?filter=...`.

`*` and `$` match any run of characters (also none), `?` exactly one; everything else is literal.
A pattern compiles to its literal prefix, so that a scan over sorted keys can jump to the first
candidate instead of testing every key, and to the fixed-length pieces between its runs of `*`/`$`.

Matching does not hand the whole pattern to `re` as `a.*b.*c`: a backtracking engine takes
exponential time on `a*a*a*...b` against a run of `a`s, and a filter is user input run on the
event loop. Instead the first piece is matched at the start, the last at the end, and each one
between at its leftmost occurrence after the previous one (leftmost is always safe for pieces of
fixed length), so a match costs O(len(pattern) * len(key)) at worst.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_PATTERN_LENGTH = 1024
_WILDCARDS = frozenset("*$?")
_STARS = re.compile(r"[*$]+")


def _piece(source: str) -> re.Pattern[str]:
    """A piece without `*`/`$`: literals and `?` (one character, newlines included)."""
    return re.compile("".join("." if ch == "?" else re.escape(ch) for ch in source), re.DOTALL)


@dataclass(frozen=True, slots=True)
class Pattern:
    source: str
    prefix: str  # every matching key starts with this
    head: re.Pattern[str]  # matched at the start of the key
    head_len: int
    middle: tuple[re.Pattern[str], ...]  # each matched leftmost, in order, after the head
    tail: re.Pattern[str] | None  # matched at the end; None: no `*` at all (head is everything)
    tail_len: int

    def matches(self, key: str) -> bool:
        if self.tail is None:
            return len(key) == self.head_len and self.head.match(key) is not None
        end = len(key) - self.tail_len
        if end < self.head_len or self.head.match(key) is None:
            return False
        if self.tail_len and self.tail.match(key, end) is None:
            return False
        pos = self.head_len
        for piece in self.middle:
            found = piece.search(key, pos, end)
            if found is None:
                return False
            pos = found.end()
        return True


def compile_pattern(source: str) -> Pattern:
    """Compile a wildcard pattern; ValueError if it is too long to be a sane filter."""
    if len(source) > MAX_PATTERN_LENGTH:
        raise ValueError(f"filter is longer than {MAX_PATTERN_LENGTH} characters")
    prefix_end = next((i for i, ch in enumerate(source) if ch in _WILDCARDS), len(source))
    pieces = _STARS.split(source)
    head = pieces[0]
    if len(pieces) == 1:
        return Pattern(source, source[:prefix_end], _piece(head), len(head), (), None, 0)
    tail = pieces[-1]
    middle = tuple(_piece(p) for p in pieces[1:-1] if p)
    return Pattern(
        source, source[:prefix_end], _piece(head), len(head), middle, _piece(tail), len(tail)
    )


def _glob_tokens(source: str) -> list[str | None]:
    """A Redis glob as tokens: a regex for one character (literal, `?`, a class), None for `*`."""
    tokens: list[str | None] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "*":
            tokens.append(None)
        elif ch == "?":
            tokens.append(".")
        elif ch == "\\" and i + 1 < n:
            i += 1
            tokens.append(re.escape(source[i]))
        elif ch == "[":
            end = source.find("]", i + 2 if source[i + 1 : i + 2] in ("^", "]") else i + 1)
            if end < 0:
                tokens.append(re.escape(ch))  # no closing bracket: a literal `[`, as Redis does
            else:
                body = source[i + 1 : end]
                negate = body.startswith("^")
                body = body[1:] if negate else body
                parts = []
                j = 0
                while j < len(body):
                    if body[j] == "\\" and j + 1 < len(body):
                        parts.append(re.escape(body[j + 1]))
                        j += 2
                    elif j + 2 < len(body) and body[j + 1] == "-":
                        lo, hi = sorted((body[j], body[j + 2]))
                        parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
                        j += 3
                    else:
                        parts.append(re.escape(body[j]))
                        j += 1
                tokens.append(f"[{'^' if negate else ''}{''.join(parts)}]" if parts else "(?!)")
                i = end
        else:
            tokens.append(re.escape(ch))
        i += 1
    return tokens


def compile_glob(source: str) -> Pattern:
    """Compile a Redis glob (KEYS, SCAN MATCH): `*`, `?`, `[abc]`, `[^a-z]`, `\\x`.

    Every token but `*` stands for exactly one character, so a glob splits into fixed-length
    pieces between its stars and matches in linear time, as a wildcard filter does.
    """
    if len(source) > MAX_PATTERN_LENGTH:
        raise ValueError(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    tokens = _glob_tokens(source)
    prefix = ""
    for i, ch in enumerate(source):
        if ch in "*?[\\":
            break
        prefix = source[: i + 1]
    pieces: list[list[str]] = [[]]
    for token in tokens:
        if token is None:
            pieces.append([])
        else:
            pieces[-1].append(token)

    def piece(tokens: list[str]) -> re.Pattern[str]:
        return re.compile("".join(tokens), re.DOTALL)

    head = pieces[0]
    if len(pieces) == 1:
        return Pattern(source, prefix, piece(head), len(head), (), None, 0)
    tail = pieces[-1]
    middle = tuple(piece(p) for p in pieces[1:-1] if p)
    return Pattern(source, prefix, piece(head), len(head), middle, piece(tail), len(tail))
