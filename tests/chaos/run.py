"""``python -m tests.chaos.run``: a chaos run with a report (``tox -e chaos``).

Exit status 0 only if every invariant held. Replay a run with its seed:
``tox -e chaos -- --seed N`` (same workload and per-process fault sequences).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tests.chaos.faults import ChaosConfig
from tests.chaos.harness import run_chaos
from tests.chaos.invariants import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--api-kills", type=int, default=2)
    parser.add_argument("--part-kills", type=int, default=2)
    parser.add_argument("--poison-jobs", type=int, default=2)
    parser.add_argument("--oversized-jobs", type=int, default=1)
    parser.add_argument("--bound-s", type=float, default=180.0)
    parser.add_argument("--submit-over-s", type=float, default=40.0)
    parser.add_argument("--report-dir", type=Path, default=Path("loadtest/results/chaos"))
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="keep the processes' logs in this directory"
    )
    args = parser.parse_args(argv)
    config = ChaosConfig(
        seed=args.seed,
        jobs=args.jobs,
        fault_rate=args.fault_rate,
        workers=args.workers,
        api_kills=args.api_kills,
        part_kills=args.part_kills,
        poison_jobs=args.poison_jobs,
        oversized_jobs=args.oversized_jobs,
        bound_s=args.bound_s,
        submit_over_s=args.submit_over_s,
        hang_s=15.0,
    )
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        workdir = args.keep_logs or Path(tmp)
        report = asyncio.run(run_chaos(config, workdir))
        path = write_report(report, args.report_dir)
        print(path.read_text())
        if report["violations"]:
            kept = f"kept in {workdir}" if args.keep_logs else "removed; --keep-logs DIR keeps them"
            print(f"process logs {kept}; replay with --seed {args.seed}")
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
