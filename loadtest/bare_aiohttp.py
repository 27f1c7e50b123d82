"""A bare aiohttp handler on uvloop with orjson: the second anchor of `make bench`.

It shows what the framework alone costs on this machine, so the node's figure can be read as
"framework + our routing, validation, store and metrics".

    python -m loadtest.bare_aiohttp PORT
"""

from __future__ import annotations

import sys

import orjson
import uvloop
from aiohttp import web

BODY = orjson.dumps({"key": "benchkey", "value": "hello-bench"})


async def handle(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
