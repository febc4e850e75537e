"""The applied stack's Lambda functions, run in-process as Lambda would run them.

Each function gets its own ``Container`` (loop, clients, budget) and exactly
the environment Terraform gave it, plus the emulator's endpoint. A
``Recorder`` notes every AWS operation each function's clients perform, so a
test can compare them with the IAM grants Terraform attached to its role
(``test_handlers_on_stack.py``). ``deliver_queue`` plays the SQS event source
mapping in front of the zipper.

Calls are serialised by a lock: a call swaps ``os.environ`` for the
function's environment, and Lambda runs one event per container at a time.
"""

from __future__ import annotations

import json
import os
import threading
import traceback
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import service.aws
from lambda_adapter import handlers
from lambda_adapter.runtime import Container
from tests.lambda_.events import FakeContext, sqs_event

if TYPE_CHECKING:  # conftest imports this module for its fixtures
    from tests.terraform.conftest import TfStack


# The IAM action that authorises each API operation our code calls.
IAM_ACTION = {
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "GetObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "PutObject"): "s3:PutObject",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
    ("s3", "AbortMultipartUpload"): "s3:AbortMultipartUpload",
    ("s3", "ListMultipartUploads"): "s3:ListBucketMultipartUploads",
    ("s3", "ListParts"): "s3:ListMultipartUploadParts",
    ("s3", "DeleteObject"): "s3:DeleteObject",
    ("dynamodb", "GetItem"): "dynamodb:GetItem",
    ("dynamodb", "PutItem"): "dynamodb:PutItem",
    ("dynamodb", "UpdateItem"): "dynamodb:UpdateItem",
    # A transaction is authorised per item action; ours puts the job and its
    # idempotency record (service/jobs/store.py).
    ("dynamodb", "TransactWriteItems"): "dynamodb:PutItem",
    ("sqs", "SendMessage"): "sqs:SendMessage",
    # The status function signs download URLs with the signing role's session.
    ("sts", "AssumeRole"): "sts:AssumeRole",
    ("sqs", "GetQueueAttributes"): "sqs:GetQueueAttributes",
    ("sqs", "ChangeMessageVisibility"): "sqs:ChangeMessageVisibility",
    ("sqs", "DeleteMessage"): "sqs:DeleteMessage",
    ("sqs", "ReceiveMessage"): "sqs:ReceiveMessage",
    ("dynamodb", "Scan"): "dynamodb:Scan",
    # The API token, read at cold start (service/api_token.py).
    ("secretsmanager", "GetSecretValue"): "secretsmanager:GetSecretValue",
    ("ssm", "GetParameter"): "ssm:GetParameter",
}

# With SSE-KMS buckets S3 calls KMS with the caller's rights, so these S3
# operations need these KMS actions (docs/aws.md, rules K1-K3). The stack
# under test encrypts both sides with KMS.
KMS_FOR = {
    ("s3", "PutObject"): {"kms:GenerateDataKey"},
    ("s3", "CreateMultipartUpload"): {"kms:GenerateDataKey"},
    ("s3", "UploadPart"): {"kms:GenerateDataKey"},
    ("s3", "CompleteMultipartUpload"): {"kms:Decrypt"},
    ("s3", "GetObject"): {"kms:Decrypt"},
}


def iam_actions_called(calls: set[tuple[str, str]]) -> set[str]:
    """The IAM actions a function's recorded operations need, KMS through S3 included."""
    unknown = {c for c in calls if c not in IAM_ACTION}
    assert not unknown, f"operations with no IAM mapping here: {unknown}"
    return {IAM_ACTION[c] for c in calls} | {a for c in calls for a in KMS_FOR.get(c, set())}


def role_policies(stack: TfStack, role: str) -> list[dict[str, Any]]:
    """The role's inline policies as IAM holds them."""
    iam = stack.client("iam")
    docs = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        docs.append(json.loads(doc) if isinstance(doc, str) else doc)
    return docs


def granted_actions(stack: TfStack) -> dict[str, set[str]]:
    """Function -> every action its role's policies name."""
    out: dict[str, set[str]] = {}
    for fn, role in stack.outputs["role_names"].items():
        actions: set[str] = set()
        for doc in role_policies(stack, role):
            for st in doc["Statement"]:
                acts = st["Action"]
                actions.update([acts] if isinstance(acts, str) else acts)
        out[fn] = actions
    return out


class Recorder:
    """(service, operation) pairs each function's clients performed."""

    def __init__(self) -> None:
        self.calls: dict[str, set[tuple[str, str]]] = defaultdict(set)

    @contextmanager
    def every_client(self, function: str) -> Iterator[None]:
        """Record the calls of every client ``service.aws`` creates meanwhile.

        Some are created and closed inside the service before ``attach`` can
        see them: the API token's read at cold start (service/api_token.py),
        the signing role's STS client.
        """
        original = service.aws._client

        @asynccontextmanager
        async def recording(name: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            async with original(name, *args, **kwargs) as client:
                client.meta.events.register(
                    "before-call.*.*",
                    lambda model, **_: self.calls[function].add((name, model.name)),
                )
                yield client

        service.aws._client = recording  # type: ignore[assignment]
        try:
            yield
        finally:
            service.aws._client = original  # type: ignore[assignment]

    def attach(self, function: str, svc: Any) -> None:
        for name, client in (("s3", svc.s3), ("dynamodb", svc.dynamodb), ("sqs", svc.sqs)):
            client.meta.events.register(
                "before-call.*.*",
                lambda model, _fn=function, _svc=name, **_: self.calls[_fn].add((_svc, model.name)),
            )
        presign = svc.s3.generate_presigned_url

        async def recording_presign(method: str, *args: Any, **kwargs: Any) -> Any:
            # A presigned URL is used with the signer's rights: it needs GetObject.
            self.calls[function].add(("s3", "GetObject"))
            return await presign(method, *args, **kwargs)

        svc.s3.generate_presigned_url = recording_presign
        signer = getattr(svc, "_signer", None)
        if signer is not None:  # its STS client lives inside the signer: record the call
            assume = signer._assume

            async def recording_assume() -> Any:
                self.calls[function].add(("sts", "AssumeRole"))
                return await assume()

            signer._assume = recording_assume


class Functions:
    """One container per function, each with its Terraform environment."""

    def __init__(self, stack: TfStack, recorder: Recorder) -> None:
        self.stack = stack
        self.recorder = recorder
        self.containers: dict[str, Container] = {}
        self._one_at_a_time = threading.Lock()

    def call(self, function: str, event: dict[str, Any], context: FakeContext) -> Any:
        with self._one_at_a_time, self.recorder.every_client(function):
            saved = dict(os.environ)
            os.environ.clear()
            os.environ.update({**saved, **self.stack.handler_env(function)})
            try:
                if function not in self.containers:
                    self.containers[function] = Container()
                    container = self.containers[function]
                    svc = container.run(container.service())
                    self.recorder.attach(function, svc)
                handlers._container = self.containers[function]
                return getattr(handlers, function)(event, context)
            finally:
                os.environ.clear()
                os.environ.update(saved)
                handlers._container = None

    def close(self) -> None:
        for container in self.containers.values():
            container.close()


def queue_arn(stack: TfStack, queue_url: str) -> str:
    attrs = stack.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"]
    )
    return str(attrs["Attributes"]["QueueArn"])


def deliver_batch(
    fns: Functions, seconds: float = 900.0, wait_seconds: int = 1
) -> list[Any] | None:
    """One poll of the jobs queue, its batch delivered to the zipper as the mapping would.

    None when the queue gave nothing; else the batch item failures. With
    ``ReportBatchItemFailures`` the mapping deletes every message of the
    batch not reported as failed; failed ones come back after their
    visibility timeout.
    https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html
    """
    sqs = fns.stack.client("sqs")
    got = sqs.receive_message(
        QueueUrl=fns.stack.queue_url,
        AttributeNames=["All"],
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait_seconds,
    ).get("Messages", [])
    if not got:
        return None
    event = sqs_event(got, queue_arn(fns.stack, fns.stack.queue_url))
    failures = list(fns.call("zipper", event, FakeContext(seconds))["batchItemFailures"])
    failed = {f["itemIdentifier"] for f in failures}
    done = [m for m in got if m["MessageId"] not in failed]
    if done:
        sqs.delete_message_batch(
            QueueUrl=fns.stack.queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
            ],
        )
    return failures


class EventSourceMapping:
    """Delivers the jobs queue to the zipper in a thread until stopped."""

    def __init__(self, fns: Functions) -> None:
        self.fns = fns
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="esm", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                deliver_batch(self.fns, wait_seconds=1)
            except Exception:
                self.errors.append(traceback.format_exc())
                self._stop.wait(1)

    def __enter__(self) -> EventSourceMapping:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
