"""DynamoDB's 400 KB item limit, enforced the way AWS does it: the whole write or nothing.

AWS rejects an UpdateItem whose resulting item would exceed 400 KB with a
ValidationException and changes nothing
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-items).
moto raises the same error but has already applied part of the update, so a
test on moto alone can pass where AWS fails. ``ItemSizeLimit`` sits in front
of a DynamoDB client: it applies each UpdateItem, measures the item with
AWS's sizing rules and, if it is over the limit, puts the previous item back
and raises the ValidationException AWS would have raised.

Item size rules (names and values as UTF-8; numbers about one byte per two
digits plus one; one byte per list/map element plus three per list or map):
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

ITEM_LIMIT = 400 * 1024


def value_size(value: dict[str, Any]) -> int:
    """Bytes DynamoDB counts for one AttributeValue."""
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(inner.encode("utf-8"))
    if kind == "N":
        digits = len(str(inner).lstrip("-").replace(".", "").lstrip("0")) or 1
        return (digits + 1) // 2 + 1
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + value_size(v) + 1 for k, v in inner.items())
    if kind in ("SS", "NS", "BS"):
        return sum(value_size({kind[0]: v}) for v in inner)
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in item.items())


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
