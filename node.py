"""Run one node: argv/env -> Config -> the node, until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import sys

import uvloop

from cluster.app import serve
from cluster.config import Config, ConfigError


def main(argv: list[str]) -> int:
    try:
        config = Config.from_args(argv)
    except ConfigError as exc:
        sys.stderr.write(f"node.py: {exc}\n")
        return 2
    logging.basicConfig(
        level=config.log_level,
        format=f"%(asctime)s %(levelname)s [{config.name}] %(name)s: %(message)s",
    )
    try:
        uvloop.run(serve(config))
    except OSError as exc:  # a port in use or an address we cannot bind: say so, no traceback
        logging.getLogger("node").error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
