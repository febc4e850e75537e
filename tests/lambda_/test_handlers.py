"""The three Lambda handlers, invoked in-process with real-shaped events.

They talk to the harness's local AWS over HTTP exactly as in AWS; only the
Lambda runtime itself (which calls ``handler(event, context)``) is played by
the test. Sync tests on purpose: the handlers own their container loop, as
they do in Lambda.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from lambda_adapter import handlers
from lambda_adapter.runtime import Container
from lambda_adapter.sqs_batch import SAFETY_SECONDS
from service.engine.checkpoint import SUFFIX, Checkpoint, decode
from service.engine.uploader import PartWriter
from service.local.samples import make_pdf
from service.local.stack import Provisioned, StackNames, provision
from tests.lambda_.events import FakeContext, http_event, sqs_event
from tests.support.archive_check import verify_archive_bytes
from tests.support.aws_backend import AwsEndpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(aws_endpoint: AwsEndpoint) -> Iterator[Provisioned]:
    names = StackNames(f"lambda-{uuid.uuid4().hex[:8]}", max_receives=6)
    provisioned = asyncio.run(provision(aws_endpoint.settings(), names))
    env = provisioned.env(
        ZIPJOBS_WORKER_CONCURRENCY="1",
        ZIPJOBS_LEASE_SECONDS="5",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
    )
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    handlers._container = Container()
    yield provisioned
    handlers._container.close()
    handlers._container = None
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def aws(stack: Provisioned) -> dict[str, Any]:
    kw = {"endpoint_url": stack.endpoint_url, "region_name": "us-east-1"}
    return {"s3": boto3.client("s3", **kw), "sqs": boto3.client("sqs", **kw)}


@pytest.fixture(scope="module")
def pdfs(stack: Provisioned, aws: dict[str, Any]) -> dict[str, bytes]:
    docs = {
        f"lambda/doc-{i}.pdf": make_pdf(f"doc {i}", 20_000 + 3_000 * i, seed=i) for i in range(6)
    }
    # Big enough that moto (40-60 MB/s uploads) cannot take it within the short
    # deadline of the out-of-time test, however fast the machine.
    docs["lambda/big.pdf"] = b"%PDF-1.4\n" + random.Random(99).randbytes(48 * 1024 * 1024)
    for key, body in docs.items():
        aws["s3"].put_object(Bucket=stack.names.src_bucket, Key=key, Body=body)
    return docs


def _submit(keys: list[str], **extra: Any) -> str:
    out = handlers.enqueue(
        http_event("POST", "/zip-jobs", body={"keys": keys, **extra}),
        FakeContext(function_name="zipjobs-enqueue"),
    )
    assert out["statusCode"] == 202, out
    doc = json.loads(out["body"])
    assert out["headers"]["Location"] == doc["statusUrl"] == f"/zip-jobs/{doc['jobId']}"
    return str(doc["jobId"])


def _status(job_id: str) -> dict[str, Any]:
    out = handlers.status(http_event("GET", f"/zip-jobs/{job_id}"), FakeContext())
    assert out["statusCode"] == 200, out
    return dict(json.loads(out["body"]))


def _receive(stack: Provisioned, aws: dict[str, Any], n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(10):
        resp = aws["sqs"].receive_message(
            QueueUrl=stack.queue_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            WaitTimeSeconds=1,
        )
        got += resp.get("Messages", [])
        if len(got) >= n:
            return got
    raise AssertionError(f"expected {n} messages, got {len(got)}")


def _zipper(
    stack: Provisioned, aws: dict[str, Any], messages: list[dict[str, Any]], context: FakeContext
) -> Any:
    """Invoke the zipper as the SQS event source mapping does, and delete what it deletes:
    every message the answer does not name as a failure."""
    result = handlers.zipper(sqs_event(messages, _arn(stack, aws)), context)
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    done = {m["ReceiptHandle"] for m in messages if m["MessageId"] not in failed}
    for receipt in done:
        aws["sqs"].delete_message(QueueUrl=stack.queue_url, ReceiptHandle=receipt)
    return result


def _arn(stack: Provisioned, aws: dict[str, Any]) -> str:
    attrs = aws["sqs"].get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def _download(url: str) -> bytes:
    assert url.startswith("http://127.0.0.1") or url.startswith("http://localhost")
    with urllib.request.urlopen(url, timeout=30) as resp:  # local endpoint only
        return bytes(resp.read())


def _no_uploads_left(stack: Provisioned, aws: dict[str, Any]) -> None:
    assert aws["s3"].list_multipart_uploads(Bucket=stack.names.dst_bucket).get("Uploads", []) == []


def test_job_goes_from_enqueue_through_zipper_to_a_download(
    stack: Provisioned,
    aws: dict[str, Any],
    pdfs: dict[str, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The JSON handler keeps the stream it saw at import (pytest's, during
    # collection); point it at this test's stdout, as Lambda's is fixed.
    previous = handlers.logger.registered_handler.setStream(sys.stdout)
    try:
        _run_and_check_one_job(stack, aws, pdfs, capsys)
    finally:
        handlers.logger.registered_handler.setStream(previous)


def _run_and_check_one_job(
    stack: Provisioned, aws: dict[str, Any], pdfs: dict[str, bytes], capsys: Any
) -> None:
    keys = [k for k in pdfs if "doc-" in k]
    job_id = _submit(keys, name="statements.zip")
    assert _status(job_id)["status"] == "PENDING"

    [message] = _receive(stack, aws, 1)
    result = _zipper(stack, aws, [message], FakeContext())
    assert result == {"batchItemFailures": []}

    doc = _status(job_id)
    assert doc["status"] == "READY", doc
    assert doc["progress"]["filesDone"] == doc["progress"]["filesTotal"] == len(keys)
    archive = _download(doc["downloadUrl"])
    verify_archive_bytes(archive, {k: pdfs[k] for k in keys})
    _no_uploads_left(stack, aws)

    logs = capsys.readouterr().out.splitlines()
    job_lines = [json.loads(line) for line in logs if line.startswith("{") and job_id in line]
    assert job_lines, "the zipper logged nothing about the job"
    assert all(line.get("job_id") == job_id for line in job_lines if "READY" in line["message"])
    assert not any("X-Amz-Signature" in line for line in logs), "a presigned URL reached the logs"


def test_bad_requests_get_the_same_problem_documents(stack: Provisioned) -> None:
    out = handlers.enqueue(http_event("POST", "/zip-jobs", body="{not json"), FakeContext())
    assert out["statusCode"] == 400
    assert out["headers"]["Content-Type"] == "application/problem+json"
    assert "detail" in json.loads(out["body"])
    out = handlers.status(http_event("GET", f"/zip-jobs/{uuid.uuid4().hex}"), FakeContext())
    assert out["statusCode"] == 404
    out = handlers.enqueue(http_event("POST", "/zip-jobs", body={"keys": []}), FakeContext())
    assert out["statusCode"] in (400, 422)


def test_a_body_over_5_mib_is_a_413_problem_from_the_function(stack: Provisioned) -> None:
    """Lambda's synchronous payload limit (6 MB, the whole event) is below API Gateway's
    10 MB body limit, so the function's own 5 MiB limit is the one callers meet, and it
    answers problem+json. https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
    https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html
    """
    limit = 5 * 1024 * 1024
    keys = json.dumps({"keys": ["k" * 1000] * (limit // 1000)})
    assert len(keys) > limit
    out = handlers.enqueue(http_event("POST", "/zip-jobs", body=keys), FakeContext())
    assert out["statusCode"] == 413, out["statusCode"]
    assert out["headers"]["Content-Type"] == "application/problem+json"
    doc = json.loads(out["body"])
    assert doc["status"] == 413 and doc["limit"] == limit
    # The event itself (headers, JSON escaping of the body) stays under Lambda's 6 MB.
    event = http_event("POST", "/zip-jobs", body=keys[: limit - 1])
    assert len(json.dumps(event).encode()) < 6 * 1000 * 1000


def test_one_failing_record_does_not_redo_the_others(
    stack: Provisioned, aws: dict[str, Any], pdfs: dict[str, bytes]
) -> None:
    good = _submit(["lambda/doc-0.pdf", "lambda/doc-1.pdf"])
    missing = _submit(["lambda/doc-2.pdf", "lambda/nope-1.pdf", "lambda/nope-2.pdf"])
    messages = _receive(stack, aws, 2)
    poison = dict(messages[0], MessageId="poison-1", Body="not json")
    result = _zipper(stack, aws, [*messages, poison], FakeContext())
    # Missing keys are permanent (the job is FAILED, the message done); poison is dropped.
    assert result == {"batchItemFailures": []}
    assert _status(good)["status"] == "READY"
    failed = _status(missing)
    assert failed["status"] == "FAILED"
    assert set(failed["error"]["missingKeys"]) == {"lambda/nope-1.pdf", "lambda/nope-2.pdf"}


def test_a_job_out_of_time_is_released_and_finishes_on_the_retry(
    stack: Provisioned, aws: dict[str, Any], pdfs: dict[str, bytes]
) -> None:
    keys = ["lambda/big.pdf", *[k for k in pdfs if "doc-" in k]]
    job_id = _submit(keys)
    [message] = _receive(stack, aws, 1)

    # Too little time left even to start: returned untouched.
    result = _zipper(stack, aws, [message], FakeContext(seconds=SAFETY_SECONDS - 1))
    assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}

    # Time runs out mid-job: the lease is released; the upload, if it began,
    # is kept for the retry to continue (the next test shows it does).
    [message] = _receive(stack, aws, 1)
    result = _zipper(stack, aws, [message], FakeContext(seconds=SAFETY_SECONDS + 0.25))
    # Returned for a retry; or, on a fast machine that kept a part in 0.25 s,
    # deleted and continued by a fresh message (service/jobs/continuation.py).
    continued = result == {"batchItemFailures": []}
    assert continued or result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    # Never a RUNNING job nobody runs: if the deadline struck inside the claim,
    # the claim was finished and handed back (shielded), so the job waits.
    # The upload, if it began, is kept for the retry to continue.
    assert _status(job_id)["status"] in ("PENDING", "WAITING")
    assert len(_uploads(stack, aws)) <= 1

    # The retry (visible again after a short delay, not the queue's timeout)
    # finishes it on its first delivery: no lease is left to wait out.
    [message] = _receive(stack, aws, 1)
    assert int(message["Attributes"]["ApproximateReceiveCount"]) >= (1 if continued else 2)
    assert _zipper(stack, aws, [message], FakeContext()) == {"batchItemFailures": []}
    doc = _status(job_id)
    assert doc["status"] == "READY", doc
    verify_archive_bytes(_download(doc["downloadUrl"]), {k: pdfs[k] for k in keys})
    _no_uploads_left(stack, aws)


def _uploads(stack: Provisioned, aws: dict[str, Any]) -> list[dict[str, Any]]:
    return list(aws["s3"].list_multipart_uploads(Bucket=stack.names.dst_bucket).get("Uploads", []))


def _checkpoint(stack: Provisioned, aws: dict[str, Any], job_id: str) -> Checkpoint | None:
    for upload in _uploads(stack, aws):
        if job_id in upload["Key"]:
            key = upload["Key"] + SUFFIX
            try:
                body = aws["s3"].get_object(Bucket=stack.names.dst_bucket, Key=key)["Body"]
            except aws["s3"].exceptions.NoSuchKey:
                return None
            return decode(body.read())
    return None


def test_a_job_out_of_time_resumes_on_the_next_delivery(
    stack: Provisioned,
    aws: dict[str, Any],
    pdfs: dict[str, bytes],
    caplog: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attempt that hits the deadline keeps its upload and checkpoint; the next
    delivery continues that upload from the checkpoint instead of restarting."""
    keys = ["lambda/big.pdf", *[k for k in pdfs if "doc-" in k]]
    job_id = _submit(keys)
    # The first attempt's third part never finishes, so its deadline strikes
    # after two parts whatever moto's speed; the retry runs unhindered.
    real_upload = PartWriter._upload_part

    async def stalled(self: PartWriter, number: int, *rest: Any) -> None:
        if number >= 3:
            await asyncio.sleep(3600)
        await real_upload(self, number, *rest)

    monkeypatch.setattr(PartWriter, "_upload_part", stalled)
    cp = None
    for extra in (2.0, 4.0, 8.0):
        [message] = _receive(stack, aws, 1)
        result = _zipper(stack, aws, [message], FakeContext(seconds=SAFETY_SECONDS + extra))
        # Returned for a retry, or (parts kept) deleted and continued by a fresh message.
        assert result["batchItemFailures"] in ([{"itemIdentifier": message["MessageId"]}], [])
        cp = _checkpoint(stack, aws, job_id)
        if cp is not None and len(cp.parts) >= 2:
            break
    monkeypatch.undo()
    assert cp is not None and len(cp.parts) == 2, cp
    assert _status(job_id)["status"] in ("PENDING", "WAITING")
    [kept] = [u for u in _uploads(stack, aws) if job_id in u["Key"]]
    assert kept["UploadId"] == cp.upload_id

    caplog.set_level(logging.INFO, logger="service.engine")
    [message] = _receive(stack, aws, 1)
    assert _zipper(stack, aws, [message], FakeContext()) == {"batchItemFailures": []}
    said = [r.getMessage() for r in caplog.records]
    resumed = [int(m.rsplit(" ", 1)[1]) for m in said if m.startswith("resuming s3://")]
    # Either it continued from at least the checkpoint (progress never goes
    # backwards), or an attempt died completing the upload and the next found it done.
    finished_before = any("was completed by the last attempt" in m for m in said)
    # (Earlier attempts of the stalled loop may have resumed too: in order.)
    assert resumed == sorted(resumed), said
    assert finished_before or (resumed and resumed[-1] >= cp.state.offset), said
    assert not any(m.startswith("not resuming") for m in said), said
    doc = _status(job_id)
    assert doc["status"] == "READY", doc
    verify_archive_bytes(_download(doc["downloadUrl"]), {k: pdfs[k] for k in keys})
    _no_uploads_left(stack, aws)
    with pytest.raises(aws["s3"].exceptions.ClientError):  # the checkpoint went with it
        aws["s3"].head_object(Bucket=stack.names.dst_bucket, Key=kept["Key"] + SUFFIX)


def test_a_job_that_progresses_in_every_attempt_outlives_the_receive_limit(
    stack: Provisioned, aws: dict[str, Any], pdfs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """More out-of-time attempts than maxReceiveCount, each keeping one more part: READY.

    Every invocation uploads only its first part and then stalls until its
    deadline, so the archive needs more invocations than the queue's
    receive limit (6 here). Counted as failures they would end the job
    FAILED (TimeLimit); an attempt that kept more of the upload is continued
    with a fresh message instead (service/jobs/continuation.py).
    """
    keys = ["lambda/big.pdf", *[k for k in pdfs if "doc-" in k]]
    job_id = _submit(keys)
    real_upload = PartWriter._upload_part
    calls = {"n": 0}

    async def one_part_per_attempt(self: PartWriter, number: int, *rest: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            await asyncio.sleep(3600)
        await real_upload(self, number, *rest)

    monkeypatch.setattr(PartWriter, "_upload_part", one_part_per_attempt)
    attempts, counts, kept = 0, [], []
    for _ in range(3 * stack.names.max_receives):
        [message] = _receive(stack, aws, 1)
        counts.append(int(message["Attributes"]["ApproximateReceiveCount"]))
        calls["n"] = 0
        _zipper(stack, aws, [message], FakeContext(seconds=SAFETY_SECONDS + 4.0))
        attempts += 1
        if _status(job_id)["status"] != "WAITING":
            break
        cp = _checkpoint(stack, aws, job_id)
        kept.append(0 if cp is None else len(cp.parts))
    doc = _status(job_id)
    assert doc["status"] == "READY", (doc, counts, kept)
    # It took more attempts than the queue allows receives of one message...
    assert attempts > stack.names.max_receives, (attempts, counts, kept)
    # ...each progressing one (the parts kept only grow) continued by a fresh message.
    assert kept == sorted(kept) and kept[-1] > stack.names.max_receives - 1, kept
    assert max(counts) < stack.names.max_receives, counts
    verify_archive_bytes(_download(doc["downloadUrl"]), {k: pdfs[k] for k in keys})
    _no_uploads_left(stack, aws)


def test_attempts_that_keep_nothing_new_still_end_failed(
    stack: Provisioned, aws: dict[str, Any], pdfs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every attempt runs out of time before its first part: FAILED at the receive limit."""
    job_id = _submit(["lambda/big.pdf"])

    async def never(self: PartWriter, number: int, *rest: Any) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(PartWriter, "_upload_part", never)
    for attempt in range(1, stack.names.max_receives + 1):
        [message] = _receive(stack, aws, 1)
        assert int(message["Attributes"]["ApproximateReceiveCount"]) == attempt
        result = _zipper(stack, aws, [message], FakeContext(seconds=SAFETY_SECONDS + 1.0))
        assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    doc = _status(job_id)
    assert doc["status"] == "FAILED", doc
    assert doc["error"]["code"] == "TimeLimit"
    _no_uploads_left(stack, aws)


def test_delete_cancels_a_pending_job(
    stack: Provisioned, aws: dict[str, Any], pdfs: dict[str, bytes]
) -> None:
    job_id = _submit(["lambda/doc-3.pdf"])
    out = handlers.status(http_event("DELETE", f"/zip-jobs/{job_id}"), FakeContext())
    assert out["statusCode"] == 202
    assert _status(job_id)["status"] == "CANCELLED"
    [message] = _receive(stack, aws, 1)
    assert _zipper(stack, aws, [message], FakeContext()) == {"batchItemFailures": []}
    assert _status(job_id)["status"] == "CANCELLED"


def test_a_job_out_of_time_on_every_attempt_ends_failed(
    stack: Provisioned, aws: dict[str, Any], pdfs: dict[str, bytes]
) -> None:
    job_id = _submit(["lambda/doc-4.pdf"])
    for attempt in range(1, stack.names.max_receives + 1):
        [message] = _receive(stack, aws, 1)
        assert int(message["Attributes"]["ApproximateReceiveCount"]) == attempt
        result = _zipper(stack, aws, [message], FakeContext(seconds=1))
        # Always named as a failure, so the last one moves on to the dead-letter queue.
        assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    doc = _status(job_id)
    assert doc["status"] == "FAILED"
    assert doc["error"]["code"] == "TimeLimit"
    assert "time limit" in doc["error"]["message"]
