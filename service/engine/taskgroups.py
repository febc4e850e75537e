"""The one error a collapsed ``asyncio.TaskGroup`` stands for.

A TaskGroup raises an ``ExceptionGroup`` ("unhandled errors in a TaskGroup
(1 sub-exception)"), which says nothing to the client reading a FAILED job
and hides the type the runner classifies (permanent or transient). Callers
re-raise the first real error instead.
"""

from __future__ import annotations

import asyncio


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that started the collapse, not the cancellations it caused."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
