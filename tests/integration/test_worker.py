"""Worker and job-store behaviour against local AWS: only forward, leases, duplicates,
retries into the dead-letter queue, and SIGTERM releasing unfinished jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.engine import Progress
from service.engine.uploader import PartWriter
from service.jobs import Action, JobMessage, JobService, JobStatus, run_job_message
from service.jobs.models import FailureReason
from service.jobs.validation import parse_job_request
from service.local.samples import Sample, sample_pdfs
from service.local.stack import Provisioned, StackNames, provision
from service.worker import Worker
from tests.support.archive_check import verify_archive_bytes
from tests.support.aws_backend import AwsEndpoint
from tests.support.s3_objects import get_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    names = StackNames(f"wrk-{uuid.uuid4().hex[:8]}", max_receives=2)
    return await provision(aws_endpoint.settings(), names)


@pytest.fixture(scope="module")
async def svc(stack: Provisioned) -> AsyncIterator[JobService]:
    # Long enough that a loop starved by the in-process moto server on a busy
    # machine cannot lose a lease by accident; the lease tests pass their own.
    # No periodic sweep here: these tests count messages and attempts exactly;
    # the sweeper has its own tests (test_sweeper.py).
    settings = stack.settings(ZIPJOBS_LEASE_SECONDS="15", ZIPJOBS_SWEEP_INTERVAL_SECONDS="0")
    async with JobService.open(settings) as service:
        yield service


@pytest.fixture(scope="module")
async def samples(svc: JobService) -> list[Sample]:
    docs = sample_pdfs(6, 12 * 1024 * 1024, prefix="docs/", seed=7)
    await asyncio.gather(
        *(
            svc.s3.put_object(Bucket=svc.settings.default_bucket, Key=s.key, Body=s.data)
            for s in docs
        )
    )
    return docs


async def new_job(svc: JobService, keys: list[str], **fields: Any) -> str:
    """Create a job record directly, without queueing it (tests send messages themselves)."""
    request = parse_job_request(json.dumps({"keys": keys, **fields}).encode(), svc.settings)
    record = await svc._new_record(uuid.uuid4().hex, request)
    await svc.store.create(record)
    return record.job_id


async def send(svc: JobService, job_id: str) -> None:
    await svc.sqs.send_message(
        QueueUrl=svc.settings.queue_url, MessageBody=json.dumps({"jobId": job_id})
    )


async def queue_is_empty(svc: JobService, queue_url: str | None = None) -> bool:
    attrs = await svc.sqs.get_queue_attributes(
        QueueUrl=queue_url or svc.settings.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    a = attrs["Attributes"]
    visible, hidden = a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"]
    return int(visible) + int(hidden) == 0


async def wait_status(
    svc: JobService, job_id: str, statuses: set[JobStatus], timeout: float = 60
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        record = await svc.store.get(job_id)
        assert record is not None
        if record.status in statuses:
            return record
        assert time.monotonic() < deadline, f"job stuck in {record.status}"
        await asyncio.sleep(0.1)


async def uploads_for(svc: JobService, job_id: str) -> list[dict[str, Any]]:
    resp = await svc.s3.list_multipart_uploads(
        Bucket=svc.settings.dst_bucket, Prefix=f"archives/{job_id}/"
    )
    return list(resp.get("Uploads", []))


# --- the store: a job moves only forward ---------------------------------------------------


async def test_transitions_are_conditional_and_only_forward(svc: JobService) -> None:
    store = svc.store
    job_id = await new_job(svc, ["docs/x.pdf"])
    first = await store.claim(job_id, "w1", 30, "m1")
    assert first is not None and first.status is JobStatus.RUNNING and first.attempts == 1
    assert await store.claim(job_id, "w2", 30, "m1") is None  # live lease: nobody else
    assert not await store.heartbeat(job_id, "w2", Progress(1, 2, 0, 1), 30)
    assert await store.heartbeat(job_id, "w1", Progress(1, 2, 0, 1), 30)
    assert not await store.mark_ready(job_id, "w2", Progress(), 10, [])
    assert await store.mark_ready(job_id, "w1", Progress(2, 2, 1, 1), 10, [])
    # READY is final: no cancel, no failure, no claim, no heartbeat.
    assert await store.cancel(job_id) is None
    assert not await store.mark_failed(job_id, FailureReason("X", "y"))
    assert await store.claim(job_id, "w1", 30, "m1") is None
    assert not await store.heartbeat(job_id, "w1", Progress(), 30)
    final = await store.get(job_id)
    assert final is not None and final.status is JobStatus.READY and final.archive_bytes == 10


async def test_an_expired_lease_can_be_taken_over(svc: JobService) -> None:
    store = svc.store
    job_id = await new_job(svc, ["docs/x.pdf"])
    assert await store.claim(job_id, "w1", 1, "m1") is not None
    assert await store.claim(job_id, "w2", 30, "m1") is None
    await asyncio.sleep(1.2)
    taken = await store.claim(job_id, "w2", 30, "m1")
    assert taken is not None and taken.lease_owner == "w2" and taken.attempts == 2
    assert not await store.heartbeat(job_id, "w1", Progress(), 30)  # the old owner lost it


async def test_cancelled_running_job_refuses_the_heartbeat(svc: JobService) -> None:
    job_id = await new_job(svc, ["docs/x.pdf"])
    assert await svc.store.claim(job_id, "w1", 30, "m1") is not None
    cancelled = await svc.store.cancel(job_id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert not await svc.store.heartbeat(job_id, "w1", Progress(), 30)
    assert not await svc.store.mark_ready(job_id, "w1", Progress(), 1, [])


# --- duplicates ---------------------------------------------------------------------------


async def test_a_message_for_a_job_under_a_live_lease_does_nothing(
    svc: JobService, samples: list[Sample]
) -> None:
    from service.engine import Budget, MiB

    job_id = await new_job(svc, [samples[0].key])
    assert await svc.store.claim(job_id, "elsewhere", 30, "m-original") is not None
    budget = Budget(64 * MiB)
    other = await run_job_message(svc, JobMessage(job_id, "m-second", 1), owner="me", budget=budget)
    assert other.action is Action.DELETE  # a second message: the first one runs the job
    again = await run_job_message(
        svc, JobMessage(job_id, "m-original", 2), owner="me", budget=budget
    )
    assert again.action is Action.RETRY and 25 <= again.delay <= 32  # back after the lease
    record = await svc.store.get(job_id)
    assert record is not None and record.lease_owner == "elsewhere" and record.attempts == 1


async def test_a_duplicate_message_runs_the_job_once(
    svc: JobService, samples: list[Sample], tmp_path: Any
) -> None:
    job_id = await new_job(svc, [s.key for s in samples])
    await send(svc, job_id)
    await send(svc, job_id)
    worker = Worker(svc, poll_seconds=1, concurrency=2)
    task = asyncio.create_task(worker.run())
    try:
        record = await wait_status(svc, job_id, {JobStatus.READY, JobStatus.FAILED})
        assert record.status is JobStatus.READY
        deadline = time.monotonic() + 15
        while not await queue_is_empty(svc):
            assert time.monotonic() < deadline, "the duplicate message was never consumed"
            await asyncio.sleep(0.3)
    finally:
        worker.stop()
        await task
    after = await svc.store.get(job_id)
    assert after is not None and after.attempts == 1 and after.updated_at == record.updated_at
    data = await get_bytes(svc.s3, record.dst_bucket, record.dst_key)
    verify_archive_bytes(data, {s.key: s.data for s in samples}, tmp_dir=tmp_path)

    # Delivered again after it finished: acknowledged, nothing rewritten.
    await send(svc, job_id)
    worker = Worker(svc, poll_seconds=1)
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 15
        while not await queue_is_empty(svc):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.3)
    finally:
        worker.stop()
        await task
    final = await svc.store.get(job_id)
    assert final == after


# --- transient failures: retried, then FAILED and dead-lettered ---------------------------


async def test_transient_failures_retry_then_fail_into_the_dlq(
    svc: JobService, stack: Provisioned, samples: list[Sample]
) -> None:
    # The archive bucket does not exist: planning succeeds, every upload fails.
    broken = JobService(
        dataclasses.replace(svc.settings, dst_bucket="no-such-bucket-zz"),
        s3=svc.s3,
        dynamodb=svc.dynamodb,
        sqs=svc.sqs,
    )
    job_id = await new_job(broken, [samples[0].key])
    await send(broken, job_id)
    worker = Worker(broken, poll_seconds=1)
    task = asyncio.create_task(worker.run())
    try:
        record = await wait_status(svc, job_id, {JobStatus.READY, JobStatus.FAILED}, timeout=30)
        dead: list[str] = []
        deadline = time.monotonic() + 20
        while not dead:  # one more receive attempt moves the message to the DLQ
            resp = await svc.sqs.receive_message(QueueUrl=stack.dlq_url, WaitTimeSeconds=1)
            dead = [m["Body"] for m in resp.get("Messages", [])]
            assert time.monotonic() < deadline, "message never reached the DLQ"
    finally:
        worker.stop()
        await task
    assert record.status is JobStatus.FAILED
    assert record.error.code == "RetriesExhausted"
    assert "after 2 attempt(s)" in record.error.message and "NoSuchBucket" in record.error.message
    assert record.attempts == 2
    assert [json.loads(b)["jobId"] for b in dead] == [job_id]


async def test_a_poison_message_is_dropped(svc: JobService) -> None:
    await svc.sqs.send_message(QueueUrl=svc.settings.queue_url, MessageBody="not json")
    worker = Worker(svc, poll_seconds=1)
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 10
        while not await queue_is_empty(svc):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    finally:
        worker.stop()
        await task


# --- SIGTERM: drain, then release --------------------------------------------------------


async def test_stop_releases_an_unfinished_job_for_another_worker(
    svc: JobService, samples: list[Sample], tmp_path: Any
) -> None:
    keys = [s.key for s in samples] * 8  # deflate over ~100 MB: seconds of work
    job_id = await new_job(svc, keys, compression="deflate")
    await send(svc, job_id)
    first = Worker(svc, poll_seconds=1, grace_seconds=0.5, owner="first")
    task = asyncio.create_task(first.run())
    deadline = time.monotonic() + 30
    while not await uploads_for(svc, job_id):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    first.stop()  # what SIGTERM does
    await task
    released = await svc.store.get(job_id)
    # Handed back, visibly waiting for its next attempt (no error: a shutdown).
    assert released is not None and released.status is JobStatus.WAITING
    assert released.lease_owner is None and released.lease_expires_at is None
    assert released.last_error is None and released.next_attempt_at is not None
    assert await uploads_for(svc, job_id) == []  # the engine aborted its upload

    record = await run_to_the_end(svc, job_id, owner="second")
    assert record.status is JobStatus.READY and record.attempts == 2
    await check_repeated_keys_archive(svc, record, keys, samples, tmp_path)


async def run_to_the_end(svc: JobService, job_id: str, owner: str) -> Any:
    """A fresh worker until the job is READY or FAILED; the final record."""
    worker = Worker(svc, poll_seconds=1, owner=owner)
    task = asyncio.create_task(worker.run())
    try:
        return await wait_status(svc, job_id, {JobStatus.READY, JobStatus.FAILED})
    finally:
        worker.stop()
        await task


async def check_repeated_keys_archive(
    svc: JobService, record: Any, keys: list[str], samples: list[Sample], tmp_path: Any
) -> None:
    """The archive has every key (repeats renamed) and passes the five readers."""
    by_key = {s.key: s.data for s in samples}
    data = await get_bytes(svc.s3, record.dst_bucket, record.dst_key)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
    assert len(names) == len(keys)
    # Repeated keys get " (n)" before the extension (the engine's renaming).
    expected = {name: by_key[re.sub(r" \(\d+\)(\.pdf)$", r"\1", name)] for name in names}
    verify_archive_bytes(data, expected, tmp_dir=tmp_path)


async def test_redeploys_that_progress_never_use_up_a_stored_jobs_attempts(
    svc: JobService, samples: list[Sample], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More shutdowns mid-job than the queue's receive limit (2 here): the job ends READY.

    Each worker is stopped (SIGTERM, as a redeploy does) once the upload holds
    more parts than before; the STORED job keeps them, so its release is a
    continuation with a fresh message, not a used-up attempt
    (service/jobs/continuation.py). Without that, the third delivery would
    go to the dead-letter queue.
    """
    keys = [s.key for s in samples] * 24  # ~290 MiB STORED, 36 parts
    real_upload = PartWriter._upload_part

    async def slow(self: PartWriter, number: int, *rest: Any) -> None:
        await asyncio.sleep(0.3)  # each deployment gets a few parts done, not all
        await real_upload(self, number, *rest)

    monkeypatch.setattr(PartWriter, "_upload_part", slow)
    job_id = await new_job(svc, keys)
    await send(svc, job_id)
    record = await svc.store.get(job_id)
    assert record is not None
    bucket = record.dst_bucket

    async def parts_uploaded() -> int:
        for upload in await uploads_for(svc, job_id):
            listed = await svc.s3.list_parts(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            return len(listed.get("Parts", []))
        return 0

    kept = 0
    for n in range(3):
        worker = Worker(svc, poll_seconds=1, grace_seconds=0.2, owner=f"deploy-{n}")
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 60
        while await parts_uploaded() <= kept:
            assert time.monotonic() < deadline, f"no progress in deployment {n}"
            await asyncio.sleep(0.05)
        worker.stop()
        await task
        released = await svc.store.get(job_id)
        assert released is not None and released.status is JobStatus.WAITING, (n, released)
        assert released.attempts == 0  # continued afresh, not counted
        now = await parts_uploaded()
        assert now > kept
        kept = now

    done = await run_to_the_end(svc, job_id, owner="deploy-last")
    assert done.status is JobStatus.READY, done.error
    assert await uploads_for(svc, job_id) == []
    await check_repeated_keys_archive(svc, done, keys, samples, tmp_path)
