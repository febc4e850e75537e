"""The load-run machinery, without a load run: judgement, measurement, cleanup.

The load run itself (`tox -e load`, `python -m loadtest.load_run --quick`) is
too slow for the suite; these check the parts whose mistakes would make its
verdicts wrong: a sampler that misses memory, a judge that lets a 5xx pass,
children left running after an error.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from loadtest.load_procs import Children, wait_until
from loadtest.load_report import (
    MiB,
    api_latencies,
    percentile,
    rss_stats,
    throughput,
    verdicts,
)
from loadtest.load_sampler import RssSampler, peak_rss

CLEAN = {
    "server_error_count": 0,
    "transport_error_count": 0,
    "unexpected_count": 0,
    "invalid_archive_count": 0,
}

ALLOCATE = (
    "import sys, time\n"
    "blob = bytearray(int(sys.argv[1]) * 1024 * 1024)\n"
    "blob[::4096] = b'x' * len(blob[::4096])\n"  # touch every page: resident, not just mapped
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_api_latencies_leave_out_archive_downloads() -> None:
    lat = {"POST /zip-jobs": [1.0, 2.0], "GET archive": [900.0], "GET /zip-jobs/[id] poll": [3.0]}
    assert sorted(api_latencies(lat)) == [1.0, 2.0, 3.0]


def test_a_clean_run_passes_and_each_problem_fails_it() -> None:
    assert verdicts(CLEAN, 150.0, 160.0, jobs_ready=3) == []
    bad_5xx = CLEAN | {"server_error_count": 2, "server_errors": ["POST /zip-jobs -> 500"]}
    bad_job = CLEAN | {"unexpected_count": 1, "unexpected": ["small job x: FAILED"]}
    bad_zip = CLEAN | {"invalid_archive_count": 1, "invalid_archives": ["crc"]}
    dead = CLEAN | {"transport_error_count": 1, "transport_errors": ["GET x: ConnectionError"]}
    for summary in (bad_5xx, bad_job, bad_zip, dead):
        assert len(verdicts(summary, 150.0, 160.0, jobs_ready=3)) == 1
    assert "ceiling" in verdicts(CLEAN, 160.5, 160.0, jobs_ready=3)[0]
    assert "proves nothing" in verdicts(CLEAN, 150.0, 160.0, jobs_ready=0)[0]
    assert "no RSS samples" in verdicts(CLEAN, math.nan, 160.0, jobs_ready=3)[0]


def test_throughput_counts_source_bytes_over_the_load_phase() -> None:
    jobs: list[dict[str, Any]] = [
        {
            "source_bytes": 30 * MiB,
            "started_at": "2026-01-01T00:00:00.000Z",
            "finished_at": "2026-01-01T00:00:03.000Z",
        },
        {"source_bytes": 30 * MiB, "started_at": None, "finished_at": None},
    ]
    t = throughput(jobs, seconds=60.0)
    assert t.jobs_ready == 2
    assert t.jobs_per_min == pytest.approx(2.0)
    assert t.mib_per_s == pytest.approx(1.0)
    assert t.job_mib_per_s_median == pytest.approx(10.0)


def test_rss_stats() -> None:
    s = rss_stats([10 * MiB, 30 * MiB, 20 * MiB])
    assert (s.peak_mib, s.median_mib, s.samples) == (30.0, 20.0, 3)


def test_sampler_sees_a_child_allocate_and_children_are_stopped(tmp_path: Path) -> None:
    """A process holding 96 MiB is measured at >= 96 MiB by both the samples and VmHWM."""
    sampler = RssSampler(interval=0.05).start()
    try:
        with Children(tmp_path) as children:
            child = children.start(
                "hog", [sys.executable, "-c", ALLOCATE, "96"], {"PATH": "/usr/bin"}, tmp_path
            )
            sampler.add("hog", child.pid)
            wait_until(
                lambda: "ready" in child.log_path.read_text(),
                timeout=30,
                what="allocating",
                child=child,
            )
            time.sleep(0.3)
            hwm = peak_rss(child.pid)
            pid = child.pid
    finally:
        sampler.stop()
    assert rss_stats(s.rss for s in sampler.samples if s.name == "hog").peak_mib >= 96
    assert hwm is not None and hwm >= 96 * MiB
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_children_are_stopped_when_the_run_fails(tmp_path: Path) -> None:
    pids = []
    with pytest.raises(RuntimeError, match="boom"), Children(tmp_path) as children:
        for name in ("a", "b"):
            pids.append(
                children.start(name, ["sleep", "60"], {"PATH": "/usr/bin:/bin"}, tmp_path).pid
            )
        raise RuntimeError("boom")
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
