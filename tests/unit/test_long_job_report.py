"""The long job run's checks (loadtest/long_job_report.py) can fail.

The run (``python -m loadtest.long_job``) is judged by these functions; each
test builds attempts that break one rule and checks that it is caught, and
a clean run that it is not.
"""

from __future__ import annotations

from typing import Any

from loadtest.long_job_report import (
    Attempt,
    Snapshot,
    judge,
    markdown,
    progress_problems,
    rss_problems,
    stalled,
    verification_problems,
)

GB = 1_000_000_000


def snap(
    archive: int, progress: int | None = None, files: int = 0, status: str = "WAITING"
) -> Snapshot:
    return Snapshot(status, archive, archive if progress is None else progress, files)


def attempt(n: int, before: Snapshot, after: Snapshot, rss: float = 150.0) -> Attempt:
    return Attempt(
        number=n,
        started_at="2026-12-01T03:00:00+00:00",
        limit_seconds=600,
        wall_seconds=600,
        exit="ok",
        outcome="returned for a retry",
        receive_count=n,
        before=before,
        after=after,
        peak_rss_mib=rss,
        load_before=(1.0, 1.0, 1.0),
        load_after=(2.0, 2.0, 2.0),
    )


def clean_run() -> list[Attempt]:
    return [
        attempt(1, snap(0), snap(40 * GB, files=1600)),
        attempt(2, snap(40 * GB, files=1600), snap(80 * GB, files=3200)),
        attempt(3, snap(80 * GB, files=3200), snap(100 * GB, files=4000, status="READY")),
    ]


GOOD_REPORT: dict[str, Any] = {
    "zip_ok": True,
    "entries": 4000,
    "unknown_entries": 0,
    "errors": [],
    "checksum": "CRC32 FULL_OBJECT verified",
    "length": 100 * GB,
}


def test_a_clean_run_passes() -> None:
    attempts = clean_run()
    problems = verification_problems(GOOD_REPORT, entries=4000, length=100 * GB)
    verdict = judge(attempts, final_status="READY", ceiling_mib=233, verification=problems)
    assert verdict.ok, verdict.problems
    assert verdict.findings == []
    assert attempts[1].mb_s == 40 * GB / 1e6 / 600


def test_progress_falling_within_an_attempt_is_caught() -> None:
    attempts = clean_run()
    attempts[1].after = snap(30 * GB, files=3200)
    problems = progress_problems(attempts)
    assert any("attempt 2: archive_bytes went backwards" in p for p in problems), problems


def test_progress_falling_between_attempts_is_caught() -> None:
    # The user-visible bytes restart from zero on the resumed attempt while the
    # checkpoint's archive bytes do not: still a regression a user would see.
    attempts = clean_run()
    attempts[1].before = snap(40 * GB, progress=0, files=1600)
    problems = progress_problems(attempts)
    assert problems == ["between attempts 1 and 2: progress_bytes went backwards, 40000000000 -> 0"]
    verdict = judge(attempts, final_status="READY", ceiling_mib=233, verification=[])
    assert verdict.findings == problems  # reported on its own, beside the verdict
    assert verdict.ok


def test_archive_bytes_falling_fails_the_verdict() -> None:
    attempts = clean_run()
    attempts[2].before = snap(39 * GB, files=3200)  # the checkpoint lost a part
    verdict = judge(attempts, final_status="READY", ceiling_mib=233, verification=[])
    assert not verdict.ok
    assert verdict.problems == [
        "between attempts 2 and 3: archive_bytes went backwards, 80000000000 -> 39000000000"
    ]


def test_progress_falling_while_an_attempt_runs_is_caught() -> None:
    # Start and end look fine; a user polling midway saw the bytes restart.
    attempts = clean_run()
    attempts[1].samples = [snap(40 * GB, progress=2 * GB, files=1600), snap(60 * GB, files=2400)]
    problems = progress_problems(attempts)
    assert problems == ["attempt 2: progress_bytes went backwards, 40000000000 -> 2000000000"]


def test_files_done_falling_is_caught() -> None:
    attempts = clean_run()
    attempts[2].after = snap(100 * GB, files=10, status="READY")
    assert any("files_done" in p for p in progress_problems(attempts))


def test_rss_over_the_ceiling_is_caught_and_at_it_is_not() -> None:
    attempts = clean_run()
    attempts[0].peak_rss_mib = 233.0
    assert rss_problems(attempts, 233) == []
    attempts[2].peak_rss_mib = 233.1
    assert rss_problems(attempts, 233) == ["attempt 3: peak RSS 233.1 MiB > ceiling 233 MiB"]


def test_verification_failures_are_each_caught() -> None:
    assert verification_problems(None, entries=1, length=1) == ["no archive to verify"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"zip_ok": False}, "ZIP check"),
        ({"entries": 3999}, "3999 entries"),
        ({"unknown_entries": 2}, "match no source"),
        ({"checksum": "CRC32 FULL_OBJECT computed"}, "not verified"),
        ({"checksum": None}, "not verified"),
        ({"length": 100 * GB - 1}, "bytes, the job says"),
        ({"errors": ["entry 7: crc mismatch"]}, "entry 7"),
    ]
    for change, expected in cases:
        problems = verification_problems(GOOD_REPORT | change, entries=4000, length=100 * GB)
        assert any(expected in p for p in problems), (change, problems)


def test_a_job_not_ready_fails_the_run() -> None:
    attempts = clean_run()
    attempts[2].after.status = "FAILED"
    verdict = judge(attempts, final_status="FAILED", ceiling_mib=233, verification=[])
    assert not verdict.ok
    assert verdict.problems[0] == "the job ended FAILED, not READY"


def test_stalled_needs_the_whole_window_without_progress() -> None:
    flat = [attempt(n, snap(5 * GB), snap(5 * GB)) for n in (1, 2, 3)]
    assert stalled(flat, 3)
    assert not stalled(flat[:2], 3)
    flat[1].after = snap(6 * GB)
    assert not stalled(flat, 3)


def test_the_markdown_names_every_attempt_and_the_verdict() -> None:
    attempts = clean_run()
    meta = {
        "archive_gb": 100.0,
        "command": "python -m loadtest.long_job --total-gb 100",
        "files": 4000,
        "file_mb": 25.0,
        "budget_mb": 64,
        "part_size_mib": 54,
        "parts": 1767,
        "ceiling_mib": 233,
        "attempt_seconds": 600,
        "max_receives": 100,
        "cpus": 2,
        "load_before": (1.0, 1.0, 1.0),
    }
    summary = {
        "ok": False,
        "final_status": "READY",
        "attempts": 3,
        "wall_seconds": 1800,
        "mb_s": 55.6,
        "peak_rss_mib": 150.0,
        "problems": ["something"],
        "verification_problems": [],
    }
    text = markdown({"meta": meta, "summary": summary, "attempts": [a.as_json() for a in attempts]})
    assert "**Result: FAIL**" in text and "- something" in text
    assert text.count("\n| ") == 1 + len(attempts)  # the header, then one row per attempt
