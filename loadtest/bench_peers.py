"""What one node-to-node request costs the sender's CPU: the node's own HTTP/1.1 peer client
(cluster/net/http_peers.py) against aiohttp's client, the anchor it replaced, in the same run.

Both send the same empty replication request to the same node process, one at a time on a
keep-alive connection, and the CPU time of this process is divided by the requests (the node's
own time is not counted). Rounds alternate the two; medians.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp
import orjson
import uvloop

from cluster.net.http_peers import PeerClient
from cluster.replication.wire import REPLICATE_PATH
from loadtest import procs

BODY = orjson.dumps({"v": 1, "from": "bench", "stable": 0, "batches": []})


async def _ours(address: str, n: int) -> float:
    client = PeerClient("bench", None, time.time)
    await client.start()
    try:
        for _ in range(100):  # warm: the connection is open and kept
            await client.request("POST", address, REPLICATE_PATH, BODY)
        start = time.process_time()
        for _ in range(n):
            await client.request("POST", address, REPLICATE_PATH, BODY)
        return (time.process_time() - start) / n
    finally:
        await client.close()


async def _aiohttp(address: str, n: int) -> float:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=8, keepalive_timeout=60)
    headers = {"Content-Type": "application/json", "X-KV-Node": "bench"}
    url = f"http://{address}{REPLICATE_PATH}"
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with asyncio.timeout(5), session.post(url, data=BODY, headers=headers) as r:
                await r.read()

        for _ in range(100):
            await one()
        start = time.process_time()
        for _ in range(n):
            await one()
        return (time.process_time() - start) / n


def bench_peer_client(rounds: int = 3, n: int = 3000) -> list[str]:
    node = procs.start_node("--log-level", "WARNING", "--tcp-port", "0")
    address = f"127.0.0.1:{node.port}"
    ours: list[float] = []
    theirs: list[float] = []
    try:
        for _ in range(rounds):
            theirs.append(uvloop.run(_aiohttp(address, n)))
            ours.append(uvloop.run(_ours(address, n)))
    finally:
        procs.stop(node.proc)
    a, b = statistics.median(theirs) * 1e6, statistics.median(ours) * 1e6
    return [
        "| one node-to-node request, sender's CPU (keep-alive, loopback) | us | vs aiohttp |",
        "| --- | ---: | ---: |",
        f"| aiohttp's client (anchor) | {a:.1f} | 100% |",
        f"| the node's peer client (cluster/net/http_peers.py) | {b:.1f} | {b / a:.0%} |",
    ]
