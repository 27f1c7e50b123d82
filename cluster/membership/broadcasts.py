"""The broadcast queue of membership updates: pending news, each sent a bounded number of times.

memberlist keeps it in `queue.go` (TransmitLimitedQueue), apart from the state machine: one update
per member (a newer one replaces the older), fewest transmissions first, newest first among
equals, so fresh news overtakes old; each is dropped after `limit` transmissions. Pure.
"""

from __future__ import annotations

from cluster.membership.messages import Message, encoded_size


class _Item:
    __slots__ = ("msg", "order", "size", "transmits")

    def __init__(self, msg: Message, order: int) -> None:
        self.msg = msg
        self.order = order
        self.size = encoded_size(msg)
        self.transmits = 0


class Broadcasts:
    """Pending updates, one per member (a newer one replaces the older), fewest sends first.

    Each is sent at most `limit` times; ties go to the newest, as memberlist's
    TransmitLimitedQueue does, so fresh news overtakes old.
    """

    __slots__ = ("_counter", "_items")

    def __init__(self) -> None:
        self._items: dict[str, _Item] = {}
        self._counter = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, name: str, msg: Message) -> None:
        self._counter += 1
        self._items[name] = _Item(msg, self._counter)

    def clear(self) -> None:
        self._items.clear()

    def take(self, budget: int, limit: int) -> list[Message]:
        """Messages fitting in `budget` bytes; each one taken counts as a transmission."""
        out: list[Message] = []
        for name, item in sorted(
            self._items.items(), key=lambda kv: (kv[1].transmits, -kv[1].order)
        ):
            if item.size > budget:
                continue
            budget -= item.size
            out.append(item.msg)
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[name]
        return out
