"""The sweeper and the dead-letter handler against local AWS: a lost send is re-sent and the
job finished by a worker; a crash loop ends FAILED naming attempts and last error; several
sweepers act once; a live lease is never touched; a FAILED job leaves no output.

A clock moved forward (``JobService(clock=...)``) stands in for minutes passing.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from service.jobs import JobService, JobStatus
from service.jobs.sweeper import drain_dead_letters, handle_dead_letter, sweep
from service.jobs.validation import parse_job_request
from service.local.stack import Provisioned, StackNames, provision
from service.settings import Settings
from service.worker import Worker
from tests.support.aws_backend import AwsEndpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    return await provision(
        aws_endpoint.settings(), StackNames(f"sw-{uuid.uuid4().hex[:8]}", max_receives=5)
    )


@pytest.fixture(scope="module")
async def svc(stack: Provisioned) -> AsyncIterator[JobService]:
    async with JobService.open(stack.settings(ZIPJOBS_SWEEP_INTERVAL_SECONDS="0")) as service:
        yield service


@pytest.fixture(autouse=True)
async def empty_queues(svc: JobService, stack: Provisioned) -> None:
    for url in (stack.queue_url, stack.dlq_url):
        await empty(svc, url)
    # Jobs other tests left unfinished would be swept too: finish them.
    for record in await svc.store.unfinished():
        await svc.store.cancel(record.job_id)


async def empty(svc: JobService, url: str) -> None:
    """Delete every message (PurgeQueue allows one call a minute)."""
    while True:
        resp = await svc.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        if not resp.get("Messages"):
            return
        for m in resp["Messages"]:
            await svc.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def later(svc: JobService, seconds: float) -> JobService:
    """The same service, its clock ``seconds`` ahead."""
    clock: Callable[[], float] = lambda: time.time() + seconds  # noqa: E731
    return JobService(svc.settings, s3=svc.s3, dynamodb=svc.dynamodb, sqs=svc.sqs, clock=clock)


async def new_job(svc: JobService, keys: list[str]) -> str:
    """A job as the API writes it, its message never sent (the API died in between)."""
    request = parse_job_request(json.dumps({"keys": keys}).encode(), svc.settings)
    record = await svc._new_record(uuid.uuid4().hex, request)
    await svc.store.create(record)
    return record.job_id


async def queued(svc: JobService, url: str | None = None) -> list[str]:
    resp = await svc.sqs.receive_message(
        QueueUrl=url or svc.settings.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    )
    return [json.loads(m["Body"])["jobId"] for m in resp.get("Messages", [])]


async def put(svc: JobService, key: str) -> None:
    await svc.s3.put_object(Bucket=svc.settings.default_bucket, Key=key, Body=b"%PDF-1.4 x")


async def test_a_lost_send_is_resent_and_the_worker_finishes_the_job(
    stack: Provisioned, svc: JobService
) -> None:
    """``zipjobs worker`` sweeps by itself: the PENDING job with no message ends READY."""
    await put(svc, "lost/a.pdf")
    job_id = await new_job(svc, ["lost/a.pdf"])
    fast = stack.settings(ZIPJOBS_SWEEP_INTERVAL_SECONDS="1", ZIPJOBS_RESEND_AFTER_SECONDS="1")
    async with JobService.open(fast) as wsvc:
        worker = Worker(wsvc, poll_seconds=1)
        task = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 30
            while (record := await svc.store.get(job_id)) is not None and not record.status.final:
                assert time.monotonic() < deadline, f"job stuck {record.status}"
                await asyncio.sleep(0.2)
        finally:
            worker.stop()
            await task
    assert record is not None and record.status is JobStatus.READY
    assert record.resends == 1 and record.attempts == 1


async def test_the_default_thresholds_resend_a_lost_send_within_two_minutes(
    svc: JobService,
) -> None:
    job_id = await new_job(svc, ["x.pdf"])
    s = svc.settings
    defaults = Settings(table="t", queue_url="q", src_buckets=("b",), dst_bucket="d")
    assert defaults.resend_after_seconds + defaults.sweep_interval_seconds == 120
    assert s.resend_after_seconds == defaults.resend_after_seconds
    assert (await sweep(later(svc, s.resend_after_seconds - 5)))["resent"] == 0
    assert (await sweep(later(svc, s.resend_after_seconds + 1)))["resent"] == 1
    assert await queued(svc) == [job_id]


async def test_several_sweepers_resend_a_job_once(svc: JobService) -> None:
    job_id = await new_job(svc, ["x.pdf"])
    future = later(svc, 3600)
    results = await asyncio.gather(*(sweep(future) for _ in range(4)))
    assert sum(r["resent"] for r in results) == 1
    assert await queued(svc) == [job_id]
    record = await svc.store.get(job_id)
    assert record is not None and record.status is JobStatus.PENDING and record.resends == 1


async def test_a_live_lease_is_never_swept(svc: JobService) -> None:
    job_id = await new_job(svc, ["x.pdf"])
    assert await svc.store.claim(job_id, "alive", 7200, "m1") is not None
    done = await sweep(later(svc, 3600))
    assert done["resent"] == done["failed"] == 0
    record = await svc.store.get(job_id)
    assert record is not None and record.status is JobStatus.RUNNING
    assert await handle_dead_letter(later(svc, 3600), json.dumps({"jobId": job_id})) is False


async def test_a_running_job_whose_worker_died_is_handed_back_and_resent(
    svc: JobService,
) -> None:
    job_id = await new_job(svc, ["x.pdf"])
    assert await svc.store.claim(job_id, "dead", 30, "m1") is not None
    assert (await sweep(later(svc, 60)))["resent"] == 0  # expired, not long enough ago
    assert (await sweep(later(svc, 100)))["resent"] == 1
    record = await svc.store.get(job_id)
    assert record is not None and record.status is JobStatus.WAITING
    assert record.lease_owner is None and record.attempts == 1
    assert await queued(svc) == [job_id]


async def _crash_loop(svc: JobService, stack: Provisioned, attempts: int) -> tuple[str, Any]:
    """A job killed in every attempt: attempts used up, lease expired, message dead-lettered."""
    job_id = await new_job(svc, ["x.pdf"])
    for n in range(attempts):
        assert await svc.store.claim(job_id, f"killed-{n}", 0.01, f"m{n}") is not None
        await asyncio.sleep(0.05)
    record = await svc.store.get(job_id)
    assert record is not None and record.attempts == attempts
    # Its output: an upload the last killed attempt left behind.
    await svc.s3.create_multipart_upload(Bucket=record.dst_bucket, Key=record.dst_key)
    await svc.sqs.send_message(QueueUrl=stack.dlq_url, MessageBody=json.dumps({"jobId": job_id}))
    return job_id, record


async def _no_output(svc: JobService, record: Any) -> None:
    resp = await svc.s3.list_multipart_uploads(Bucket=record.dst_bucket, Prefix=record.dst_key)
    assert resp.get("Uploads", []) == []


async def test_a_dead_lettered_job_ends_failed_naming_attempts_and_last_error(
    svc: JobService, stack: Provisioned
) -> None:
    job_id, record = await _crash_loop(svc, stack, 5)
    assert await drain_dead_letters(svc) == 1
    final = await svc.store.get(job_id)
    assert final is not None and final.status is JobStatus.FAILED and final.error is not None
    assert final.error.code == "RetriesExhausted"
    assert "after 5 attempt(s)" in final.error.message
    assert "killed, out of memory or out of time" in final.error.message
    assert await queued(svc, stack.dlq_url) == []
    await _no_output(svc, record)


async def test_without_the_dlq_the_sweep_fails_a_crash_loop_too(
    svc: JobService, stack: Provisioned
) -> None:
    job_id, record = await _crash_loop(svc, stack, 5)
    await empty(svc, stack.dlq_url)
    assert (await sweep(later(svc, 120)))["failed"] == 1
    final = await svc.store.get(job_id)
    assert final is not None and final.status is JobStatus.FAILED
    await _no_output(svc, record)


async def test_a_waiting_job_names_its_recorded_last_error_when_it_fails(
    svc: JobService,
) -> None:
    from service.jobs.models import FailureReason

    job_id = await new_job(svc, ["x.pdf"])
    for n in range(5):
        assert await svc.store.claim(job_id, "w", 30, f"m{n}") is not None
        await svc.store.release(
            job_id, "w", error=FailureReason("Transient", f"SlowDown #{n}"), max_attempts=5
        )
    assert (await sweep(later(svc, 120)))["failed"] == 1
    final = await svc.store.get(job_id)
    assert final is not None and final.error is not None
    assert "after 5 attempt(s)" in final.error.message and "SlowDown #4" in final.error.message


async def test_a_delivery_after_the_attempts_are_used_up_fails_the_job_instead_of_running_it(
    svc: JobService, stack: Provisioned
) -> None:
    """A re-sent message starts its receive count at 1; the job's attempts still bound it."""
    from service.engine import Budget, MiB
    from service.jobs import Action, JobMessage, run_job_message

    job_id, record = await _crash_loop(svc, stack, 5)
    outcome = await run_job_message(
        svc, JobMessage(job_id, "m-resent", 1), owner="w", budget=Budget(64 * MiB)
    )
    assert outcome.action is Action.DELETE
    final = await svc.store.get(job_id)
    assert final is not None and final.status is JobStatus.FAILED and final.error is not None
    assert final.error.code == "RetriesExhausted" and final.attempts == 5
    await _no_output(svc, record)
