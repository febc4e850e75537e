"""The chaos layer itself (tests/chaos/): it must break what it says, and only that.

A fault layer that silently did nothing would make every chaos run pass.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from service.aws import aws_client
from service.local.stack import StackNames, provision
from tests.chaos.faults import ChaosConfig, FaultPlan, KillSchedule, Kind, Request, classify
from tests.chaos.item_limit import ITEM_LIMIT
from tests.chaos.proxy import ChaosProxy
from tests.support.aws_backend import AwsEndpoint

pytestmark = pytest.mark.integration


def test_the_same_seed_gives_the_same_decisions() -> None:
    config = ChaosConfig(seed=42, fault_rate=0.3)
    requests = [classify("GET", f"/b/k{i}", "", "", b"") for i in range(200)]

    def decisions(seed: int) -> list[Kind | None]:
        cfg = dataclasses.replace(config, seed=seed)
        plan = FaultPlan(cfg, "worker0", KillSchedule.of(cfg))
        return [plan.decide(r) for r in requests]

    first = decisions(42)
    assert first == decisions(42)
    assert first != decisions(43)
    broken = sum(d is not None for d in first)
    assert 30 <= broken <= 90  # about 30 % of 200
    assert {d for d in first if d is not None} == {
        Kind.ERROR_5XX,
        Kind.THROTTLE,
        Kind.RESET,
        Kind.HANG,
    }


@pytest.mark.parametrize(
    ("method", "query", "target", "service", "operation"),
    [
        ("PUT", "partNumber=3&uploadId=x", "", "s3", "UploadPart"),
        ("POST", "uploads", "", "s3", "CreateMultipartUpload"),
        ("DELETE", "uploadId=x", "", "s3", "AbortMultipartUpload"),
        ("GET", "list-type=2&prefix=a", "", "s3", "ListObjectsV2"),
        ("HEAD", "", "", "s3", "HeadObject"),
        ("POST", "", "DynamoDB_20120810.UpdateItem", "dynamodb", "UpdateItem"),
        ("POST", "", "AmazonSQS.SendMessage", "sqs", "SendMessage"),
    ],
)
def test_requests_are_named_by_service_and_operation(
    method: str, query: str, target: str, service: str, operation: str
) -> None:
    request = classify(method, "/bucket/key", query, target, b"")
    assert (request.service, request.operation) == (service, operation)


def test_kills_follow_the_schedule() -> None:
    kills = KillSchedule(api_sends={2}, worker_parts={1}, poison={"j" * 32})
    send = Request("sqs", "SendMessage", "POST", "/", "", b"")
    part = Request("s3", "UploadPart", "PUT", "/dst/archives/x/a.zip", "partNumber=1", b"")
    poison = Request("s3", "PutObject", "PUT", f"/dst/archives/{'j' * 32}/a.zip", "", b"")
    assert [kills.kill_for("api", send) for _ in range(3)] == [
        None,
        Kind.KILL_API_BEFORE_SEND,
        None,
    ]
    assert kills.kill_for("worker0", part) is Kind.KILL_WORKER_MID_PART
    assert kills.kill_for("worker0", part) is None
    assert kills.kill_for("worker1", poison) is Kind.KILL_WORKER_POISON
    assert kills.kill_for("api", poison) is None  # only workers write archives


async def test_an_update_over_400_kb_is_refused_whole(aws_endpoint: AwsEndpoint) -> None:
    """As AWS does (moto alone applies part of it): the item is exactly as before."""
    stack = await provision(aws_endpoint.settings(), StackNames(f"lim-{uuid.uuid4().hex[:8]}"))
    direct = aws_endpoint.settings()
    async with aws_client("dynamodb", direct) as db:
        config = ChaosConfig(fault_rate=0.0)
        plan = FaultPlan(config, "worker0", KillSchedule(set(), set()))
        killed: list[bool] = []
        async with ChaosProxy(
            aws_endpoint.url_for("dynamodb"), plan, kill=lambda: killed.append(True), dynamodb=db
        ) as proxy:
            proxied = dataclasses.replace(direct, endpoint_url=proxy.url, service_endpoints=())
            table = stack.names.table
            key: dict[str, Any] = {"jobId": {"S": "big"}}
            await db.put_item(TableName=table, Item={**key, "a": {"S": "x" * 1000}})
            async with aws_client("dynamodb", proxied) as through:
                with pytest.raises(ClientError) as info:
                    await through.update_item(
                        TableName=table,
                        Key=key,
                        # Each value fits; together they do not. moto applies
                        # such an update in part before it refuses.
                        UpdateExpression="SET b = :half, c = :half2",
                        ExpressionAttributeValues={
                            ":half": {"S": "y" * (ITEM_LIMIT // 2 + 1000)},
                            ":half2": {"S": "z" * (ITEM_LIMIT // 2 + 1000)},
                        },
                    )
                assert info.value.response["Error"]["Code"] == "ValidationException"
                ok = await through.update_item(
                    TableName=table,
                    Key=key,
                    UpdateExpression="SET c = :small",
                    ExpressionAttributeValues={":small": {"S": "fits"}},
                    ReturnValues="ALL_NEW",
                )
        item = (await db.get_item(TableName=table, Key=key, ConsistentRead=True))["Item"]
    assert "b" not in item and item["a"] == {"S": "x" * 1000}, sorted(item)
    assert item["c"] == {"S": "fits"} and ok["Attributes"]["c"] == {"S": "fits"}
    assert plan.injected[Kind.ITEM_TOO_LARGE] == 1 and not killed
