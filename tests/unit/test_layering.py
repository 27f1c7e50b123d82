"""The pure core does no IO and reads no clock: checked on the source, by walking its imports.

Each core module, and every `cluster.*` module it imports at run time (transitively), may not
import socket, asyncio, aiohttp, time or uvloop, nor call module-level `random.*` functions
(a `random.Random` passed in is the seam). Imports under `if TYPE_CHECKING:` are for annotations
only and do not count.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cluster"
CORE = ["hlc", "store", "patterns", "kv", "errors", "config"]
CORE_IF_PRESENT = ["membership", "suspicion", "messages"]
FORBIDDEN = frozenset({"socket", "asyncio", "aiohttp", "time", "uvloop"})
RANDOM_ALLOWED = frozenset({"Random"})  # the class, to annotate or build an injected generator


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"cluster/{self.module}.py:{self.line}: {self.what}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of the tree except the bodies of `if TYPE_CHECKING:` blocks."""
    out: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return out


def scan_source(source: str, module: str) -> tuple[list[Violation], set[str]]:
    """The violations in one module's source, and the `cluster.*` modules it imports at run
    time (to follow)."""
    tree = ast.parse(source)
    violations: list[Violation] = []
    local: set[str] = set()
    random_names: set[str] = set()  # what `random` is called in this module
    nodes = _runtime_nodes(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN:
                    violations.append(Violation(module, node.lineno, f"import {alias.name}"))
                if alias.name == "random":
                    random_names.add(alias.asname or "random")
                if top == "cluster" and "." in alias.name:
                    local.add(alias.name.split(".")[1])
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            top = name.split(".")[0]
            if node.level == 0 and top in FORBIDDEN:
                violations.append(Violation(module, node.lineno, f"from {name} import ..."))
            if node.level == 0 and name == "random":
                for alias in node.names:
                    if alias.name not in RANDOM_ALLOWED:
                        violations.append(
                            Violation(module, node.lineno, f"from random import {alias.name}")
                        )
            if node.level == 0 and name == "cluster":
                local.update(alias.name for alias in node.names)
            elif node.level == 0 and top == "cluster":
                local.add(name.split(".")[1])
            elif node.level > 0:
                local.add(name.split(".")[0] if name else "")
                if not name:
                    local.update(alias.name for alias in node.names)
    for node in nodes:
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_names
            and node.attr not in RANDOM_ALLOWED
        ):
            violations.append(
                Violation(module, node.lineno, f"module-level random.{node.attr} (inject a Random)")
            )
    local.discard("")
    return violations, local


def layering_violations(module: str) -> list[Violation]:
    """Violations in `module` and in every package module it reaches at run time."""
    seen: set[str] = set()
    todo = [module]
    found: list[Violation] = []
    while todo:
        name = todo.pop()
        path = PACKAGE / f"{name}.py"
        if name in seen or not path.exists():
            continue
        seen.add(name)
        violations, imports = scan_source(path.read_text(encoding="utf-8"), name)
        found.extend(violations)
        todo.extend(sorted(imports - seen))
    return found


def _core_modules() -> list[str]:
    return CORE + [m for m in CORE_IF_PRESENT if (PACKAGE / f"{m}.py").exists()]


@pytest.mark.parametrize("module", _core_modules())
def test_core_module_does_no_io(module: str) -> None:
    assert (PACKAGE / f"{module}.py").exists()
    violations = layering_violations(module)
    assert not violations, f"cluster/{module}.py reaches IO or global state:\n" + "\n".join(
        map(str, violations)
    )


# --- the checker itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "import time as t",
        "from time import monotonic",
        "import socket",
        "import asyncio",
        "from asyncio import sleep",
        "import asyncio.tasks",
        "from aiohttp import web",
        "import uvloop",
        "import random\nrandom.random()",
        "import random\nx = random.choice([1])",
        "import random as r\nr.shuffle([])",
        "from random import randint",
        "def f():\n    import time\n    return time.time()",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    pass\nelse:\n    import time",
    ],
)
def test_the_checker_catches(source: str) -> None:
    violations, _ = scan_source(source, "example")
    assert violations


@pytest.mark.parametrize(
    "source",
    [
        "import random\ndef f(rng: random.Random) -> int:\n    return rng.randint(1, 6)",
        "from random import Random\nrng = Random(1)",
        "import math, heapq, dataclasses",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import asyncio",
        "import typing\nif typing.TYPE_CHECKING:\n    from aiohttp import web",
        "import timeit_like_name_but_not_time",
        "from cluster.store import Store",
    ],
)
def test_the_checker_allows(source: str) -> None:
    violations, _ = scan_source(source, "example")
    assert not violations


def test_the_checker_follows_package_imports() -> None:
    _, imports = scan_source(
        "import cluster.store\nfrom cluster import hlc, errors\nfrom cluster.kv import KV\n"
        "from . import patterns\nfrom .config import Config\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cluster.clock import Clock",
        "example",
    )
    assert imports == {"store", "hlc", "errors", "kv", "patterns", "config"}


def test_an_io_module_is_reported_through_the_core_module_that_imports_it() -> None:
    # cluster/clock.py reads time; a core module importing it at run time would be flagged.
    assert layering_violations("clock")
    _, imports = scan_source("from cluster.clock import Clock", "example")
    assert imports == {"clock"}
