"""Make moto's DynamoDB writes atomic, as DynamoDB's are.

DynamoDB evaluates a write's condition and applies the write as one atomic
step: of two conditional updates racing for the same item, exactly one
passes (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/WorkingWithItems.html#WorkingWithItems.ConditionalUpdate).
The job store's claim and every state change rely on that. moto server runs
each request on its own thread and takes no lock between reading an item for
the condition and writing it, so two claims can both succeed: a duplicate
message then builds the same job twice (seen in
tests/integration/test_worker.py, about one run in ten). The emulator must not
be weaker than the service we promise to behave like, so every moto that this
project starts goes through ``serialize_dynamodb_writes`` (docs/DESIGN.md,
"Emulators: what they let through").

``python -m service.local.moto_atomic -H HOST -p PORT`` runs moto_server with
the patch, for harnesses that start moto as its own process.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

_WRITE_LOCK = threading.RLock()
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _WRITE_LOCK:
            return method(*args, **kwargs)

    call.__zipjobs_atomic__ = True  # type: ignore[attr-defined]
    return call


def serialize_dynamodb_writes() -> None:
    """Hold one lock across each DynamoDB write in moto (idempotent)."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in _WRITES:
        method = getattr(DynamoDBBackend, name, None)
        if method is not None and not getattr(method, "__zipjobs_atomic__", False):
            setattr(DynamoDBBackend, name, _locked(method))


def main(argv: list[str] | None = None) -> None:
    """moto_server, with atomic DynamoDB writes."""
    from moto.server import main as moto_main

    serialize_dynamodb_writes()
    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
