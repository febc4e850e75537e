"""The handlers on the stack Terraform applied: a job to READY, and IAM == what the code calls.

Each function runs in-process in its own "container" with exactly the
environment Terraform gave it (plus the emulator's endpoint), as Lambda
would run it. A recorder on the real AWS clients notes every operation each
function performs; the policies Terraform attached to each role are read
back from the emulator. Two promises are checked per function:

* everything the code calls is granted (no AccessDenied in production);
* everything granted is called by the code, is needed by the Lambda platform
  for that function, or is on a rare path listed below with where it is.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from typing import Any

import pytest

from service.local.samples import make_pdf
from tests.lambda_.events import FakeContext, http_event, sqs_event
from tests.support.archive_check import verify_archive_bytes
from tests.terraform.conftest import TfStack
from tests.terraform.stack_functions import (
    Functions,
    Recorder,
    deliver_batch,
    granted_actions,
    iam_actions_called,
)

pytestmark = pytest.mark.integration

# Granted for the platform, not for our code: the SQS event source mapping
# polls and deletes with the zipper's role; every function writes its logs.
PLATFORM = {
    "enqueue": {"logs:CreateLogStream", "logs:PutLogEvents"},
    "status": {"logs:CreateLogStream", "logs:PutLogEvents"},
    "zipper": {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    },
    # The dead-letter queue's event source mapping polls and deletes with its role.
    "sweeper": {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    },
}

# Paths too rare to drive deterministically here; each names its code.
RARE = {
    "enqueue": {
        "s3:DeleteObject": "manifest removed when the SQS send fails "
        "(jobs.manifest.delete_manifest)",
        "dynamodb:UpdateItem": "job marked FAILED when the SQS send fails "
        "(jobs.service._enqueue_or_fail)",
        "s3:ListBucketMultipartUploads": "output of a job FAILED when the SQS send fails "
        "discarded (jobs.ending.discard_output)",
        "s3:AbortMultipartUpload": "the same (jobs.ending.discard_output)",
    },
    "zipper": {
        "s3:DeleteObject": "archive removed when a job is cancelled in its last second "
        "(jobs.runner._succeeded)",
        "s3:ListMultipartUploadParts": "an attempt continuing the upload an earlier one "
        "kept, if that one got as far as a checkpoint (engine.checkpoint.listed_parts)",
        # The out-of-time test's 0.25 s deadline strikes before or after
        # CreateMultipartUpload depending on the machine's load; only after it
        # is there an upload to abort (engine.uploader abort, runner leftovers).
        "s3:AbortMultipartUpload": "upload aborted when the deadline strikes mid-upload "
        "(engine.uploader, engine.cleanup.abort_uploads)",
        # The stack keeps the default ZIPJOBS_FANOUT_MIN_MB (8 GiB): no job here is split.
        "sqs:SendMessage": "a job out of time after keeping more parts is continued with "
        "a fresh message (jobs.continuation.continue_if_progressed); range messages of a "
        "job past ZIPJOBS_FANOUT_MIN_MB (jobs.fanout.split, jobs.fanout.resend_ranges)",
    },
}


def _submit(fns: Functions, body: dict[str, Any], idempotency_key: str | None = None) -> str:
    headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
    event = http_event("POST", "/zip-jobs", body=body, headers=headers)
    out = fns.call("enqueue", event, FakeContext())
    assert out["statusCode"] == 202, out
    return str(json.loads(out["body"])["jobId"])


def _status(fns: Functions, job_id: str) -> dict[str, Any]:
    out = fns.call("status", http_event("GET", f"/zip-jobs/{job_id}"), FakeContext())
    assert out["statusCode"] == 200, out
    return dict(json.loads(out["body"]))


def _drain(fns: Functions, seconds: float = 900.0) -> list[dict[str, str]]:
    """Feed the zipper batches until the queue stays empty, as the event source mapping would.

    Returns every batch item failure reported on the way.
    """
    failures: list[dict[str, str]] = []
    empty_polls = 0
    while empty_polls < 2:
        got = deliver_batch(fns, seconds)
        if got is None:
            empty_polls += 1
            continue
        empty_polls = 0
        failures += got
        if failures and seconds < 900:
            return failures  # a short-deadline run: report, let the caller retry
    return failures


def _download(url: str) -> bytes:
    assert url.startswith("http://127.0.0.1")
    with urllib.request.urlopen(url, timeout=60) as resp:  # the local emulator only
        return bytes(resp.read())


@pytest.fixture(scope="module")
def sources(tf_stack: TfStack, src_bucket: str) -> dict[str, bytes]:
    s3 = tf_stack.client("s3")
    docs = {
        f"docs/statement-{i:02d}.pdf": make_pdf(f"s{i}", 30_000 + 997 * i, seed=i)
        for i in range(24)
    }
    # Big enough that moto cannot take it within the out-of-time test's deadline.
    docs["docs/large.pdf"] = b"%PDF-1.4\n" + random.Random(7).randbytes(48 * 1024 * 1024)
    # Keys long enough that a few hundred do not fit a DynamoDB item: a manifest job.
    stem = "invoices/" + "x" * 990
    for i in range(270):
        docs[f"{stem}-{i:03d}.pdf"] = b"%PDF-1.4 tiny " + str(i).encode()
    src_key = tf_stack.variables["src_kms_key_arns"][0]
    for key, body in docs.items():
        s3.put_object(
            Bucket=src_bucket,
            Key=key,
            Body=body,
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=src_key,
        )
    return docs


def test_a_keys_job_runs_to_ready_on_the_applied_stack(
    fns: Functions, sources: dict[str, bytes]
) -> None:
    keys = [k for k in sources if k.startswith("docs/")]
    body = {"keys": keys, "name": "docs.zip"}
    job_id = _submit(fns, body, idempotency_key="docs-1")
    assert _submit(fns, body, idempotency_key="docs-1") == job_id  # replayed, not a new job
    assert _drain(fns) == []
    doc = _status(fns, job_id)
    assert doc["status"] == "READY", doc
    verify_archive_bytes(_download(doc["downloadUrl"]), {k: sources[k] for k in keys})
    # SSE-KMS end to end: KMS-encrypted sources read, a multipart archive (48 MiB
    # source) written under the destination key by the bucket's default encryption.
    s3 = fns.stack.client("s3")
    src_head = s3.head_object(Bucket=fns.stack.src_bucket, Key="docs/large.pdf")
    assert src_head["ServerSideEncryption"] == "aws:kms"
    assert src_head["SSEKMSKeyId"] == fns.stack.variables["src_kms_key_arns"][0]
    prefix = f"{fns.stack.outputs['function_environment']['zipper']['ZIPJOBS_DST_PREFIX']}{job_id}/"
    (archive,) = s3.list_objects_v2(Bucket=fns.stack.dst_bucket, Prefix=prefix)["Contents"]
    head = s3.head_object(Bucket=fns.stack.dst_bucket, Key=archive["Key"])
    assert head["ETag"].strip('"').endswith(tuple(f"-{n}" for n in range(2, 10_001)))  # multipart
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == fns.stack.variables["dst_kms_key_arn"]


def test_a_prefix_job_and_a_manifest_job(fns: Functions, sources: dict[str, bytes]) -> None:
    prefix_job = _submit(fns, {"prefix": "docs/statement-0"})
    assert _drain(fns) == []
    assert _status(fns, prefix_job)["status"] == "READY"

    long_keys = [k for k in sources if k.startswith("invoices/")]
    manifest_job = _submit(fns, {"keys": long_keys})
    assert _drain(fns) == []
    doc = _status(fns, manifest_job)
    assert doc["status"] == "READY", doc
    assert doc["progress"]["filesDone"] == len(long_keys)


def test_cancel_and_a_retry_after_running_out_of_time(
    fns: Functions, sources: dict[str, bytes], tf_stack: TfStack
) -> None:
    cancelled = _submit(fns, {"keys": ["docs/statement-01.pdf"]})
    upload = _leave_an_upload(tf_stack, cancelled)  # as a killed attempt would
    out = fns.call("status", http_event("DELETE", f"/zip-jobs/{cancelled}"), FakeContext())
    assert out["statusCode"] == 202
    assert _uploads(tf_stack, upload) == []  # the cancel discarded it
    assert _drain(fns) == []

    from lambda_adapter.sqs_batch import SAFETY_SECONDS

    job_id = _submit(fns, {"keys": ["docs/large.pdf", "docs/statement-02.pdf"]})
    for _ in range(5):  # the deadline may strike before the claim: then try again
        first = _drain(fns, seconds=SAFETY_SECONDS + 0.25)
        assert len(first) == 1
        # Handed back (never RUNNING under a lease nobody holds), or never claimed.
        status = _status(fns, job_id)["status"]
        assert status in ("PENDING", "WAITING")
        if status == "WAITING":
            break
    assert status == "WAITING"
    # What the attempt would have left had it been killed: the retry aborts it first.
    _leave_an_upload(tf_stack, job_id)
    give_up = time.monotonic() + 120
    while _status(fns, job_id)["status"] != "READY":
        _drain(fns)
        assert time.monotonic() < give_up, "the released job was never finished"
    dst = tf_stack.client("s3")
    assert dst.list_multipart_uploads(Bucket=tf_stack.dst_bucket).get("Uploads", []) == []


def _dst_key(tf_stack: TfStack, job_id: str) -> str:
    prefix = tf_stack.handler_env("status")["ZIPJOBS_DST_PREFIX"]
    return f"{prefix}{job_id}/archive.zip"


def _leave_an_upload(tf_stack: TfStack, job_id: str) -> str:
    key = _dst_key(tf_stack, job_id)
    tf_stack.client("s3").create_multipart_upload(Bucket=tf_stack.dst_bucket, Key=key)
    return key


def _uploads(tf_stack: TfStack, key: str) -> list[Any]:
    resp = tf_stack.client("s3").list_multipart_uploads(Bucket=tf_stack.dst_bucket, Prefix=key)
    return list(resp.get("Uploads", []))


def _take_message(tf_stack: TfStack, job_id: str) -> dict[str, Any]:
    """Receive and delete the job's message from the jobs queue: it is lost."""
    sqs = tf_stack.client("sqs")
    got = sqs.receive_message(QueueUrl=tf_stack.queue_url, WaitTimeSeconds=1)["Messages"]
    assert [json.loads(m["Body"])["jobId"] for m in got] == [job_id]
    sqs.delete_message(QueueUrl=tf_stack.queue_url, ReceiptHandle=got[0]["ReceiptHandle"])
    return dict(got[0])


def test_the_sweeper_resends_a_lost_send_and_fails_a_dead_lettered_job(
    fns: Functions, sources: dict[str, bytes], tf_stack: TfStack
) -> None:
    """Both ways the sweeper function is invoked on AWS: the schedule and the DLQ."""
    resend_after = int(tf_stack.handler_env("sweeper")["ZIPJOBS_RESEND_AFTER_SECONDS"])
    assert resend_after == tf_stack.variables["resend_after_seconds"]

    lost = _submit(fns, {"keys": ["docs/statement-05.pdf"]})
    _take_message(tf_stack, lost)  # the API "died" before its message reached the queue
    time.sleep(resend_after + 0.5)
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    swept = fns.call("sweeper", scheduled, FakeContext())
    assert swept["swept"].get("resent", 0) >= 1, swept
    assert _drain(fns) == []
    assert _status(fns, lost)["status"] == "READY"

    dead = _submit(fns, {"keys": ["docs/statement-06.pdf"]})
    message = _take_message(tf_stack, dead)
    upload = _leave_an_upload(tf_stack, dead)
    sqs = tf_stack.client("sqs")
    dlq_url = tf_stack.handler_env("sweeper")["ZIPJOBS_DLQ_URL"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    out = fns.call("sweeper", sqs_event([message], dlq_arn), FakeContext())
    assert out == {"batchItemFailures": []}
    doc = _status(fns, dead)
    assert doc["status"] == "FAILED" and doc["error"]["code"] == "RetriesExhausted", doc
    assert "last error" in doc["error"]["message"]
    assert _uploads(tf_stack, upload) == []


def test_iam_grants_equal_what_each_function_calls(tf_stack: TfStack, recorder: Recorder) -> None:
    """Runs last in this module: the scenarios above drove every function."""
    granted = granted_actions(tf_stack)
    assert set(recorder.calls) == {"enqueue", "status", "zipper", "sweeper"}, recorder.calls.keys()
    for fn in ("enqueue", "status", "zipper", "sweeper"):
        called = iam_actions_called(recorder.calls[fn])
        assert called <= granted[fn], f"{fn} calls but is not granted: {called - granted[fn]}"
        allowed_extra = PLATFORM[fn] | set(RARE.get(fn, {}))
        assert granted[fn] <= called | allowed_extra, (
            f"{fn} is granted but never calls: {granted[fn] - called - allowed_extra}"
        )
