"""/metrics: every component figure is exported with the meaning written for it, counters as
Prometheus counters (`_total`), gauges as gauges."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from cluster.api.metrics import SERIES


async def scrape(client: TestClient[Any, Any]) -> dict[str, tuple[str, str]]:
    """name -> (type, help) from the exposition text."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    helps, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            types[name] = kind
    return {name: (types[name], helps[name]) for name in helps}


async def test_every_component_figure_has_its_written_meaning(client: TestClient[Any, Any]) -> None:
    families = await scrape(client)
    for name, (help_text, counter) in SERIES.items():
        kind, shown = families[name + "_total" if counter else name]
        assert kind == ("counter" if counter else "gauge"), name
        assert shown == help_text, name
        assert help_text != name.replace("_", " "), f"{name} has generated help, not written"


async def test_the_contract_series_are_there(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/metrics")
    text = await resp.text()
    for name in ("request_count_total", "request_latency_seconds", "internal_error_count_total"):
        assert name in text
    assert "antientropy_repairs_total" in text  # node counters are counters too
    assert "store_keys " in text  # and gauges stay gauges
