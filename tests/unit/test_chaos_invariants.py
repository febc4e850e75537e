"""The chaos run's expectation for jobs that cannot succeed (tests/chaos/invariants.py, rule 6)."""

from __future__ import annotations

import datetime as dt

from service.jobs.models import FailureReason, JobRecord, JobRequest, JobStatus
from service.jobs.runner import retries_exhausted
from tests.chaos.invariants import _expected_end

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def ended(status: JobStatus, error: FailureReason | None) -> JobRecord:
    return JobRecord(
        job_id="j",
        status=status,
        request=JobRequest("b", ("absent/k",), None, name="chaos-009.zip"),
        dst_bucket="d",
        dst_key="archives/j/chaos-009.zip",
        created_at=T0,
        updated_at=T0,
        expires_at=0,
        error=error,
    )


def test_a_missing_key_job_must_say_missing_sources() -> None:
    missing = FailureReason("MissingSources", "1 source(s) missing")
    assert _expected_end(ended(JobStatus.FAILED, missing), "oversized") == []
    assert _expected_end(ended(JobStatus.READY, None), "missing")


def test_gave_up_is_accepted_only_when_every_attempt_was_killed() -> None:
    """A job that shared a worker with the worker-killing job in every attempt
    never reached its HEADs' verdict; one whose attempts reported a transient
    error did, and should have said MissingSources."""
    killed = retries_exhausted(3, None)  # the runner's own wording
    assert _expected_end(ended(JobStatus.FAILED, killed), "oversized") == []
    throttled = retries_exhausted(3, FailureReason("Throttled", "SlowDown on HEAD"))
    assert _expected_end(ended(JobStatus.FAILED, throttled), "oversized")
    assert _expected_end(ended(JobStatus.FAILED, throttled), "missing")
