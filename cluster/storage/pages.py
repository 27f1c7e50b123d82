"""Where a damaged SQLite file is damaged: a walk over its b-tree pages, by the file format.

SQLite's own checks (`PRAGMA quick_check`) give up with "database disk image is malformed" when
an interior page is garbage, without saying which. This walk starts at every tree's root page
(from the schema, or page 1 alone if even that cannot be read) and checks each page's header
(its type, its cell count, every cell pointer inside the page, every child inside the file),
so the operator is told the byte offset of the first page that is not what the tree says it
is. Overflow chains are not followed: damage there is reported without an offset.
See https://www.sqlite.org/fileformat2.html ("B-tree Pages").
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

INTERIOR = {2, 5}  # index, table
LEAF = {10, 13}


def _page_problem(data: bytes, start: int, page_size: int, pages: int) -> list[int] | str:
    """The children of a b-tree page (empty for a leaf), or what is wrong with it."""
    kind = data[start]
    if kind not in INTERIOR | LEAF:
        return f"not a b-tree page (type byte {kind})"
    header = 12 if kind in INTERIOR else 8
    cells = struct.unpack(">H", data[start + 3 : start + 5])[0]
    base = start - (100 if start % page_size else 0)  # page 1 starts after the file header
    pointers = start + header
    if pointers + 2 * cells > base + page_size:
        return f"{cells} cells cannot fit in the page"
    children: list[int] = []
    for i in range(cells):
        offset = struct.unpack(">H", data[pointers + 2 * i : pointers + 2 * i + 2])[0]
        if not pointers + 2 * cells <= base + offset < base + page_size - 3:
            return f"cell {i} points outside the page (offset {offset})"
        if kind in INTERIOR:
            children.append(struct.unpack(">I", data[base + offset : base + offset + 4])[0])
    if kind in INTERIOR:
        children.append(struct.unpack(">I", data[start + 8 : start + 12])[0])
    if any(not 1 <= c <= pages for c in children):
        return "a child page number lies outside the file"
    return children


def first_bad_page(path: Path) -> tuple[int, int, str] | None:
    """(page number, byte offset, what is wrong) of the first damaged b-tree page, or None."""
    data = path.read_bytes()
    if len(data) < 100 or not data.startswith(b"SQLite format 3\x00"):
        return (1, 0, "no SQLite header")
    page_size = struct.unpack(">H", data[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages = len(data) // page_size
    roots = [1]
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            roots += [r for (r,) in conn.execute("SELECT rootpage FROM sqlite_schema") if r]
    except sqlite3.DatabaseError:
        pass  # the schema itself is damaged: page 1 is walked, and tells
    seen: set[int] = set()
    todo = sorted(set(roots))
    while todo:
        page = todo.pop(0)
        if page in seen:
            continue
        seen.add(page)
        offset = (page - 1) * page_size
        found = _page_problem(data, offset + (100 if page == 1 else 0), page_size, pages)
        if isinstance(found, str):
            return page, offset, found
        todo.extend(found)
    return None
