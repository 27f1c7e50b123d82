"""Long simulation runs: `python -m tests.sim --seeds 10000` (or `make sim SEEDS=10000`).

Each seed is one deterministic run of the whole data plane (tests/sim/dataplane.py). A failing
seed is printed with its fault plan and violations; replay it alone, with the nodes' logs, by
`python -m tests.sim --seed N -v`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from tests.sim.dataplane import Plan, run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, help="run this one seed (with -v: the nodes' log)")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL, format="%(message)s"
    )
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    failed: list[int] = []
    started = time.perf_counter()
    for seed in seeds:
        result = run(Plan.from_seed(seed, nodes=args.nodes))
        if not result.ok:
            failed.append(seed)
            print(result.report(), flush=True)
            if args.verbose:
                print("\n".join(result.events))
    took = time.perf_counter() - started
    print(f"{len(seeds)} seeds, {len(failed)} failed {failed[:50]} in {took:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
