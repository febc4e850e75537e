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

import os
import threading
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
