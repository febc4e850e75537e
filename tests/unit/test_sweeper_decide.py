"""The sweeper's decision for one job, from the record and the clock alone (docs/lifecycle.md)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from service.jobs.models import FailureReason, JobRecord, JobRequest, JobStatus
from service.jobs.sweeper import Verdict, decide

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def rec(status: JobStatus, **kw: object) -> JobRecord:
    base = JobRecord(
        job_id="j",
        status=status,
        request=JobRequest("b", ("k",), None),
        dst_bucket="d",
        dst_key="archives/j/a.zip",
        created_at=T0,
        updated_at=T0,
        expires_at=0,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def verdict(record: JobRecord, now: dt.datetime, max_attempts: int = 5) -> Verdict:
    return decide(record, now, resend_after=60, max_resends=3, max_attempts=max_attempts).verdict


def test_a_pending_job_is_resent_after_the_threshold_then_with_backoff() -> None:
    assert verdict(rec(JobStatus.PENDING), at(59)) is Verdict.WAIT
    assert verdict(rec(JobStatus.PENDING), at(61)) is Verdict.RESEND
    once = rec(JobStatus.PENDING, resends=1)
    assert verdict(once, at(119)) is Verdict.WAIT and verdict(once, at(121)) is Verdict.RESEND


def test_a_pending_job_never_started_after_the_resends_fails_saying_so() -> None:
    d = decide(
        rec(JobStatus.PENDING, resends=3),
        at(10_000),
        resend_after=60,
        max_resends=3,
        max_attempts=5,
    )
    assert d.verdict is Verdict.FAIL and d.error is not None and d.error.code == "NeverStarted"


def test_a_running_job_under_a_live_lease_is_left_alone() -> None:
    live = rec(JobStatus.RUNNING, lease_expires_at=at(1000).timestamp(), attempts=9)
    assert verdict(live, at(999)) is Verdict.WAIT
    assert verdict(live, at(1059)) is Verdict.WAIT  # expired, but not long enough ago


def test_a_running_job_whose_lease_expired_long_ago_is_resent_or_failed() -> None:
    stale = rec(JobStatus.RUNNING, lease_expires_at=at(10).timestamp(), attempts=2)
    assert verdict(stale, at(71)) is Verdict.RESEND
    crashed = dataclasses.replace(stale, attempts=5)
    d = decide(crashed, at(71), resend_after=60, max_resends=3, max_attempts=5)
    assert d.verdict is Verdict.FAIL and d.error is not None
    assert d.error.code == "RetriesExhausted" and "5 attempt" in d.error.message
    assert "none recorded" in d.error.message  # killed: no error was ever written


def test_a_waiting_job_is_due_at_its_next_attempt_and_fails_naming_the_last_error() -> None:
    waiting = rec(
        JobStatus.WAITING,
        next_attempt_at=at(100),
        attempts=5,
        last_error=FailureReason("Transient", "SlowDown: reduce your request rate"),
    )
    assert verdict(waiting, at(159)) is Verdict.WAIT
    d = decide(waiting, at(161), resend_after=60, max_resends=3, max_attempts=5)
    assert d.verdict is Verdict.FAIL and d.error is not None
    assert "SlowDown: reduce your request rate" in d.error.message
    assert verdict(dataclasses.replace(waiting, attempts=1), at(161)) is Verdict.RESEND


def test_final_jobs_are_never_touched() -> None:
    for status in (JobStatus.READY, JobStatus.FAILED, JobStatus.CANCELLED):
        assert verdict(rec(status, attempts=99, resends=99), at(10**6)) is Verdict.WAIT
