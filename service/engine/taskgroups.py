"""The one error a collapsed ``asyncio.TaskGroup`` stands for.

A TaskGroup raises an ``ExceptionGroup`` ("unhandled errors in a TaskGroup
(1 sub-exception)"), which says nothing to the client reading a FAILED job
and hides the type the runner classifies (permanent or transient). Callers
re-raise the first real error instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that started the collapse, not the cancellations it caused."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


async def run_together(*coros: Coroutine[Any, Any, T]) -> list[T]:
    """Run the coroutines as one TaskGroup and return their results in order; a
    failure cancels the rest and is raised as itself (``first_error``), not as
    an ExceptionGroup."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as tg:
            tasks.extend(tg.create_task(coro) for coro in coros)
    except BaseException as err:
        # A cancelled task keeps its CancelledError, and that error's traceback
        # the task's frames and their buffers; this frame lives on in the
        # error raised here, so it must not keep the tasks.
        tasks.clear()
        if isinstance(err, BaseExceptionGroup):
            raise first_error(err) from None
        raise
    return [task.result() for task in tasks]
