"""One line of text for a job's progress, redrawn in place on a terminal.

A dozen lines of our own instead of a progress-bar dependency: the service's
install stays small, and the line is a pure function of the job document.
"""

from __future__ import annotations

from typing import Any

WIDTH = 30


def fraction(job: dict[str, Any]) -> float:
    """Bytes done over bytes total (files when sizes are not known yet), in [0, 1]."""
    p = job.get("progress") or {}
    for done, total in (("bytesDone", "bytesTotal"), ("filesDone", "filesTotal")):
        if p.get(total):
            return float(min(1.0, max(0.0, p.get(done, 0) / p[total])))
    return 1.0 if job.get("status") == "READY" else 0.0


def bar(job: dict[str, Any]) -> str:
    """``[#########.....]  45%  12/30 files  4.5/10.0 MB  RUNNING``."""
    f = fraction(job)
    filled = round(f * WIDTH)
    p = job.get("progress") or {}
    return (
        f"[{'#' * filled}{'.' * (WIDTH - filled)}] {f * 100:3.0f}%  "
        f"{p.get('filesDone', 0)}/{p.get('filesTotal', 0)} files  "
        f"{p.get('bytesDone', 0) / 1e6:.1f}/{p.get('bytesTotal', 0) / 1e6:.1f} MB  "
        f"{job.get('status', '?')}"
    )
