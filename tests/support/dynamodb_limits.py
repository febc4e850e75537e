"""DynamoDB's 400 KB item limit, enforced the way AWS does it: the whole write or nothing.

AWS rejects an UpdateItem whose resulting item would exceed 400 KB with a
ValidationException and changes nothing
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-items).
moto raises the same error but has already applied part of the update, so a
test on moto alone can pass where AWS fails. ``ItemSizeLimit`` sits in front
of a DynamoDB client: it applies each UpdateItem, measures the item with
AWS's sizing rules and, if it is over the limit, puts the previous item back
and raises the ValidationException AWS would have raised.

This is the same rule as the chaos proxy's (tests/chaos/item_limit.py), as a
client wrapper, for tests that call the store directly.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

# AWS's item sizing rules, shared with the chaos proxy's HTTP-level layer.
from tests.chaos.item_limit import ITEM_LIMIT, item_size

__all__ = ["ITEM_LIMIT", "ItemSizeLimit", "item_size"]


def too_large() -> ClientError:
    return ClientError(
        {
            "Error": {
                "Code": "ValidationException",
                "Message": "Item size has exceeded the maximum allowed size",
            }
        },
        "UpdateItem",
    )


class ItemSizeLimit:
    """A DynamoDB client whose UpdateItem is atomic at the 400 KB limit, as on AWS."""

    def __init__(self, client: Any, limit: int = ITEM_LIMIT) -> None:
        self._client = client
        self.limit = limit
        self.rejected = 0
        self.largest = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def update_item(self, **kwargs: Any) -> Any:
        table, key = kwargs["TableName"], kwargs["Key"]
        before = (await self._client.get_item(TableName=table, Key=key, ConsistentRead=True)).get(
            "Item"
        )
        try:
            resp = await self._client.update_item(**kwargs)
            after = (
                await self._client.get_item(TableName=table, Key=key, ConsistentRead=True)
            ).get("Item")
            size = item_size(after or {})
            self.largest = max(self.largest, size)
            if size <= self.limit:
                return resp
            error = too_large()
        except ClientError as err:
            if "ConditionalCheckFailed" in str(err):
                raise
            error = err  # moto's own (partly applied) rejection: undo it like AWS
        self.rejected += 1
        if before is not None:
            await self._client.put_item(TableName=table, Item=before)
        raise error
