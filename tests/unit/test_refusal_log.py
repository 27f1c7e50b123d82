"""RefusalLog: a refused sender is logged once per interval, with the count since the last line."""

from __future__ import annotations

import pytest

from cluster.net.auth import RefusalLog


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # (address, now) in order -> what `refused` returns for each
        ([("a", 0.0)], [1]),
        ([("a", 0.0), ("a", 1.0), ("a", 9.9)], [1, None, None]),
        ([("a", 0.0), ("a", 1.0), ("a", 10.0)], [1, None, 2]),  # two since the last line
        ([("a", 0.0), ("b", 0.5), ("a", 5.0), ("b", 10.5)], [1, 1, None, 1]),
        ([("a", 0.0), ("a", 30.0)], [1, 1]),
    ],
)
def test_one_line_per_sender_per_interval(
    events: list[tuple[str, float]], expected: list[int | None]
) -> None:
    log = RefusalLog(interval=10.0)
    assert [log.refused(address, now) for address, now in events] == expected


def test_a_scan_from_many_addresses_does_not_grow_without_bound() -> None:
    log = RefusalLog(interval=1.0)
    for i in range(5000):
        log.refused(f"10.0.{i // 256}.{i % 256}:7946", float(i))
    assert len(log._last) <= 1025
