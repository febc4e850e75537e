"""The one error a collapsed ``asyncio.TaskGroup`` stands for.

A TaskGroup raises an ``ExceptionGroup`` ("unhandled errors in a TaskGroup
(1 sub-exception)"), which says nothing to the client reading a FAILED job
and hides the type the runner classifies (permanent or transient). Callers
re-raise the first real error instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that started the collapse, not the cancellations it caused."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


async def run_together(*coros: Coroutine[Any, Any, None]) -> None:
    """Run the coroutines as one TaskGroup; a failure cancels the rest and is
    raised as itself (``first_error``), not as an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as tg:
            for coro in coros:
                tg.create_task(coro)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
