"""An asyncio event loop on virtual time: the simulation's clock (trio's autojump, for asyncio).

The loop's `time()` is a number that moves only when the loop has nothing ready to run: then it
jumps straight to the next timer, instead of sleeping until it is due. Every `asyncio.sleep`,
`asyncio.timeout` and `call_later` of the code under test therefore runs unchanged, a minute of a
mesh passes in milliseconds, and with no real IO underneath, the same seed gives the same run.

The jump happens in the selector: asyncio's loop asks it to wait `timeout` seconds for IO; this one
has no IO to wait for, so it advances the clock by `timeout` and returns at once. A loop with
nothing ready and no timer would wait forever: that is a deadlock of the code under test, raised.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any

START = 1_700_000_000.0  # the wall clock of the simulated world at time 0


class Deadlock(RuntimeError):
    """Nothing is ready and nothing is scheduled: the simulated world stopped."""


class _Map(Mapping[Any, selectors.SelectorKey]):
    def __init__(self, keys: dict[int, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[_fd(fileobj)]

    def __iter__(self) -> Any:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())


class VirtualSelector(selectors.BaseSelector):
    """Holds registrations (the loop's self-pipe) but never waits: `select` advances `now`."""

    def __init__(self) -> None:
        self.now = 0.0
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, _fd(fileobj), events, data)
        self._keys[key.fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(_fd(fileobj))

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Deadlock("nothing is ready and no timer is scheduled")
        if timeout > 0:
            self.now += timeout
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return _Map(self._keys)

    def close(self) -> None:
        self._keys.clear()


class VirtualLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock is virtual (see the module docstring)."""

    def __init__(self) -> None:
        self._virtual = VirtualSelector()
        super().__init__(selector=self._virtual)

    def time(self) -> float:
        return self._virtual.now


class LoopClock:
    """A node's `cluster.core.clock.Clock` in the simulated world: the loop's time, and a wall
    clock that may be skewed (`offset` seconds ahead, or behind when negative)."""

    __slots__ = ("loop", "offset")

    def __init__(self, loop: asyncio.AbstractEventLoop, offset: float = 0.0) -> None:
        self.loop = loop
        self.offset = offset

    def wall(self) -> float:
        return START + self.loop.time() + self.offset

    def monotonic(self) -> float:
        return self.loop.time()
