"""Load runs of the job API, one budget at a time, judged on errors and worker memory.

    python -m loadtest.load_run                        # 3 budgets, the long run for people
    python -m loadtest.load_run --quick                # CI smoke: one budget, < 2 minutes
    python -m loadtest.load_run --budgets 32,64 --users 16 --duration 300

For each budget it starts a fresh stack (moto, `zipjobs serve`, `zipjobs
worker`, each its own process), seeds the source bucket, measures the idle
worker, runs Locust headless for a bounded time, and samples the RSS of every
process at 5 Hz. It exits non-zero, with one line per reason, when any
response was a 5xx, a job ended FAILED that should not have, an archive was
invalid, or the worker's peak RSS went over the memory model's ceiling
(service/memory.py; ``--allowance-mb M`` makes it budget + M instead).

Reports: loadtest/results/load_report.{json,md} and load_rss.png
(load_quick_* for --quick, so CI never overwrites the long run's figures).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from loadtest.load_chart import Panel, draw
from loadtest.load_procs import Children
from loadtest.load_report import (
    BudgetResult,
    api_latencies,
    markdown,
    per_endpoint,
    percentile,
    rss_stats,
    throughput,
    verdicts,
)
from loadtest.load_sampler import RssSampler, peak_rss
from loadtest.load_seed import FULL_SHAPES, QUICK_SHAPES
from loadtest.load_stack import (
    MAX_KEYS,
    REPO,
    SRC_BUCKET,
    VENV_BIN,
    Janitor,
    Stack,
    StackConfig,
    boto_client,
    running_stack,
)
from loadtest.load_verify import verify_kept
from service.memory import process_ceiling_mib
from service.units import MiB

RESULTS = REPO / "loadtest" / "results"
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"


def worker_ceiling_mib(budget_mib: float, concurrency: int) -> int:
    """The memory model's ceiling (service/memory.py) for the load worker.

    Each of its ``concurrency`` jobs may hold up to the stack's MAX_KEYS
    entries. A fixed formula, not the measured idle, so a heavier idle worker
    or a new unaccounted buffer fails the run instead of moving the ceiling.
    """
    return process_ceiling_mib(budget_mib, files=MAX_KEYS * concurrency)


@dataclass(frozen=True, slots=True)
class RunOptions:
    budgets: tuple[int, ...]
    duration: int
    users: int
    spawn_rate: float
    allowance_mb: float | None
    concurrency: int
    idle_seconds: float
    quick: bool
    worker_env: tuple[tuple[str, str], ...]
    stem: str
    results: Path


def parse_args(argv: list[str] | None = None) -> RunOptions:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--budgets", default=None, help="comma-separated MiB (default 32,64,128)")
    p.add_argument("--duration", type=int, default=None, help="seconds of load per budget")
    p.add_argument("--users", type=int, default=None, help="concurrent Locust users")
    p.add_argument("--spawn-rate", type=float, default=None, help="users started per second")
    p.add_argument(
        "--allowance-mb",
        type=float,
        default=None,
        help="worker ceiling = budget + this (default: the memory model, service/memory.py)",
    )
    p.add_argument("--concurrency", type=int, default=2, help="ZIPJOBS_WORKER_CONCURRENCY")
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=3.0,
        help="how long the idle worker is measured before the load",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke: one budget (64), small seed, 40 s of load, < 2 min",
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the worker (e.g. MALLOC_ARENA_MAX=2); repeatable",
    )
    p.add_argument("--results", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    quick = bool(a.quick)
    budgets = a.budgets or ("64" if quick else "32,64,128")
    users = a.users or (6 if quick else 12)
    return RunOptions(
        budgets=tuple(int(b) for b in budgets.split(",") if b.strip()),
        duration=a.duration or (40 if quick else 150),
        users=users,
        spawn_rate=a.spawn_rate or float(users),
        allowance_mb=a.allowance_mb,
        concurrency=a.concurrency,
        idle_seconds=a.idle_seconds,
        quick=quick,
        worker_env=tuple(_pair(item) for item in a.worker_env),
        stem="load_quick" if quick else "load",
        results=a.results,
    )


def _pair(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise SystemExit(f"--worker-env wants NAME=VALUE, got {item!r}")
    return name, value


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every child is stopped by the context managers."""
    raise SystemExit(128 + signum)


def run_locust(
    children: Children, stack: Stack, opts: RunOptions, budget: int, sampler: RssSampler
) -> dict[str, Any]:
    tmp = opts.results / "tmp"
    manifest_path = tmp / f"manifest_{budget}.json"
    summary_path = tmp / f"summary_{budget}.json"
    stack.manifest.write(manifest_path)
    summary_path.unlink(missing_ok=True)
    keep_dir = tmp / f"kept_{budget}"
    shutil.rmtree(keep_dir, ignore_errors=True)
    env = dict(stack.env)
    env.update(
        {
            "LOADTEST_MANIFEST": str(manifest_path),
            "LOADTEST_SUMMARY": str(summary_path),
            "LOADTEST_KEEP_DIR": str(keep_dir),
        }
    )
    argv = [
        str(VENV_BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(opts.users),
        "-r",
        str(opts.spawn_rate),
        "-t",
        f"{opts.duration}s",
        "--host",
        stack.api_url,
        "--stop-timeout",
        "5",
        "--only-summary",
        "--csv",
        str(opts.results / f"{opts.stem}_{budget}"),
        "--loglevel",
        "WARNING",
    ]
    locust = children.start(f"locust_{budget}", argv, env, REPO)
    sampler.add("locust", locust.pid)
    sampler.mark("load start")
    try:
        locust.popen.wait(timeout=opts.duration + 90)
    finally:
        sampler.mark("load stop")
        sampler.remove("locust")
        children.stop(locust.name)
    if not summary_path.exists():
        raise RuntimeError(f"Locust wrote no summary:\n{locust.log_tail()}")
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    return summary


def run_budget(opts: RunOptions, budget: int) -> tuple[BudgetResult, Panel]:
    load_before = os.getloadavg()
    cfg = StackConfig(
        budget_mb=budget,
        worker_concurrency=opts.concurrency,
        shapes=QUICK_SHAPES if opts.quick else FULL_SHAPES,
        log_dir=opts.results / "tmp" / f"logs_{budget}",
        worker_env=dict(opts.worker_env),
    )
    sampler = RssSampler().start()
    notes: list[str] = []
    died: list[str] = []
    try:
        with (
            Children(cfg.log_dir) as children,
            running_stack(children, cfg, on_start=lambda c: sampler.add(c.name, c.pid)) as stack,
        ):
            sampler.mark("services up")
            t_idle = sampler.now()
            time.sleep(opts.idle_seconds)
            idle = [s.rss for s in sampler.window("worker", t_idle, sampler.now())]
            with Janitor(stack.endpoint) as janitor:
                summary = run_locust(children, stack, opts, budget, sampler)
            notes.append(f"janitor deleted {janitor.deleted} downloaded archives from moto")
            hwm = peak_rss(stack.worker.pid)
            checked, bad_archives = verify_kept(
                opts.results / "tmp" / f"kept_{budget}",
                boto_client("s3", stack.endpoint),
                SRC_BUCKET,
            )
            notes += [f"independent readers: {line}" for line in checked]
            for child in (stack.api, stack.worker):
                if not child.alive():
                    died.append(
                        f"{child.name} exited with {child.popen.returncode} during the "
                        f"run: {child.log_tail(5)}"
                    )
    finally:
        sampler.stop()
    load_after = os.getloadavg()
    return _judge(
        opts,
        budget,
        stack,
        summary,
        sampler,
        idle,
        hwm,
        notes,
        died + bad_archives,
        (load_before, load_after),
    )


def _judge(
    opts: RunOptions,
    budget: int,
    stack: Stack,
    summary: dict[str, Any],
    sampler: RssSampler,
    idle: list[int],
    hwm: int | None,
    notes: list[str],
    died: list[str],
    loads: tuple[tuple[float, ...], tuple[float, ...]],
) -> tuple[BudgetResult, Panel]:
    seconds = max(1e-9, float(summary["stopped"]) - float(summary["started"]))
    api = api_latencies(summary["latency_ms"])
    names = ("worker", "api", "moto", "locust")
    rss = {n: rss_stats(s.rss for s in sampler.samples if s.name == n) for n in names}
    tput = throughput(summary["jobs"], seconds)
    ceiling = (
        budget + opts.allowance_mb
        if opts.allowance_mb is not None
        else worker_ceiling_mib(budget, opts.concurrency)
    )
    # Judge on the kernel's exact high-water mark when there is one: 5 Hz samples
    # can miss a short spike.
    worker_hwm = hwm / MiB if hwm is not None else math.nan
    judged_peak = max(rss["worker"].peak_mib, worker_hwm) if hwm else rss["worker"].peak_mib
    failures = died + verdicts(summary, judged_peak, ceiling, tput.jobs_ready)
    if summary.get("bad_request_mismatch"):
        notes.append(f"4xx other than expected: {summary['bad_request_mismatch']}")
    notes.append("presigned URLs were fetched from moto, which does not check signatures")
    before, after = loads
    result = BudgetResult(
        budget_mb=budget,
        ceiling_mb=ceiling,
        allowance_mb=ceiling - budget,
        worker_concurrency=opts.concurrency,
        users=opts.users,
        duration_s=seconds,
        worker_idle_mib=max(idle) / MiB if idle else math.nan,
        worker_hwm_mib=worker_hwm,
        api_requests=len(api),
        api_rps=len(api) / seconds,
        api_p50_ms=percentile(api, 50),
        api_p90_ms=percentile(api, 90),
        api_p99_ms=percentile(api, 99),
        per_endpoint=per_endpoint(summary["latency_ms"]),
        status_counts=summary["status_counts"],
        outcomes=summary["outcomes"],
        tput=tput,
        rss=rss,
        load_before=(before[0], before[1], before[2]),
        load_after=(after[0], after[1], after[2]),
        seed_mib=stack.manifest.total_bytes / MiB,
        seed_seconds=stack.seed_seconds,
        failures=failures,
        notes=notes,
    )
    series = {n: [(s.t, s.rss) for s in sampler.samples if s.name == n] for n in names}
    panel = Panel(budget, ceiling, series, list(sampler.marks), passed=not failures)
    return result, panel


def write_reports(opts: RunOptions, results: list[BudgetResult], panels: list[Panel]) -> None:
    meta = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "command": shlex.join(["python", "-m", "loadtest.load_run", *sys.argv[1:]]),
        "allowance_mb": opts.allowance_mb,  # None: the memory model
        "python": platform.python_version(),
    }
    opts.results.mkdir(parents=True, exist_ok=True)
    (opts.results / f"{opts.stem}_report.json").write_text(
        json.dumps({"meta": meta, "results": [r.to_json() for r in results]}, indent=1, default=str)
    )
    (opts.results / f"{opts.stem}_report.md").write_text(markdown(results, meta))
    draw(panels, opts.results / f"{opts.stem}_rss.png")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    results: list[BudgetResult] = []
    panels: list[Panel] = []
    for budget in opts.budgets:
        print(f"== budget {budget} MiB: {opts.users} users for {opts.duration}s", flush=True)
        result, panel = run_budget(opts, budget)
        results.append(result)
        panels.append(panel)
        w = result.rss["worker"]
        print(
            f"   API {result.api_rps:.0f} req/s p50 {result.api_p50_ms:.0f} ms "
            f"p99 {result.api_p99_ms:.0f} ms; {result.tput.jobs_per_min:.1f} jobs/min, "
            f"{result.tput.mib_per_s:.1f} MiB/s; worker idle {result.worker_idle_mib:.0f} "
            f"peak {w.peak_mib:.0f} / ceiling {result.ceiling_mb:.0f} MiB",
            flush=True,
        )
    write_reports(opts, results, panels)
    failures = [f"budget {r.budget_mb}: {f}" for r in results for f in r.failures]
    for line in failures:
        print(f"FAIL {line}", file=sys.stderr)
    print(f"report: {opts.results / (opts.stem + '_report.md')}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
