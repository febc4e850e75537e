"""Figures and verdicts of a load run: pure functions over the collected data.

Kept apart from the process handling so the judgement (what fails a run) can
be unit-tested with made-up numbers, and so a report can be rebuilt from
load_report.json without running anything.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from service.units import MiB

DOWNLOAD = "GET archive"  # the one request name that is not the API


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def api_latencies(latency_ms: dict[str, list[float]]) -> list[float]:
    """Every API request's latency (archive downloads go to moto, not the API)."""
    return [v for name, vs in latency_ms.items() if name != DOWNLOAD for v in vs]


@dataclass(frozen=True, slots=True)
class RssStats:
    peak_mib: float
    median_mib: float
    samples: int


def rss_stats(rss_bytes: Iterable[int]) -> RssStats:
    values = list(rss_bytes)
    if not values:
        return RssStats(math.nan, math.nan, 0)
    return RssStats(max(values) / MiB, statistics.median(values) / MiB, len(values))


def _parse_iso(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Throughput:
    jobs_ready: int
    jobs_per_min: float
    source_mib: float
    mib_per_s: float  # source bytes of verified jobs / wall time of the load phase
    job_mib_per_s_median: float  # per job, source bytes / (finishedAt - startedAt)


def throughput(jobs: Sequence[dict[str, Any]], seconds: float) -> Throughput:
    """Jobs per minute and MiB/s zipped, over verified (READY and checked) jobs only."""
    source = sum(int(j["source_bytes"]) for j in jobs)
    per_job = []
    for j in jobs:
        started, finished = _parse_iso(j.get("started_at")), _parse_iso(j.get("finished_at"))
        if started and finished and finished > started:
            per_job.append(j["source_bytes"] / MiB / (finished - started).total_seconds())
    minutes = seconds / 60 if seconds > 0 else math.nan
    return Throughput(
        jobs_ready=len(jobs),
        jobs_per_min=len(jobs) / minutes if minutes else math.nan,
        source_mib=source / MiB,
        mib_per_s=source / MiB / seconds if seconds > 0 else math.nan,
        job_mib_per_s_median=statistics.median(per_job) if per_job else math.nan,
    )


@dataclass
class BudgetResult:
    """Everything reported for one budget; ``failures`` empty means it passed."""

    budget_mb: int
    ceiling_mb: float
    allowance_mb: float
    worker_concurrency: int
    users: int
    duration_s: float
    worker_idle_mib: float
    worker_hwm_mib: float  # VmHWM at the end of the load: the exact peak
    api_requests: int
    api_rps: float
    api_p50_ms: float
    api_p90_ms: float
    api_p99_ms: float
    per_endpoint: dict[str, dict[str, float]]
    status_counts: dict[str, int]
    outcomes: dict[str, int]
    tput: Throughput
    rss: dict[str, RssStats]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    seed_mib: float
    seed_seconds: float
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def per_endpoint(latency_ms: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "count": len(vs),
            "p50": percentile(vs, 50),
            "p90": percentile(vs, 90),
            "p99": percentile(vs, 99),
            "max": max(vs) if vs else math.nan,
        }
        for name, vs in sorted(latency_ms.items())
    }


def verdicts(
    summary: dict[str, Any], worker_peak_mib: float, ceiling_mb: float, jobs_ready: int
) -> list[str]:
    """One line per reason this budget's run fails; empty when it passed."""
    out = []
    n5xx = int(summary.get("server_error_count", 0))
    if n5xx:
        sample = "; ".join(summary.get("server_errors", [])[:3])
        out.append(f"{n5xx} responses were 5xx (e.g. {sample})")
    ntransport = int(summary.get("transport_error_count", 0))
    if ntransport:
        sample = "; ".join(summary.get("transport_errors", [])[:3])
        out.append(f"{ntransport} requests got no HTTP response (e.g. {sample})")
    nunexpected = int(summary.get("unexpected_count", 0))
    if nunexpected:
        out.append(
            f"{nunexpected} jobs/requests ended unexpectedly (e.g. {summary['unexpected'][0]})"
        )
    ninvalid = int(summary.get("invalid_archive_count", 0))
    if ninvalid:
        out.append(f"{ninvalid} archives were invalid (e.g. {summary['invalid_archives'][0]})")
    if not math.isnan(worker_peak_mib) and worker_peak_mib > ceiling_mb:
        out.append(f"worker peak RSS {worker_peak_mib:.1f} MiB > ceiling {ceiling_mb:.0f} MiB")
    if math.isnan(worker_peak_mib):
        out.append("no RSS samples of the worker")
    if jobs_ready == 0:
        out.append("no job finished READY and verified: the run proves nothing")
    return out


def _f(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def markdown(results: Sequence[BudgetResult], meta: dict[str, Any]) -> str:
    """The results table plus per-process RSS and the reasons for any failure."""
    lines = [
        "# Load run results",
        "",
        f"- when: {meta['when']}  host: {meta['host']} ({meta['cpus']} CPUs, shared)",
        f"- command: `{meta['command']}`",
        (
            "- ceiling = the memory model, service/memory.py (runtime + 1.25 x budget + job "
            "metadata)"
            if meta["allowance_mb"] is None
            else f"- ceiling = budget + {meta['allowance_mb']:.0f} MiB allowance"
        ),
        "- MiB/s = source bytes of READY+verified jobs / load-phase seconds (moto-bound);"
        " per-job MiB/s uses the job's startedAt..finishedAt",
        "",
        "| budget | users | s | API req/s | API p50 ms | API p99 ms | jobs/min | MiB/s"
        " | job MiB/s (median) | worker idle MiB | worker peak MiB (sampled / VmHWM)"
        " | worker median MiB"
        " | ceiling MiB | API peak MiB | moto peak MiB | load avg before/after | result |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        w, a, m = r.rss.get("worker"), r.rss.get("api"), r.rss.get("moto")
        lines.append(
            f"| {r.budget_mb} | {r.users} | {r.duration_s:.0f} | {_f(r.api_rps)} "
            f"| {_f(r.api_p50_ms)} | {_f(r.api_p99_ms)} | {_f(r.tput.jobs_per_min)} "
            f"| {_f(r.tput.mib_per_s)} | {_f(r.tput.job_mib_per_s_median)} "
            f"| {_f(r.worker_idle_mib)} | {_f(w.peak_mib if w else math.nan)} / "
            f"{_f(r.worker_hwm_mib)} "
            f"| {_f(w.median_mib if w else math.nan)} | {r.ceiling_mb:.0f} "
            f"| {_f(a.peak_mib if a else math.nan)} | {_f(m.peak_mib if m else math.nan)} "
            f"| {r.load_before[0]:.2f} / {r.load_after[0]:.2f} "
            f"| {'PASS' if not r.failures else 'FAIL'} |"
        )
    for r in results:
        lines += ["", f"## budget {r.budget_mb} MiB", ""]
        lines.append(
            f"- jobs: {r.outcomes}; statuses: {r.status_counts}; API requests {r.api_requests}"
        )
        lines.append(
            f"- seeded {r.seed_mib:.0f} MiB in {r.seed_seconds:.1f} s; zipped "
            f"{r.tput.source_mib:.0f} MiB in {r.tput.jobs_ready} verified jobs"
        )
        lines.append("")
        lines.append("| process | peak RSS MiB | median RSS MiB | samples |")
        lines.append("|---|---:|---:|---:|")
        for name, s in r.rss.items():
            lines.append(f"| {name} | {_f(s.peak_mib)} | {_f(s.median_mib)} | {s.samples} |")
        lines.append("")
        lines.append("| request | count | p50 ms | p90 ms | p99 ms | max ms |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for name, e in r.per_endpoint.items():
            lines.append(
                f"| {name} | {e['count']:.0f} | {_f(e['p50'])} | {_f(e['p90'])} "
                f"| {_f(e['p99'])} | {_f(e['max'])} |"
            )
        for note in r.notes:
            lines.append(f"- note: {note}")
        for failure in r.failures:
            lines.append(f"- **FAIL**: {failure}")
    return "\n".join(lines) + "\n"
