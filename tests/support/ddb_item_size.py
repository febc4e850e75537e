"""DynamoDB's item size, computed the way AWS documents it, for the 400 KB limit.

AWS rejects a whole PutItem/UpdateItem whose resulting item would exceed
400 KB (409,600 bytes), counting attribute names and values:
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-items
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html
moto raises the same error but may already have applied part of the update,
so a test on moto can look fine where AWS leaves the job unfinished. Tests
compute the size of what was written and hold it to the limit.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

ITEM_LIMIT_BYTES = 400 * 1024


def _number_size(raw: str) -> int:
    """About 1 byte per two significant digits, plus 1 (AWS: 'up to 21 bytes')."""
    digits = Decimal(raw).normalize().as_tuple().digits
    return min(21, math.ceil(len(digits) / 2) + 1)


def value_size(value: dict[str, Any]) -> int:
    """Size of one typed attribute value ({"S": ...}, {"N": ...}, {"L": [...]}, ...)."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode("utf-8"))
    if kind == "N":
        return _number_size(v)
    if kind == "B":
        return len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS",):
        return sum(len(s.encode("utf-8")) for s in v)
    if kind == "NS":
        return sum(_number_size(n) for n in v)
    if kind == "L":  # 3 bytes, plus 1 byte per element
        return 3 + sum(value_size(e) + 1 for e in v)
    if kind == "M":  # 3 bytes, plus 1 byte per member, plus each member's name
        return 3 + sum(len(k.encode("utf-8")) + value_size(e) + 1 for k, e in v.items())
    raise NotImplementedError(f"attribute type {kind}")


def item_size(item: dict[str, dict[str, Any]]) -> int:
    """Attribute names (UTF-8) plus values, as DynamoDB counts them."""
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in item.items())
