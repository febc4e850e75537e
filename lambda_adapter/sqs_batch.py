"""The zipper's SQS batch: run each record's job, report only the failures.

With ``ReportBatchItemFailures`` the event source mapping deletes every
message not named in ``batchItemFailures`` and returns the named ones; any
other answer shape would mark the whole batch done and lose messages
(docs/DESIGN.md, "AWS limits"), so this module always answers in that shape,
whatever fails.

Lambda's hard time limit is the failure this module exists for: a job that
cannot finish before it is stopped by our own deadline (remaining time minus
a safety margin), its upload kept with a checkpoint for the next attempt to
continue (STORED; a deflate upload is aborted) and its lease released,
and its message made visible again after a short delay instead of the queue's
long visibility timeout. Past the queue's receive limit the job is FAILED
with a reason that says why, and the message goes on to the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.engine import Budget
from service.jobs import (
    Action,
    FailureReason,
    JobMessage,
    JobService,
    Outcome,
    parse_message,
    run_job_message,
)
from service.jobs.continuation import continue_if_progressed, kept_bytes
from service.jobs.queue import settle
from service.jobs.runner import fail_on_last_receive
from service.jobs.visibility import keep_invisible, visibility_window

from .runtime import current_job

log = logging.getLogger("service.lambda")

# Seconds kept back from the Lambda deadline for aborting the upload,
# releasing the lease and answering.
SAFETY_SECONDS = 20.0


@dataclass(frozen=True, slots=True)
class Record:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int

    @classmethod
    def from_event(cls, raw: dict[str, Any]) -> Record:
        attrs = raw.get("attributes") or {}
        return cls(
            message_id=raw["messageId"],
            receipt_handle=raw.get("receiptHandle", ""),
            body=raw.get("body", ""),
            receive_count=int(attrs.get("ApproximateReceiveCount", "1")),
        )


async def process_batch(
    svc: JobService,
    budget: Budget,
    records: list[dict[str, Any]],
    *,
    owner: str,
    seconds_left: Callable[[], float],
) -> dict[str, list[dict[str, str]]]:
    """Run every record concurrently (one shared budget); name the ones to retry."""
    parsed = [Record.from_event(r) for r in records]
    results = await asyncio.gather(
        *(_process(svc, budget, rec, owner, seconds_left) for rec in parsed),
        return_exceptions=True,
    )
    failures = []
    for rec, result in zip(parsed, results, strict=True):
        if isinstance(result, BaseException):
            log.error("message %s: %s", rec.message_id, result, exc_info=result)
            failures.append(rec.message_id)
        elif not result:
            failures.append(rec.message_id)
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}


async def _process(
    svc: JobService, budget: Budget, rec: Record, owner: str, seconds_left: Callable[[], float]
) -> bool:
    """True when the message is done with (delete it), False to have it returned."""
    msg = parse_message(rec.body, rec.message_id, rec.receive_count)
    if msg is None:
        log.warning("message %s: not a job message; dropped", rec.message_id)
        return True
    current_job.set(msg.job_id)
    deadline = seconds_left() - SAFETY_SECONDS
    if deadline <= 0:  # not even time to start: same decision as running out mid-job
        return await _out_of_time(svc, rec, msg, kept_before=None)
    # What the upload holds now, to tell a stopped attempt that made progress
    # (continued afresh) from one that did not (counted): continuation.py.
    kept_before = await kept_bytes(svc, msg.job_id)
    # The queue's visibility timeout is 6x the function timeout (90 minutes);
    # a short window extended while the job runs here makes a crashed
    # attempt come back within a minute instead (service/jobs/visibility.py).
    keeper = asyncio.create_task(
        keep_invisible(
            svc.sqs,
            svc.settings.queue_url,
            rec.receipt_handle,
            visibility_window(svc.settings.lease_seconds),
        )
    )
    try:
        try:
            async with asyncio.timeout(deadline):
                outcome = await run_job_message(svc, msg, owner=owner, budget=budget)
        finally:  # stopped before the outcome sets the message's visibility
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
    except TimeoutError:
        return await _out_of_time(svc, rec, msg, kept_before=kept_before)
    return await _act(svc, rec, outcome)


async def _act(svc: JobService, rec: Record, outcome: Outcome) -> bool:
    log.info("message %s: %s (%s)", rec.message_id, outcome.action.value, outcome.reason)
    return await settle(svc.sqs, svc.settings.queue_url, rec.receipt_handle, outcome, delete=False)


async def _out_of_time(
    svc: JobService, rec: Record, msg: JobMessage, *, kept_before: int | None
) -> bool:
    """Continue, retry soon, or FAIL the job at the queue's receive limit.

    When the deadline hit mid-job, the engine has checkpointed a STORED
    upload for the next delivery to resume (docs/resume.md), or aborted a
    deflate one, and the runner has released the lease by the time this runs.
    An attempt that kept more of the archive than it started with does not
    count against the limit: a fresh message continues the job.
    """
    if await continue_if_progressed(svc, msg.job_id, kept_before):
        return await _act(svc, rec, Outcome(Action.DELETE, "out of time; continued afresh"))
    reason = FailureReason(
        "TimeLimit",
        f"the archive could not be built within the function's time limit "
        f"in {rec.receive_count} attempts; raise the zipper timeout or split the job",
    )
    outcome = await fail_on_last_receive(svc, msg, reason)
    if outcome is None:
        log.warning(
            "job %s: out of time on attempt %d; released for a retry", msg.job_id, rec.receive_count
        )
        outcome = Outcome(Action.RETRY, "out of time; released for a retry", delay=1)
    return await _act(svc, rec, outcome)
