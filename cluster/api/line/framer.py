"""Bytes to lines for the line protocol, in bounded memory. Pure: no IO.

A connection feeds every chunk it reads; the framer returns the complete lines and keeps the
unfinished rest. A line longer than `max_line` bytes is flagged where it stands in the order (so
its error is answered in place) and skipped up to the next newline: at most `max_line` bytes are
ever held, whatever a client sends.
"""

from __future__ import annotations


class LineFramer:
    __slots__ = ("discarding", "max_line", "partial")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.partial = bytearray()  # an unfinished line, at most max_line bytes
        self.discarding = False  # skipping the rest of an over-long line

    def feed(self, data: bytes) -> tuple[list[bytes], bool]:
        """The complete lines in `data` after any held partial line; keeps the unfinished rest.

        The flag says the unfinished rest passed the limit: it is answered after these lines,
        where it stands in the order, and skipped up to the next newline. (A complete line over
        the limit is caught by its length.)
        """
        if self.discarding:
            nl = data.find(b"\n")
            if nl < 0:
                return [], False
            self.discarding = False
            data = data[nl + 1 :]
        if self.partial:
            nl = data.find(b"\n")
            if nl < 0:
                self.partial += data
                if len(self.partial) > self.max_line:
                    self.partial = bytearray()
                    self.discarding = True
                    return [], True
                return [], False
            first = bytes(self.partial) + data[:nl]
            self.partial.clear()
            lines = data[nl + 1 :].split(b"\n")
            lines.insert(0, first)
        else:
            lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            if len(tail) > self.max_line:
                self.discarding = True
                return lines, True
            self.partial += tail
        return lines, False

    def rest(self) -> bytes | None:
        """At end of input: the unterminated last line, if any (an over-long one is dropped)."""
        if not self.partial or self.discarding:
            return None
        last = bytes(self.partial)
        self.partial.clear()
        return last

    def reset(self) -> None:
        self.partial = bytearray()
        self.discarding = False
