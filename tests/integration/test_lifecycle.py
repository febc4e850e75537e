"""Job lifecycle against local AWS: records bounded in bytes, a claim cancelled in flight,
the WAITING state between attempts, and output discarded on every non-READY end.

See docs/lifecycle.md for the states and who moves a job between them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.engine import Budget, MiB
from service.jobs import Action, JobMessage, JobService, JobStatus, run_job_message
from service.jobs.validation import parse_job_request
from service.jobs.views import job_view
from service.local.stack import Provisioned, StackNames, provision
from tests.support.aws_backend import AwsEndpoint
from tests.support.dynamodb_limits import ITEM_LIMIT, ItemSizeLimit, item_size

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    # The queue hides a received message for 10 minutes, like the zipper's
    # queue (6 x the function timeout) hides it for 90.
    names = StackNames(f"lc-{uuid.uuid4().hex[:8]}", visibility_seconds=600)
    return await provision(aws_endpoint.settings(), names)


@pytest.fixture(scope="module")
async def svc(stack: Provisioned) -> AsyncIterator[JobService]:
    async with JobService.open(stack.settings(ZIPJOBS_LEASE_SECONDS="15")) as service:
        yield service


@pytest.fixture
def limited(svc: JobService) -> tuple[JobService, ItemSizeLimit]:
    """The service behind a DynamoDB that rejects a >400 KB item atomically, as AWS does."""
    db = ItemSizeLimit(svc.dynamodb)
    return JobService(svc.settings, s3=svc.s3, dynamodb=db, sqs=svc.sqs), db


async def new_job(svc: JobService, keys: list[str], **fields: Any) -> str:
    request = parse_job_request(json.dumps({"keys": keys, **fields}).encode(), svc.settings)
    record = await svc._new_record(uuid.uuid4().hex, request)
    await svc.store.create(record)
    return record.job_id


async def put(svc: JobService, key: str, body: bytes = b"%PDF-1.4 x") -> None:
    await svc.s3.put_object(Bucket=svc.settings.default_bucket, Key=key, Body=body)


def long_keys(n: int, tag: str) -> list[str]:
    """``n`` distinct keys of 152 bytes: as many as still fit inline in the job record."""
    return [f"{tag}/{i:06d}-".ljust(148, "k") + ".pdf" for i in range(n)]


async def raw_item(svc: JobService, job_id: str) -> dict[str, Any]:
    resp = await svc.dynamodb.get_item(
        TableName=svc.settings.table, Key={"jobId": {"S": job_id}}, ConsistentRead=True
    )
    return dict(resp["Item"])


async def uploads_and_object(svc: JobService, bucket: str, key: str) -> tuple[int, bool]:
    resp = await svc.s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    listed = await svc.s3.list_objects_v2(Bucket=bucket, Prefix=key)
    return len(resp.get("Uploads", [])), listed.get("KeyCount", 0) > 0


# --- records bounded in bytes --------------------------------------------------------------


async def test_the_item_limit_layer_rejects_the_whole_update(
    limited: tuple[JobService, ItemSizeLimit],
) -> None:
    """The fault layer itself: an update over 400 KB changes nothing, as on AWS."""
    svc, db = limited
    job_id = await new_job(svc, long_keys(1600, "layer"))
    before = await raw_item(svc, job_id)
    assert 200 * 1024 < item_size(before) < ITEM_LIMIT
    with pytest.raises(Exception, match="maximum allowed size"):
        await db.update_item(
            TableName=svc.settings.table,
            Key={"jobId": {"S": job_id}},
            UpdateExpression="SET #s = :s, extraBytes = :pad",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": "FAILED"}, ":pad": {"S": "x" * 200_000}},
        )
    assert await raw_item(svc, job_id) == before


async def test_a_job_missing_many_long_keys_fails_within_the_item_limit(
    limited: tuple[JobService, ItemSizeLimit],
) -> None:
    """1,690 missing keys of 152 bytes (the most that stay inline).

    The inline keys plus a list of 1,000 missing keys once exceeded 400 KB:
    AWS rejected the final write and the job stayed RUNNING.
    """
    svc, db = limited
    keys = long_keys(1690, "gone")
    job_id = await new_job(svc, keys)
    outcome = await run_job_message(
        svc, JobMessage(job_id, "m1", 1), owner="w", budget=Budget(64 * MiB)
    )
    assert outcome.action is Action.DELETE
    record = await svc.store.get(job_id)
    assert record is not None and record.status is JobStatus.FAILED and record.error is not None
    assert record.error.code == "MissingSources"
    listed, omitted = record.error.missing_keys, record.error.missing_keys_omitted
    assert 0 < len(listed) < len(keys) and len(listed) + omitted == len(keys)
    assert set(listed) <= set(keys)
    assert db.rejected == 0 and item_size(await raw_item(svc, job_id)) < ITEM_LIMIT
    view = job_view(record)
    assert view["error"]["missingKeysOmitted"] == omitted


# integration-slow; `make test` keeps the FAILED one above (same limit, same layer).
@pytest.mark.slow
async def test_a_job_skipping_many_long_keys_is_ready_within_the_item_limit(
    limited: tuple[JobService, ItemSizeLimit],
) -> None:
    svc, db = limited
    await put(svc, "present/one.pdf")
    keys = ["present/one.pdf", *long_keys(1689, "skipme")]
    job_id = await new_job(svc, keys, missing="skip")
    outcome = await run_job_message(
        svc, JobMessage(job_id, "m1", 1), owner="w", budget=Budget(64 * MiB)
    )
    assert outcome.action is Action.DELETE, outcome
    record = await svc.store.get(job_id)
    assert record is not None and record.status is JobStatus.READY
    assert len(record.skipped_keys) > 0 and record.skipped_keys_omitted > 0
    assert len(record.skipped_keys) + record.skipped_keys_omitted == 1689
    assert db.rejected == 0 and item_size(await raw_item(svc, job_id)) < ITEM_LIMIT
    assert job_view(record)["skippedKeysOmitted"] == record.skipped_keys_omitted


# --- a claim cancelled in flight -------------------------------------------------------------


async def test_a_claim_cancelled_in_flight_leaves_no_lease_held_by_nobody(
    svc: JobService,
) -> None:
    """The claim lands in DynamoDB but its answer is late; we are cancelled meanwhile."""
    await put(svc, "claim/a.pdf")
    job_id = await new_job(svc, ["claim/a.pdf"])
    landed = asyncio.Event()
    real_claim = svc.store.claim

    async def slow_answer(*args: Any, **kwargs: Any) -> Any:
        result = await real_claim(*args, **kwargs)
        landed.set()
        await asyncio.sleep(3)  # the response is still on its way
        return result

    svc.store.claim = slow_answer  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(
            run_job_message(svc, JobMessage(job_id, "m1", 1), owner="w", budget=Budget(64 * MiB))
        )
        await landed.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        del svc.store.claim
    record = await svc.store.get(job_id)
    assert record is not None
    assert record.status is JobStatus.WAITING and record.lease_owner is None, record
    # The next delivery takes it at once instead of waiting out a lease.
    again = await run_job_message(
        svc, JobMessage(job_id, "m1", 2), owner="w2", budget=Budget(64 * MiB)
    )
    assert again.action is Action.DELETE
    done = await svc.store.get(job_id)
    assert done is not None and done.status is JobStatus.READY and done.attempts == 2


# --- WAITING between attempts ------------------------------------------------------------


async def test_a_transient_failure_leaves_the_job_waiting_with_its_next_try(
    svc: JobService,
) -> None:
    await put(svc, "wait/a.pdf")
    broken = JobService(
        svc.settings.__class__(**{**_fields(svc), "dst_bucket": "no-such-bucket-zz"}),
        s3=svc.s3,
        dynamodb=svc.dynamodb,
        sqs=svc.sqs,
    )
    job_id = await new_job(broken, ["wait/a.pdf"])
    outcome = await run_job_message(
        broken, JobMessage(job_id, "m1", 1), owner="w", budget=Budget(64 * MiB)
    )
    assert outcome.action is Action.RETRY and outcome.delay > 0
    record = await svc.store.get(job_id)
    assert record is not None and record.status is JobStatus.WAITING
    assert record.lease_owner is None and record.attempts == 1
    assert record.max_attempts == await svc.max_receives()
    assert record.last_error is not None and "NoSuchBucket" in record.last_error.message
    assert record.next_attempt_at is not None and record.next_attempt_at > record.updated_at
    view = job_view(record)
    assert view["status"] == "WAITING"
    assert view["retry"]["attemptsMade"] == 1
    assert view["retry"]["maxAttempts"] == record.max_attempts
    assert "NoSuchBucket" in view["retry"]["lastError"]["message"]
    assert "nextAttemptAt" in view["retry"]


def _fields(svc: JobService) -> dict[str, Any]:
    s = svc.settings
    return {name: getattr(s, name) for name in s.__dataclass_fields__}


class _NoHead:
    """An S3 client whose HeadObject fails as an outage would (a transient error)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def head_object(self, **kwargs: Any) -> Any:
        raise ConnectionResetError("injected: S3 unreachable")


# --- no output left for a FAILED or CANCELLED job ------------------------------------------------


async def _leave_output(svc: JobService, job_id: str) -> tuple[str, str]:
    """What a killed attempt leaves: an upload in progress (and, for the test, an object)."""
    record = await svc.store.get(job_id)
    assert record is not None
    bucket, key = record.dst_bucket, record.dst_key
    await svc.s3.create_multipart_upload(Bucket=bucket, Key=key)
    await svc.s3.put_object(Bucket=bucket, Key=key, Body=b"stale")
    assert await uploads_and_object(svc, bucket, key) == (1, True)
    return bucket, key


async def test_cancel_discards_uploads_and_archive(svc: JobService) -> None:
    job_id = await new_job(svc, ["x/a.pdf"])
    bucket, key = await _leave_output(svc, job_id)
    view = await svc.cancel_job(job_id)
    assert view["status"] == "CANCELLED"
    assert await uploads_and_object(svc, bucket, key) == (0, False)


async def test_retries_exhausted_discards_uploads_and_archive(svc: JobService) -> None:
    """The last attempt fails transiently: FAILED, and nothing an earlier attempt left survives."""
    await put(svc, "y/a.pdf")
    job_id = await new_job(svc, ["y/a.pdf"])
    bucket, key = await _leave_output(svc, job_id)
    broken = JobService(svc.settings, s3=_NoHead(svc.s3), dynamodb=svc.dynamodb, sqs=svc.sqs)
    last = await broken.max_receives()
    outcome = await run_job_message(
        broken, JobMessage(job_id, "m1", last), owner="w", budget=Budget(64 * MiB)
    )
    assert outcome.action is Action.RETRY
    final = await svc.store.get(job_id)
    assert final is not None and final.status is JobStatus.FAILED and final.error is not None
    assert final.error.code == "RetriesExhausted"
    assert f"after {last} attempt" in final.error.message
    assert await uploads_and_object(svc, bucket, key) == (0, False)


# --- the zipper's message visibility follows the running job ------------------------------


async def test_a_crashed_zipper_attempt_comes_back_within_the_short_window(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue would hide the message for 600 s; the zipper hides it 2 x lease at a time."""
    from lambda_adapter import sqs_batch

    short = JobService(
        svc.settings.__class__(**{**_fields(svc), "lease_seconds": 3}),
        s3=svc.s3,
        dynamodb=svc.dynamodb,
        sqs=svc.sqs,
    )
    job_id = await new_job(svc, ["x/a.pdf"])
    await svc.send(job_id)
    got = await svc.sqs.receive_message(
        QueueUrl=svc.settings.queue_url, WaitTimeSeconds=1, AttributeNames=["All"]
    )
    [message] = got["Messages"]

    async def stuck(*args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()  # an attempt that never ends by itself

    monkeypatch.setattr(sqs_batch, "run_job_message", stuck)
    event = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message["Attributes"],
    }
    attempt = asyncio.create_task(
        sqs_batch.process_batch(
            short, Budget(64 * MiB), [event], owner="z", seconds_left=lambda: 900.0
        )
    )
    await asyncio.sleep(2)
    assert not attempt.done()
    attempt.cancel()  # the function dies: nothing extends the visibility any more
    with pytest.raises(asyncio.CancelledError):
        await attempt
    start = asyncio.get_running_loop().time()
    while True:
        got = await svc.sqs.receive_message(QueueUrl=svc.settings.queue_url, WaitTimeSeconds=1)
        if got.get("Messages"):
            break
        waited = asyncio.get_running_loop().time() - start
        assert waited < 20, "the message stayed hidden for the queue's long visibility timeout"
    assert json.loads(got["Messages"][0]["Body"])["jobId"] == job_id
