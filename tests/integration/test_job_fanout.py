"""Job-level fan-out against local AWS: one archive built by N range messages.

The job's message splits it (plan and upload created, split recorded, N
range messages queued); each range message is delivered through the
zipper's SQS batch handler (``lambda_adapter.sqs_batch.process_batch``), as
the event source mapping would, here out of order and concurrently; the
range that completes the set finishes the upload. docs/resume.md,
"Job-level fan-out".

The threshold is lowered to 8 MiB per range, so a ~30 MiB archive of 8 MiB
parts is split into 4 ranges.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from lambda_adapter import sqs_batch
from lambda_adapter.sqs_batch import SAFETY_SECONDS, process_batch
from service.engine import (
    Budget,
    Destination,
    MiB,
    Progress,
    SourceObject,
    ZipOptions,
    build_zip,
)
from service.engine.fanout import split_parts
from service.engine.range_checkpoint import RangeCheckpoint, range_checkpoint_store
from service.engine.range_checkpoint import decode as decode_range_checkpoint
from service.jobs import Action, JobMessage, JobService, JobStatus, run_job_message
from service.jobs.fanout_store import PLAN_SUFFIX, RANGE_SUFFIX, range_checkpoint_key
from service.jobs.models import FanOut, JobRecord
from service.jobs.sweeper import handle_dead_letter, sweep
from service.jobs.validation import parse_job_request
from service.local.stack import Provisioned, StackNames, provision
from service.worker import Worker
from tests.support.archive_check import verify_archive_bytes
from tests.support.aws_backend import AwsEndpoint

pytestmark = pytest.mark.integration

WORKERS = 4


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    names = StackNames(f"fan-{uuid.uuid4().hex[:8]}", visibility_seconds=600, max_receives=3)
    return await provision(aws_endpoint.settings(), names)


@pytest.fixture(scope="module")
async def svc(stack: Provisioned) -> AsyncIterator[JobService]:
    settings = stack.settings(
        ZIPJOBS_LEASE_SECONDS="15", ZIPJOBS_FANOUT_MIN_MB="8", ZIPJOBS_FANOUT_MAX_WORKERS="8"
    )
    async with JobService.open(settings) as service:
        yield service


def sources(tag: str) -> dict[str, bytes]:
    """~30 MiB: a file spanning three 8 MiB parts, others on part edges, empty files."""
    rng = random.Random(tag)
    sizes = [3 * MiB + 5, 17 * MiB + 11, 0, 1234, 6 * MiB - 7, 0, 4 * MiB + 999, 77]
    return {f"{tag}/f{i:02d}.pdf": rng.randbytes(n) for i, n in enumerate(sizes)}


async def put_sources(svc: JobService, docs: dict[str, bytes]) -> None:
    for key, body in docs.items():
        await svc.s3.put_object(Bucket=svc.settings.default_bucket, Key=key, Body=body)


async def new_job(svc: JobService, keys: list[str]) -> str:
    request = parse_job_request(json.dumps({"keys": keys}).encode(), svc.settings)
    record = await svc._new_record(uuid.uuid4().hex, request)
    await svc.store.create(record)
    return record.job_id


async def split_job(
    svc: JobService, docs: dict[str, bytes], workers: int = WORKERS
) -> tuple[JobRecord, list[Any]]:
    """Store the job, run its message (the split), take the range messages off the queue."""
    await put_sources(svc, docs)
    job_id = await new_job(svc, list(docs))
    outcome = await run_job_message(
        svc, JobMessage(job_id, "m-job", 1), owner="splitter", budget=Budget(64 * MiB)
    )
    assert outcome.action is Action.DELETE, outcome
    assert outcome.reason == f"split into {workers} range messages", outcome
    record = await svc.store.get(job_id)
    assert record is not None and record.status is JobStatus.RUNNING
    assert record.fanout is not None and record.fanout.workers == workers
    messages = await take_messages(svc, workers)
    ranges = sorted(json.loads(m["Body"])["range"] for m in messages)
    assert ranges == list(range(workers))
    assert {json.loads(m["Body"])["jobId"] for m in messages} == {job_id}
    messages.sort(key=lambda m: json.loads(m["Body"])["range"])
    return record, messages


async def take_messages(svc: JobService, n: int) -> list[Any]:
    """Receive (and delete) exactly ``n`` messages: the test plays the event source mapping."""
    got: list[Any] = []
    for _ in range(10):
        resp = await svc.sqs.receive_message(
            QueueUrl=svc.settings.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for m in resp.get("Messages", []):
            await svc.sqs.delete_message(
                QueueUrl=svc.settings.queue_url, ReceiptHandle=m["ReceiptHandle"]
            )
            got.append(m)
        if len(got) >= n:
            break
    assert len(got) == n, [m["Body"] for m in got]
    return got


def event_record(message: Any, receive_count: int = 1) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {"ApproximateReceiveCount": str(receive_count)},
    }


async def deliver(svc: JobService, message: Any, receive_count: int = 1) -> list[str]:
    """One zipper invocation with this message; the ids it reports as failed."""
    result = await process_batch(
        svc,
        Budget(128 * MiB),  # each invocation is its own Lambda
        [event_record(message, receive_count)],
        owner=f"lambda-{uuid.uuid4().hex[:6]}",
        seconds_left=lambda: 900.0,
    )
    return [f["itemIdentifier"] for f in result["batchItemFailures"]]


async def leftovers(svc: JobService, record: JobRecord) -> tuple[list[Any], list[str]]:
    """Multipart uploads of the archive key, and fan-out objects (plan, results) beside it."""
    bucket, key = record.dst_bucket, record.dst_key
    uploads = (await svc.s3.list_multipart_uploads(Bucket=bucket, Prefix=key)).get("Uploads", [])
    listed = await svc.s3.list_objects_v2(Bucket=bucket, Prefix=key + ".zipjobs-")
    return list(uploads), [o["Key"] for o in listed.get("Contents", [])]


async def archive_bytes(svc: JobService, bucket: str, key: str) -> bytes:
    resp = await svc.s3.get_object(Bucket=bucket, Key=key)
    return bytes(await resp["Body"].read())


async def single_build(svc: JobService, docs: dict[str, bytes], tag: str) -> bytes:
    """The same sources built by one worker (the engine's single path)."""
    dest = Destination(svc.settings.dst_bucket, f"single/{tag}.zip")
    await build_zip(
        [SourceObject(svc.settings.default_bucket, k) for k in docs],
        dest,
        s3=svc.s3,
        options=ZipOptions(budget_bytes=64 * MiB),
    )
    return await archive_bytes(svc, dest.bucket, dest.key)


@contextlib.asynccontextmanager
async def sampling_progress(svc: JobService, job_id: str, seen: list[int]) -> AsyncIterator[None]:
    """Append the job's bytes done to ``seen`` every 50 ms while the block runs."""
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            current = await svc.store.get(job_id)
            assert current is not None
            seen.append(current.progress.bytes_done)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        yield
    finally:
        stop.set()
        await sampler


async def test_a_big_job_fans_out_and_its_archive_equals_the_single_build(
    svc: JobService,
) -> None:
    """Split into 4 range messages; a duplicate of a built range is acknowledged without
    a rebuild and counted once; the other ranges run concurrently in reverse order;
    the last one finishes. The archive is byte-identical to a single worker's build of
    the same sources and passes the five readers; progress never goes back; no
    upload, plan or range result is left.

    Counting relies on UpdateItem ``ADD`` to a number set being atomic and
    idempotent (adding a member already in the set leaves one), which is how
    DynamoDB documents it:
    https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_UpdateItem.html
    ("ADD ... If the existing data type is a set ... the value is added to the
    set"; every UpdateItem is applied atomically to the item).
    """
    docs = sources("happy")
    record, messages = await split_job(svc, docs)
    fan = record.fanout
    assert fan is not None and fan.done == frozenset()

    assert await deliver(svc, messages[1]) == []
    after_one = await svc.store.get(record.job_id)
    assert after_one is not None and after_one.fanout is not None
    assert after_one.fanout.done == {1} and after_one.status is JobStatus.RUNNING
    total = sum(len(b) for b in docs.values())
    assert 0 < after_one.progress.bytes_done < total  # range 1's bytes, counted once built
    result_key = f"{record.dst_key}{RANGE_SUFFIX}1"
    first = await svc.s3.head_object(Bucket=record.dst_bucket, Key=result_key)

    again = await run_job_message(
        svc, JobMessage(record.job_id, "dup", 2, 1), owner="x", budget=Budget(128 * MiB)
    )
    assert (again.action, again.reason) == (Action.DELETE, "range 1 already built")
    second = await svc.s3.head_object(Bucket=record.dst_bucket, Key=result_key)
    assert second["ETag"] == first["ETag"] and second["LastModified"] == first["LastModified"]
    after_dup = await svc.store.get(record.job_id)
    assert after_dup is not None and after_dup.fanout is not None
    assert after_dup.fanout.done == {1}

    seen: list[int] = []
    async with sampling_progress(svc, record.job_id, seen):
        rest = [messages[3], messages[2], messages[0]]
        failed = await asyncio.gather(*(deliver(svc, m) for m in rest))
    assert failed == [[], [], []]

    done = await svc.store.get(record.job_id)
    assert done is not None and done.status is JobStatus.READY, done
    assert done.progress.bytes_done == done.progress.bytes_total == total
    assert done.progress.files_done == len(docs)
    assert seen == sorted(seen), "progress went backwards"
    data = await archive_bytes(svc, record.dst_bucket, record.dst_key)
    assert done.archive_bytes == len(data)
    assert data == await single_build(svc, docs, "happy")
    verify_archive_bytes(data, docs)
    assert await leftovers(svc, record) == ([], [])
    # A late duplicate of any range is acknowledged: the job is READY.
    late = await run_job_message(
        svc, JobMessage(record.job_id, "late", 3, 2), owner="x", budget=Budget(128 * MiB)
    )
    assert (late.action, late.reason) == (Action.DELETE, "job already READY")


async def test_a_small_job_stays_single(svc: JobService) -> None:
    docs = {"small/a.pdf": b"%PDF-1.4 a" * 1000, "small/b.pdf": b"%PDF-1.4 b" * 3000}
    await put_sources(svc, docs)
    job_id = await new_job(svc, list(docs))
    outcome = await run_job_message(
        svc, JobMessage(job_id, "m-small", 1), owner="w", budget=Budget(64 * MiB)
    )
    assert (outcome.action, outcome.reason) == (Action.DELETE, "job READY")
    record = await svc.store.get(job_id)
    assert record is not None and record.fanout is None and record.status is JobStatus.READY


async def test_a_permanently_failing_range_fails_the_job_and_leaves_nothing(
    svc: JobService,
) -> None:
    """The last source changes after the split: the range reading it fails with
    SourceChanged (permanent); the job is FAILED with that reason, the upload is
    aborted and the plan and the results of ranges already built are deleted."""
    docs = sources("broken")
    record, messages = await split_job(svc, docs)
    assert await deliver(svc, messages[0]) == []
    _, objects = await leftovers(svc, record)
    assert f"{record.dst_key}{RANGE_SUFFIX}0" in objects
    assert f"{record.dst_key}{PLAN_SUFFIX}" in objects

    last = list(docs)[-1]
    await svc.s3.put_object(Bucket=svc.settings.default_bucket, Key=last, Body=b"changed")
    assert await deliver(svc, messages[-1]) == []  # permanent: the message is done with

    failed = await svc.store.get(record.job_id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "SourceChanged", failed.error
    assert await leftovers(svc, record) == ([], [])
    # The other ranges' messages find the job over and do nothing.
    assert await deliver(svc, messages[1]) == []
    assert await leftovers(svc, record) == ([], [])


async def test_a_range_failing_transiently_is_retried_then_fails_the_job_at_the_last_receive(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient error returns the range's message (a batch item failure); on the
    queue's last receive the job is FAILED and its output discarded."""
    docs = sources("flaky")
    record, messages = await split_job(svc, docs)

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("network down")

    monkeypatch.setattr("service.jobs.fanout.save_result", broken)
    message = messages[2]
    assert await deliver(svc, message, receive_count=1) == [message["MessageId"]]
    waiting = await svc.store.get(record.job_id)
    assert waiting is not None and waiting.status is JobStatus.RUNNING
    assert await deliver(svc, message, receive_count=3) == [message["MessageId"]]
    failed = await svc.store.get(record.job_id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "RetriesExhausted"
    assert "network down" in failed.error.message
    assert await leftovers(svc, record) == ([], [])


async def test_a_range_out_of_time_is_returned_and_built_again(svc: JobService) -> None:
    """The Lambda deadline strikes inside a range: its message is reported as a batch
    item failure (returned), the job stays RUNNING and uncounted for that range, and
    the redelivery builds the range again; the job ends READY with a right archive."""
    docs = sources("deadline")
    record, messages = await split_job(svc, docs)
    for m in messages[1:]:
        assert await deliver(svc, m) == []
    first = messages[0]
    short = await process_batch(
        svc,
        Budget(128 * MiB),
        [event_record(first)],
        owner="lambda-short",
        seconds_left=lambda: SAFETY_SECONDS + 0.05,  # 50 ms of work before the deadline
    )
    assert [f["itemIdentifier"] for f in short["batchItemFailures"]] == [first["MessageId"]]
    between = await svc.store.get(record.job_id)
    assert between is not None and between.status is JobStatus.RUNNING
    assert between.fanout is not None and 0 not in between.fanout.done
    assert await deliver(svc, first, receive_count=2) == []
    done = await svc.store.get(record.job_id)
    assert done is not None and done.status is JobStatus.READY, done
    verify_archive_bytes(await archive_bytes(svc, record.dst_bucket, record.dst_key), docs)
    assert await leftovers(svc, record) == ([], [])


async def test_cancel_mid_way_aborts_the_upload_and_deletes_the_results(svc: JobService) -> None:
    docs = sources("cancel")
    record, messages = await split_job(svc, docs)
    assert await deliver(svc, messages[0]) == []
    running = asyncio.create_task(deliver(svc, messages[1]))
    await asyncio.sleep(0.3)
    view = await svc.cancel_job(record.job_id)
    assert view["status"] == "CANCELLED"
    assert await running == []
    assert await deliver(svc, messages[2]) == []
    current = await svc.store.get(record.job_id)
    assert current is not None and current.status is JobStatus.CANCELLED
    assert await leftovers(svc, record) == ([], [])
    listed = await svc.s3.list_objects_v2(Bucket=record.dst_bucket, Prefix=record.dst_key)
    assert listed.get("KeyCount", 0) == 0


async def test_a_finisher_that_dies_after_completing_is_finished_by_the_redelivery(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last range completes the upload, then its process dies before the job is
    marked READY (here: the READY write raises once). Its message comes back; the
    redelivery finds every range counted, finds the completed archive by its
    fingerprint and length, and makes the job READY, not FAILED."""
    docs = sources("finisher")
    record, messages = await split_job(svc, docs)
    for m in messages[:-1]:
        assert await deliver(svc, m) == []

    real = svc.store.mark_ready
    calls = 0

    async def dies_once(*args: Any, **kwargs: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("process died")
        return await real(*args, **kwargs)

    monkeypatch.setattr(svc.store, "mark_ready", dies_once)
    last = messages[-1]
    assert await deliver(svc, last) == [last["MessageId"]]
    between = await svc.store.get(record.job_id)
    assert between is not None and between.status is JobStatus.RUNNING
    assert between.fanout is not None and between.fanout.finished
    head = await svc.s3.head_object(Bucket=record.dst_bucket, Key=record.dst_key)
    assert record.fanout is not None and head["ContentLength"] == record.fanout.length

    assert await deliver(svc, last, receive_count=2) == []
    done = await svc.store.get(record.job_id)
    assert done is not None and done.status is JobStatus.READY, done
    data = await archive_bytes(svc, record.dst_bucket, record.dst_key)
    verify_archive_bytes(data, docs)
    assert await leftovers(svc, record) == ([], [])


async def test_a_lost_range_message_is_re_sent_by_the_job_s_own_message(
    svc: JobService,
) -> None:
    """Every range message but one ran; the last is lost and the lease expires. The
    job's message (re-sent by the sweeper) claims the job again and re-sends only
    the missing range, whose delivery finishes the job."""
    docs = sources("lost")
    record, messages = await split_job(svc, docs)
    for m in messages[:-1]:
        assert await deliver(svc, m) == []
    await svc.dynamodb.update_item(  # the lease runs out with nobody renewing it
        TableName=svc.settings.table,
        Key={"jobId": {"S": record.job_id}},
        UpdateExpression="SET leaseExpiresAt = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )
    outcome = await run_job_message(
        svc, JobMessage(record.job_id, "m-resent", 1), owner="again", budget=Budget(64 * MiB)
    )
    assert outcome.action is Action.DELETE and "split into" in outcome.reason, outcome
    (resent,) = await take_messages(svc, 1)
    assert json.loads(resent["Body"]) == {"jobId": record.job_id, "range": WORKERS - 1}
    assert await deliver(svc, resent) == []
    done = await svc.store.get(record.job_id)
    assert done is not None and done.status is JobStatus.READY
    verify_archive_bytes(await archive_bytes(svc, record.dst_bucket, record.dst_key), docs)
    assert await leftovers(svc, record) == ([], [])


async def expire_lease(svc: JobService, job_id: str) -> None:
    """As if no range had renewed the job's shared lease for a lease period."""
    await svc.dynamodb.update_item(
        TableName=svc.settings.table,
        Key={"jobId": {"S": job_id}},
        UpdateExpression="SET leaseExpiresAt = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )


async def test_the_sweeper_re_sends_a_stuck_fanned_out_job_which_then_finishes(
    svc: JobService,
) -> None:
    """A fanned-out job is RUNNING on a lease its ranges renew; once none has for a
    lease period, the sweeper re-sends the job's message (as for any RUNNING job
    whose lease expired), which re-sends the missing range."""
    docs = sources("swept")
    record, messages = await split_job(svc, docs)
    for m in messages[1:]:
        assert await deliver(svc, m) == []
    assert (await sweep(svc))["resent"] == 0  # the lease the ranges renewed is live
    await expire_lease(svc, record.job_id)
    assert (await sweep(svc))["resent"] >= 1
    (job_message,) = [
        m for m in await take_messages(svc, 1) if json.loads(m["Body"])["jobId"] == record.job_id
    ]
    assert json.loads(job_message["Body"]) == {"jobId": record.job_id}
    assert await deliver(svc, job_message) == []
    (resent,) = await take_messages(svc, 1)
    assert json.loads(resent["Body"]) == {"jobId": record.job_id, "range": 0}
    assert await deliver(svc, resent) == []
    done = await svc.store.get(record.job_id)
    assert done is not None and done.status is JobStatus.READY
    verify_archive_bytes(await archive_bytes(svc, record.dst_bucket, record.dst_key), docs)
    assert await leftovers(svc, record) == ([], [])


async def test_a_dead_lettered_range_fails_the_job_once_no_range_holds_the_lease(
    svc: JobService,
) -> None:
    docs = sources("dead")
    record, messages = await split_job(svc, docs)
    assert await deliver(svc, messages[0]) == []
    body = messages[1]["Body"]
    assert not await handle_dead_letter(svc, body, "dlq-1")  # a range may still be running
    live = await svc.store.get(record.job_id)
    assert live is not None and live.status is JobStatus.RUNNING
    await expire_lease(svc, record.job_id)
    assert await handle_dead_letter(svc, body, "dlq-1")
    failed = await svc.store.get(record.job_id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "RetriesExhausted"
    assert await leftovers(svc, record) == ([], [])


async def test_two_workers_take_a_submitted_job_through_its_ranges_to_ready(
    svc: JobService,
) -> None:
    """End to end through the queue: the API's submit sends the job's message, two
    ``zipjobs worker`` loops take it and the range messages it sends, and the job
    ends READY with the archive a single build makes."""
    settings = dataclasses.replace(svc.settings, sweep_interval_seconds=0)
    service = JobService(settings, s3=svc.s3, dynamodb=svc.dynamodb, sqs=svc.sqs)
    docs = sources("workers")
    await put_sources(svc, docs)
    request = parse_job_request(json.dumps({"keys": list(docs)}).encode(), settings)
    job_id = (await service.submit(request)).job_id
    workers = [
        Worker(service, concurrency=2, budget=Budget(256 * MiB), poll_seconds=1, owner=f"w{i}")
        for i in range(2)
    ]
    running = [asyncio.create_task(w.run()) for w in workers]
    try:
        async with asyncio.timeout(120):
            while True:
                record = await svc.store.get(job_id)
                assert record is not None
                if record.status.final:
                    break
                await asyncio.sleep(0.2)
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*running)
    assert record.status is JobStatus.READY, record
    assert record.fanout is not None and record.fanout.workers == WORKERS
    assert sum(w.completed for w in workers) == 1 + WORKERS  # the job's message and 4 ranges
    data = await archive_bytes(svc, record.dst_bucket, record.dst_key)
    assert data == await single_build(svc, docs, "workers")
    verify_archive_bytes(data, docs)
    assert await leftovers(svc, record) == ([], [])


async def test_racing_ranges_counted_by_add_to_a_number_set_have_one_last(
    svc: JobService,
) -> None:
    """The store's ``range_done``: of 8 ranges counting themselves at once exactly one
    sees all 8, and a range counted again leaves the set as it was.

    What AWS documents and this relies on
    (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_UpdateItem.html):
    ``ADD`` of a set to a set attribute adds its members (a member already there
    stays once), ``ReturnValues=UPDATED_NEW`` returns the attribute as it is after
    this very update, and each UpdateItem is applied atomically to its item. The
    emulator's writes are serialized by ``service.local.moto_atomic`` (see
    test_emulator_atomicity.py) so that this test can fail only through our code.
    """
    job_id = await new_job(svc, ["race/a.pdf"])
    assert await svc.store.claim(job_id, "splitter", 60, "m-race") is not None
    fan = FanOut("upload-1", 8, 8 * MiB, 64 * MiB, "f" * 64)
    assert await svc.store.start_fanout(job_id, "splitter", fan, Progress(0, 9, 0, 1), 60)
    assert not await svc.store.start_fanout(job_id, "splitter", fan, Progress(0, 9, 0, 1), 60)
    n = 8
    sets = await asyncio.gather(
        *(svc.store.range_done(job_id, "upload-1", k, (k, 1)) for k in range(n))
    )
    assert all(s is not None for s in sets)
    assert sum(1 for s in sets if s is not None and len(s) == n) == 1
    again = await svc.store.range_done(job_id, "upload-1", 3, (3, 1))
    assert again == frozenset(range(n))
    assert await svc.store.range_done(job_id, "another-upload", 5, (0, 0)) is None


# A range resumes from its own checkpoint (docs/resume.md, "A range resumes from
# its own checkpoint"). ~69 MiB in 9 parts of 8 MiB, split into 2 ranges (one per
# 40 MiB): range 0 is parts 1-5 (nothing deferred), range 1 parts 6-9, which
# starts inside an entry's data, so part 6 (that entry's descriptor) and part 9
# (the central directory, starting inside the last entry's data) are deferred.
RESUME_SIZES = [
    9 * MiB + 3, 20 * MiB + 17, 0, 5 * MiB - 11, 9 * MiB + 5, 777, 20 * MiB + 1, 6 * MiB - 3,
]  # fmt: skip
RANGES = {0: (1, 5), 1: (6, 9)}


def resume_sources(tag: str) -> dict[str, bytes]:
    rng = random.Random(tag)
    return {f"{tag}/f{i:02d}.pdf": rng.randbytes(n) for i, n in enumerate(RESUME_SIZES)}


@pytest.fixture(scope="module")
async def rsvc(stack: Provisioned) -> AsyncIterator[JobService]:
    """Two ranges per job, and a checkpoint after every part (not every 5 s)."""
    settings = stack.settings(
        ZIPJOBS_LEASE_SECONDS="15",
        ZIPJOBS_FANOUT_MIN_MB="40",
        ZIPJOBS_FANOUT_MAX_WORKERS="8",
        ZIPJOBS_CHECKPOINT_SECONDS="0",
    )
    async with JobService.open(settings) as service:
        yield service


class S3Calls:
    """The service client's UploadPart calls counted per part number, and a process
    that stops or dies on cue: ``on_ack`` sees the part numbers S3 acknowledged so
    far and ``on_put`` each PutObject; ``before_part`` may hold an UploadPart;
    ``stall`` holds every later UploadPart (it is cancelled by the stop), ``dead``
    fails every UploadPart and PutObject."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, svc: JobService) -> None:
        self.counts: Counter[int] = Counter()
        self.acked: set[int] = set()
        self.stall = False
        self.dead = False
        self.on_ack: Callable[[set[int]], None] | None = None
        self.on_put: Callable[[dict[str, Any]], None] | None = None
        self.before_part: Callable[[int], Awaitable[None]] | None = None
        upload_part, put_object = svc.s3.upload_part, svc.s3.put_object

        async def counted_upload_part(**kw: Any) -> Any:
            self.counts[kw["PartNumber"]] += 1
            if self.before_part is not None:
                await self.before_part(kw["PartNumber"])
            if self.dead:
                raise ConnectionError("the process died")
            if self.stall:
                await asyncio.Event().wait()
            resp = await upload_part(**kw)
            self.acked.add(kw["PartNumber"])
            if self.on_ack is not None:
                self.on_ack(self.acked)
            return resp

        async def watched_put_object(**kw: Any) -> Any:
            if self.dead:
                raise ConnectionError("the process died")
            resp = await put_object(**kw)
            if self.on_put is not None:
                self.on_put(kw)
            return resp

        monkeypatch.setattr(svc.s3, "upload_part", counted_upload_part)
        monkeypatch.setattr(svc.s3, "put_object", watched_put_object)

    def revive(self) -> None:
        self.stall = self.dead = False
        self.on_ack = self.on_put = None
        self.before_part = None


class Deadline:
    """The zipper's own deadline (``asyncio.timeout`` in ``lambda_adapter.sqs_batch``),
    made to strike now when ``fire`` is called: the same cancellation the real
    deadline delivers, at a chosen point instead of after a guessed delay."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._timeouts: list[asyncio.Timeout] = []
        monkeypatch.setattr(sqs_batch, "asyncio", self)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    def timeout(self, delay: float | None) -> asyncio.Timeout:
        made = asyncio.timeout(delay)
        self._timeouts.append(made)
        return made

    def fire(self) -> None:
        """The running delivery's deadline is now (one ``timeout`` per delivery)."""
        self._timeouts[-1].reschedule(asyncio.get_running_loop().time())


async def range_checkpoint(svc: JobService, record: JobRecord, k: int) -> RangeCheckpoint | None:
    key = range_checkpoint_key(record.dst_key, k)
    return await range_checkpoint_store(svc.s3, record.dst_bucket, key).load()


async def stop_range_at_deadline(
    svc: JobService, monkeypatch: pytest.MonkeyPatch, message: Any, need: set[int]
) -> S3Calls:
    """Deliver ``message``; once S3 has acknowledged the parts ``need``, no other
    part goes up and the deadline strikes. The message comes back (out of time)."""
    calls = S3Calls(monkeypatch, svc)
    deadline = Deadline(monkeypatch)

    def on_ack(acked: set[int]) -> None:
        if need <= acked and not calls.stall:
            calls.stall = True
            deadline.fire()

    calls.on_ack = on_ack
    assert await deliver(svc, message) == [message["MessageId"]]
    calls.revive()
    return calls


async def finish_and_check(
    svc: JobService, record: JobRecord, messages: list[Any], docs: dict[str, bytes], tag: str
) -> None:
    """Deliver the ranges not yet built; READY, the single build's bytes, five readers,
    nothing left beside the archive."""
    current = await svc.store.get(record.job_id)
    assert current is not None and current.fanout is not None
    for k, m in enumerate(messages):
        if k not in current.fanout.done:
            assert await deliver(svc, m) == []
    done = await svc.store.get(record.job_id)
    assert done is not None and done.status is JobStatus.READY, done
    data = await archive_bytes(svc, record.dst_bucket, record.dst_key)
    assert data == await single_build(svc, docs, tag)
    verify_archive_bytes(data, docs)
    assert await leftovers(svc, record) == ([], [])


@pytest.mark.parametrize(("k", "need"), [(0, {1, 2}), (1, {7})])
async def test_a_range_out_of_time_resumes_from_its_own_checkpoint(
    rsvc: JobService, monkeypatch: pytest.MonkeyPatch, k: int, need: set[int]
) -> None:
    """The Lambda deadline strikes in range ``k`` once S3 holds the parts ``need``: the
    message comes back with a checkpoint naming them, and the redelivery uploads
    none of them again (UploadPart calls counted per part number). Range 1 resumes
    past its deferred part 6, between its uploaded parts 7 and 8. Every later part
    is held, so the range cannot finish before the deadline. The archive equals a
    single build, progress never falls."""
    docs = resume_sources(f"rdeadline{k}")
    record, messages = await split_job(rsvc, docs, workers=2)
    assert record.fanout is not None
    assert split_parts(math.ceil(record.fanout.length / record.fanout.part_size), 2) == [
        RANGES[0],
        RANGES[1],
    ]
    calls = await stop_range_at_deadline(rsvc, monkeypatch, messages[k], need)
    between = await rsvc.store.get(record.job_id)
    assert between is not None and between.status is JobStatus.RUNNING
    assert between.fanout is not None and k not in between.fanout.done
    cp = await range_checkpoint(rsvc, record, k)
    assert cp is not None, "the stopped range left no checkpoint"
    had = {p.number for p in cp.parts}
    assert need <= had, (need, had)

    seen: list[int] = [between.progress.bytes_done]
    before = dict(calls.counts)
    async with sampling_progress(rsvc, record.job_id, seen):
        assert await deliver(rsvc, messages[k], receive_count=2) == []
    assert seen == sorted(seen), "progress went backwards"
    again = {n: calls.counts[n] - before.get(n, 0) for n in calls.counts}
    assert all(again.get(n, 0) == 0 for n in had), f"re-uploaded {again}, checkpoint had {had}"
    await finish_and_check(rsvc, record, messages, docs, f"rdeadline{k}")


async def test_a_range_that_dies_resumes_from_its_last_saved_checkpoint(
    rsvc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Range 0's process dies (every S3 call fails from then on, so no last
    checkpoint is written) right after its checkpoint naming parts 1 and 2 was
    saved (each part waits for the checkpoint of the one before, so which
    checkpoint is the last saved does not depend on timing). The message comes
    back; the redelivery continues from that checkpoint: parts 1 and 2 are not
    uploaded again, 3 to 5 are uploaded once."""
    docs = resume_sources("rcrash")
    record, messages = await split_job(rsvc, docs, workers=2)
    calls = S3Calls(monkeypatch, rsvc)
    key = range_checkpoint_key(record.dst_key, 0)
    saved_up_to = 0
    saved = asyncio.Event()

    def on_put(kw: dict[str, Any]) -> None:
        nonlocal saved_up_to
        if kw["Key"] == key:
            parts = decode_range_checkpoint(kw["Body"]).parts
            saved_up_to = max(p.number for p in parts)
            calls.dead = len(parts) >= 2
            saved.set()

    async def after_the_last_checkpoint(number: int) -> None:
        async with asyncio.timeout(30):  # no checkpoint at all: fail, do not hang
            while saved_up_to < number - 1 and not calls.dead:
                saved.clear()
                await saved.wait()

    calls.on_put = on_put
    calls.before_part = after_the_last_checkpoint
    assert await deliver(rsvc, messages[0]) == [messages[0]["MessageId"]]
    calls.revive()
    cp = await range_checkpoint(rsvc, record, 0)
    assert cp is not None, "the range saved no checkpoint"
    had = {p.number for p in cp.parts}
    assert had == {1, 2}, had
    before = dict(calls.counts)
    assert await deliver(rsvc, messages[0], receive_count=2) == []
    again = {n: calls.counts[n] - before.get(n, 0) for n in calls.counts}
    assert {n: c for n, c in again.items() if c} == {3: 1, 4: 1, 5: 1}, again
    await finish_and_check(rsvc, record, messages, docs, "rcrash")


async def test_a_range_checkpoint_list_parts_does_not_confirm_is_ignored(
    rsvc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After range 0 stopped with parts 1 and 2 checkpointed, part 2 of the upload is
    overwritten with other bytes (another ETag). ListParts no longer confirms the
    checkpoint, so the redelivery builds the range from its first part, and the
    archive is still right."""
    docs = resume_sources("rlistparts")
    record, messages = await split_job(rsvc, docs, workers=2)
    assert record.fanout is not None
    calls = await stop_range_at_deadline(rsvc, monkeypatch, messages[0], {1, 2})
    cp = await range_checkpoint(rsvc, record, 0)
    assert cp is not None and {1, 2} <= {p.number for p in cp.parts}
    await rsvc.s3.upload_part(
        Bucket=record.dst_bucket,
        Key=record.dst_key,
        UploadId=record.fanout.upload_id,
        PartNumber=2,
        Body=random.Random(2).randbytes(record.fanout.part_size),
        ChecksumAlgorithm="CRC32",
    )
    before = dict(calls.counts)
    assert await deliver(rsvc, messages[0], receive_count=2) == []
    again = {n: calls.counts[n] - before.get(n, 0) for n in calls.counts}
    assert again == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}, again
    await finish_and_check(rsvc, record, messages, docs, "rlistparts")


@pytest.mark.parametrize("ending", ["cancelled", "failed"])
async def test_a_job_that_ends_leaves_no_range_checkpoint(
    rsvc: JobService, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """Range 0 stopped at the deadline keeps a checkpoint; the job then ends CANCELLED
    (the cancel API) or FAILED (range 1's source changed): nothing is left beside
    the archive key, the range checkpoint included."""
    docs = resume_sources(f"rend-{ending}")
    record, messages = await split_job(rsvc, docs, workers=2)
    await stop_range_at_deadline(rsvc, monkeypatch, messages[0], {1, 2})
    _, objects = await leftovers(rsvc, record)
    assert range_checkpoint_key(record.dst_key, 0) in objects
    if ending == "cancelled":
        view = await rsvc.cancel_job(record.job_id)
        assert view["status"] == "CANCELLED"
    else:
        last = list(docs)[-1]
        await rsvc.s3.put_object(Bucket=rsvc.settings.default_bucket, Key=last, Body=b"changed")
        assert await deliver(rsvc, messages[1]) == []
        failed = await rsvc.store.get(record.job_id)
        assert failed is not None and failed.status is JobStatus.FAILED
    assert await leftovers(rsvc, record) == ([], [])
    assert await deliver(rsvc, messages[0], receive_count=2) == []  # finds the job over
    assert await leftovers(rsvc, record) == ([], [])


async def test_a_range_on_a_worker_that_shuts_down_resumes_on_the_next_one(
    rsvc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redeploy: the ``zipjobs worker`` building range 0 is stopped (0.2 s of grace)
    once S3 holds its parts 1 and 2 (later parts held). It returns the range's
    message with a checkpoint; the next worker takes the message (and range 1's)
    and continues range 0 from that checkpoint: none of its parts is uploaded
    again, and the job ends READY with the single build's bytes."""
    settings = dataclasses.replace(rsvc.settings, sweep_interval_seconds=0)
    service = JobService(settings, s3=rsvc.s3, dynamodb=rsvc.dynamodb, sqs=rsvc.sqs)
    docs = resume_sources("rdeploy")
    record, _ = await split_job(rsvc, docs, workers=2)
    calls = S3Calls(monkeypatch, rsvc)
    reached = asyncio.Event()

    def on_ack(acked: set[int]) -> None:
        if {1, 2} <= acked and not calls.stall:
            calls.stall = True
            reached.set()

    calls.on_ack = on_ack
    await service.send(record.job_id, 0)
    first = Worker(service, poll_seconds=1, grace_seconds=0.2, owner="deploy-0")
    running = asyncio.create_task(first.run())
    async with asyncio.timeout(60):
        await reached.wait()
    first.stop()
    await running
    calls.revive()
    cp = await range_checkpoint(rsvc, record, 0)
    assert cp is not None, "the stopped range left no checkpoint"
    had = {p.number for p in cp.parts}
    assert {1, 2} <= had, had
    before = dict(calls.counts)

    await service.send(record.job_id, 1)
    second = Worker(
        service, concurrency=2, budget=Budget(256 * MiB), poll_seconds=1, owner="deploy-1"
    )
    running = asyncio.create_task(second.run())
    try:
        async with asyncio.timeout(120):
            while True:
                current = await rsvc.store.get(record.job_id)
                assert current is not None
                if current.status.final:
                    break
                await asyncio.sleep(0.2)
    finally:
        second.stop()
        await running
    assert current.status is JobStatus.READY, current
    again = {n: calls.counts[n] - before.get(n, 0) for n in calls.counts}
    assert all(again.get(n, 0) == 0 for n in had), f"re-uploaded {again}, checkpoint had {had}"
    data = await archive_bytes(rsvc, record.dst_bucket, record.dst_key)
    assert data == await single_build(rsvc, docs, "rdeploy")
    verify_archive_bytes(data, docs)
    assert await leftovers(rsvc, record) == ([], [])
