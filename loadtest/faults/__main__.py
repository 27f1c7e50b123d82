"""`python -m loadtest.faults [--quick] [--scenario NAME ...]` (make faults): run the scenarios,
print the markdown table and write it to loadtest/reports/faults.md."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from loadtest.faults.rig import RigError, cleanup_stale, install_signal_handlers
from loadtest.faults.scenarios import FULL, QUICK, SCENARIOS, Result, markdown, run_scenario
from loadtest.procs import ROOT

REPORTS = ROOT / "loadtest" / "reports"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.faults", description=__doc__)
    p.add_argument(
        "--quick", action="store_true", help="fast membership timing, the CI subset of scenarios"
    )
    p.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable); default: all (with --quick: the CI subset)",
    )
    p.add_argument("--nodes", type=int, help="override the number of nodes of every scenario")
    p.add_argument("--report", default=str(REPORTS / "faults.md"), help="where the table goes")
    p.add_argument("--cleanup", action="store_true", help="only remove leftovers of earlier runs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_signal_handlers()
    if args.cleanup:
        print(f"removed: {', '.join(cleanup_stale()) or 'nothing'}")
        return 0
    timing = QUICK if args.quick else FULL
    names = args.scenario or [n for n, s in SCENARIOS.items() if s.ci or not args.quick]
    results: list[Result] = []
    started = time.monotonic()
    try:
        for name in names:
            print(f"== {name}: {SCENARIOS[name].title} ({timing.name} timing)", flush=True)
            result = run_scenario(
                SCENARIOS[name], timing, REPORTS / "faults" / name, nodes=args.nodes
            )
            results.append(result)
            print(f"   {result.status} ({result.duration:.0f} s)", flush=True)
    except RigError as exc:
        print(f"the fault rig cannot run here: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit) as exc:
        print(f"interrupted ({exc!r}); the rig's processes and namespaces were removed")
        return 130
    report = markdown(results, timing)
    report += f"\nTotal {time.monotonic() - started:.0f} s.\n"
    REPORTS.mkdir(parents=True, exist_ok=True)
    with open(args.report, "w") as f:
        f.write(report)
    print()
    print(report)
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
