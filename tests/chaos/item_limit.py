"""DynamoDB's 400 KB item limit, as AWS applies it: the whole write is refused.

AWS rejects an UpdateItem whose resulting item would exceed 400 KB with a
ValidationException and changes nothing
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html).
moto raises the same error after applying part of the update. The chaos
proxy therefore applies each UpdateItem, measures the item with AWS's sizing
rules (names and values in UTF-8, numbers about one byte per two digits
plus one, 3 bytes per list or map plus one per element:
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html)
and, when it is over, restores the item and answers the ValidationException.
"""

from __future__ import annotations

from typing import Any

ITEM_LIMIT = 400 * 1024


def value_size(value: dict[str, Any]) -> int:
    """Bytes DynamoDB counts for one AttributeValue."""
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(str(inner).encode("utf-8"))
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
