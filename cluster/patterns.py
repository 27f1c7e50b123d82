"""Key filters: the wildcard patterns of `GET /keys?filter=...`.

`*` and `$` match any run of characters (also none), `?` exactly one; everything else is literal.
A pattern compiles to a regular expression plus its literal prefix, so that a scan over sorted keys
can jump to the first candidate instead of testing every key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_PATTERN_LENGTH = 1024
_WILDCARDS = frozenset("*$?")


@dataclass(frozen=True, slots=True)
class Pattern:
    source: str
    prefix: str  # every matching key starts with this
    regex: re.Pattern[str]

    def matches(self, key: str) -> bool:
        return self.regex.fullmatch(key) is not None


def compile_pattern(source: str) -> Pattern:
    """Compile a wildcard pattern; ValueError if it is too long to be a sane filter."""
    if len(source) > MAX_PATTERN_LENGTH:
        raise ValueError(f"filter is longer than {MAX_PATTERN_LENGTH} characters")
    parts: list[str] = []
    prefix_end = len(source)
    for i, ch in enumerate(source):
        if ch in _WILDCARDS:
            prefix_end = min(prefix_end, i)
            parts.append(".*" if ch != "?" else ".")
        else:
            parts.append(re.escape(ch))
    # Collapse runs of '.*' so that '***a' cannot cost more than '*a' to match.
    regex = re.sub(r"(?:\.\*)+", ".*", "".join(parts))
    return Pattern(source, source[:prefix_end], re.compile(regex, re.DOTALL))
