"""Finishing a coroutine whose first step already ran: how a write whose replication did not
suspend costs no task (see cluster.api.ordered)."""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any


class Resume:
    """Awaits the rest of a coroutine whose first step already ran (and yielded `first`).

    The delegation of `yield from` (PEP 380), written out because the first value was taken
    outside: the awaiting task receives `first`, and every later value, exception or
    cancellation passes through to the coroutine unchanged.
    """

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
