"""DynamoDB's conditional writes are atomic; the emulator we test on must be too.

AWS: of several conditional updates racing for one item, exactly one passes
its condition (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/WorkingWithItems.html#WorkingWithItems.ConditionalUpdate).
The job store's claim depends on it. moto server alone lets two racing claims
both pass (a duplicate message then built one job twice);
``service.local.moto_atomic`` serializes its writes. This test fails without it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service.aws import aws_client
from tests.support.aws_backend import AwsEndpoint

pytestmark = pytest.mark.integration

RACERS = 8
ROUNDS = 40


async def test_racing_conditional_claims_have_exactly_one_winner(
    aws_endpoint: AwsEndpoint,
) -> None:
    table = f"atomic-{uuid.uuid4().hex[:8]}"
    async with aws_client("dynamodb", aws_endpoint.settings()) as ddb:
        await ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )

        async def claim(key: str, owner: str) -> bool:
            try:
                await ddb.update_item(
                    TableName=table,
                    Key={"k": {"S": key}},
                    UpdateExpression="SET #o = :o ADD attempts :one",
                    ConditionExpression="attribute_not_exists(#o)",
                    ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={":o": {"S": owner}, ":one": {"N": "1"}},
                )
            except ddb.exceptions.ConditionalCheckFailedException:
                return False
            return True

        try:
            for n in range(ROUNDS):
                key = f"job-{n}"
                won = await asyncio.gather(*(claim(key, f"w{i}") for i in range(RACERS)))
                item = await ddb.get_item(TableName=table, Key={"k": {"S": key}})
                assert sum(won) == 1, f"round {n}: {sum(won)} claims passed one condition"
                assert item["Item"]["attempts"]["N"] == "1"
        finally:
            await ddb.delete_table(TableName=table)
