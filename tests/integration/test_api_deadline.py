"""The API answers in bounded time when DynamoDB or SQS hang or fail (issue 8).

Behind API Gateway (29-30 s) a slow answer is a 504 the client cannot act on.
So the API's AWS clients have short timeouts and retry budgets
(service/aws.py INTERACTIVE), every request has a deadline
(ZIPJOBS_API_DEADLINE_SECONDS), and a hanging, throttling or failing
dependency is a 503 problem+json with Retry-After. The faults are injected
by an HTTP proxy in front of the emulator (tests/support/fault_proxy.py):
moto itself never hangs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.api import make_app
from service.aws import INTERACTIVE
from service.jobs import JobService
from service.local.stack import Provisioned, StackNames, provision
from tests.support.aws_backend import AwsEndpoint
from tests.support.fault_proxy import Fault, FaultProxy

pytestmark = pytest.mark.integration

DEADLINE_S = 3
# Generous: the point is "bounded, far below 29 s", not a speed figure.
ANSWER_WITHIN_S = DEADLINE_S + 6
DYNAMODB = "DynamoDB_20120810."
SEND = "AmazonSQS.SendMessage"


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    return await provision(aws_endpoint.settings(), StackNames(f"ddl-{uuid.uuid4().hex[:8]}"))


@pytest.fixture
async def client(stack: Provisioned, proxy: FaultProxy) -> AsyncIterator[TestClient[Any, Any]]:
    # Every service through the proxy, also one with its own endpoint.
    through_proxy = {f"AWS_ENDPOINT_URL_{s.upper()}": proxy.url for s, _ in stack.service_endpoints}
    settings = stack.settings(
        AWS_ENDPOINT_URL=proxy.url, ZIPJOBS_API_DEADLINE_SECONDS=str(DEADLINE_S), **through_proxy
    )
    async with (
        JobService.open(settings, limits=INTERACTIVE) as svc,
        TestClient(TestServer(make_app(svc))) as c,
    ):
        yield c


async def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    # Cut off well before pytest would: the unfixed API took 40-200 s here.
    resp = await asyncio.wait_for(call, 25)
    return resp, time.monotonic() - started


async def assert_503(resp: Any, elapsed: float) -> dict[str, Any]:
    body = await resp.text()
    assert resp.status == 503, body
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert int(resp.headers["Retry-After"]) > 0
    assert elapsed < ANSWER_WITHIN_S, elapsed
    doc: dict[str, Any] = json.loads(body)
    assert doc["status"] == 503 and doc["detail"]
    return doc


POST_FAULTS = {
    "dynamodb-hangs": Fault("POST", target_contains=DYNAMODB, delay_s=120, times=100),
    "dynamodb-500": Fault(
        "POST", target_contains=DYNAMODB, status=500, code="InternalServerError", times=100
    ),
    "dynamodb-throttles": Fault(
        "POST",
        target_contains=DYNAMODB,
        status=400,
        code="ProvisionedThroughputExceededException",
        times=100,
    ),
    "sqs-hangs": Fault("POST", target_contains=SEND, delay_s=120, times=100),
    "sqs-500": Fault("POST", target_contains=SEND, status=500, code="InternalError", times=100),
}


@pytest.mark.parametrize("fault", list(POST_FAULTS.values()), ids=list(POST_FAULTS))
async def test_post_answers_503_in_bounded_time(
    client: TestClient[Any, Any], proxy: FaultProxy, fault: Fault
) -> None:
    proxy.add(fault)
    resp, elapsed = await timed(
        client.post(
            "/zip-jobs",
            data=json.dumps({"keys": ["a.pdf"]}),
            headers={"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex},
        )
    )
    await assert_503(resp, elapsed)
    assert fault.hits >= 1


async def test_status_answers_503_when_dynamodb_hangs(
    client: TestClient[Any, Any], proxy: FaultProxy
) -> None:
    proxy.add(Fault("POST", target_contains=DYNAMODB + "GetItem", delay_s=120, times=100))
    resp, elapsed = await timed(client.get(f"/zip-jobs/{uuid.uuid4().hex}"))
    doc = await assert_503(resp, elapsed)
    assert str(DEADLINE_S) in doc["detail"]


async def test_a_healthy_dependency_still_answers(client: TestClient[Any, Any]) -> None:
    resp, _ = await timed(
        client.post(
            "/zip-jobs",
            data=json.dumps({"keys": ["a.pdf"]}),
            headers={"Content-Type": "application/json"},
        )
    )
    assert resp.status == 202, await resp.text()
