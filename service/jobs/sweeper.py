"""The sweeper and the dead-letter handler: every accepted job ends, whatever process died.

The queue alone cannot promise that. A job whose message was never sent
(the API died between the write and the send), whose message went to the
dead-letter queue (a worker killed in every attempt) or whose worker died
and whose message was lost would otherwise stay PENDING, RUNNING or WAITING
forever. So, periodically (inside every ``zipjobs worker``/``dev``, and on
AWS as its own scheduled function):

- a job not moving past its due time is re-sent (its message may be lost);
- a job with no attempt or re-send left is FAILED, naming the attempts and
  the last error, and its output discarded;
- every message in the dead-letter queue FAILs its job the same way.

Several sweepers may run at once: every write is conditional (see
``JobStore.record_resend`` and ``mark_failed(unless_leased=True)``), so a
job is re-sent or failed by exactly one of them, and never while a worker
holds a live lease on it. Thresholds and why: docs/lifecycle.md.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from .ending import fail_job
from .messages import parse_message
from .models import FailureReason, JobRecord, JobStatus
from .runner import retries_exhausted
from .service import JobService

log = logging.getLogger(__name__)

# Re-sends back off: the n-th waits resend_after * 2**n (capped), so a long
# backlog in the queue is not flooded with duplicates of its own messages.
_MAX_BACKOFF_EXPONENT = 6


class Verdict(StrEnum):
    WAIT = "wait"  # nothing to do (yet)
    RESEND = "resend"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    error: FailureReason | None = None


def due_since(record: JobRecord) -> dt.datetime | None:
    """Since when the job should have been moving; None while a live lease covers it."""
    if record.status is JobStatus.PENDING:
        return record.updated_at
    if record.status is JobStatus.WAITING:
        return max(record.updated_at, record.next_attempt_at or record.updated_at)
    if record.status is JobStatus.RUNNING:
        expires = record.lease_expires_at or 0.0
        if expires <= 0:  # released by an older version: as good as WAITING now
            return record.updated_at
        return dt.datetime.fromtimestamp(expires, dt.UTC)
    return None


def decide(
    record: JobRecord,
    now: dt.datetime,
    *,
    resend_after: float,
    max_resends: int,
    max_attempts: int,
) -> Decision:
    """What the sweeper does with one unfinished job. Pure: the record and the clock only."""
    since = due_since(record)
    if since is None or record.status.final:
        return Decision(Verdict.WAIT)
    backoff = resend_after * 2 ** min(record.resends, _MAX_BACKOFF_EXPONENT)
    if (now - since).total_seconds() < backoff:
        return Decision(Verdict.WAIT)
    if record.status is not JobStatus.PENDING and record.attempts >= max_attempts:
        return Decision(Verdict.FAIL, retries_exhausted(record.attempts, record.last_error))
    if record.resends >= max_resends:
        if record.status is JobStatus.PENDING:
            return Decision(
                Verdict.FAIL,
                FailureReason(
                    "NeverStarted",
                    f"no worker started the job although its message was sent "
                    f"{record.resends + 1} times; submit it again",
                ),
            )
        return Decision(Verdict.FAIL, retries_exhausted(record.attempts, record.last_error))
    return Decision(Verdict.RESEND)


async def sweep(svc: JobService) -> Counter[str]:
    """One pass over the unfinished jobs; counts of what was done, for logs and tests."""
    settings = svc.settings
    max_attempts = await svc.max_receives()
    done: Counter[str] = Counter()
    for record in await svc.store.unfinished():
        decision = decide(
            record,
            svc.now(),
            resend_after=settings.resend_after_seconds,
            max_resends=settings.max_resends,
            max_attempts=max_attempts,
        )
        try:
            done[await _act(svc, record, decision)] += 1
        except Exception as err:  # one bad job must not stop the sweep of the others
            log.warning("sweep: job %s: %s", record.job_id, err)
            done["error"] += 1
    if done["resent"] or done["failed"]:
        log.info("sweep: %s", dict(done))
    return done


async def _act(svc: JobService, record: JobRecord, decision: Decision) -> str:
    if decision.verdict is Verdict.WAIT:
        return "waiting"
    if decision.verdict is Verdict.FAIL:
        assert decision.error is not None
        failed = await fail_job(svc, record, decision.error, unless_leased=True)
        return "failed" if failed else "raced"
    if not await svc.store.record_resend(record):
        return "raced"  # another sweeper, or the job moved meanwhile
    log.warning(
        "sweep: job %s %s since %s; message re-sent",
        record.job_id,
        record.status.value,
        due_since(record),
    )
    await svc.send(record.job_id)
    return "resent"


async def handle_dead_letter(svc: JobService, body: str, message_id: str = "") -> bool:
    """FAIL the job of one dead-lettered message; True when the message is done with.

    False (keep the message, look again later) only while a worker holds a
    live lease on the job: it may yet finish it.
    """
    msg = parse_message(body, message_id, 0)
    if msg is None:
        log.warning("dead letter %s is not a job message; dropped", message_id)
        return True
    record = await svc.store.get(msg.job_id)
    if record is None or record.status.final:
        return True
    error = retries_exhausted(record.attempts, record.last_error)
    if await fail_job(svc, record, error, unless_leased=True):
        log.error("job %s: dead-lettered; FAILED (%s)", record.job_id, error.message)
        return True
    current = await svc.store.get(msg.job_id)
    return current is None or current.status.final


async def drain_dead_letters(svc: JobService, max_batches: int = 10) -> int:
    """Handle what waits in the dead-letter queue (the worker's path; AWS uses an event source)."""
    url = await svc.dead_letter_queue_url()
    if url is None:
        return 0
    handled = 0
    for _ in range(max_batches):
        resp = await svc.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60
        )
        messages = resp.get("Messages", [])
        if not messages:
            break
        for m in messages:
            if await handle_dead_letter(svc, m.get("Body", ""), m.get("MessageId", "")):
                await svc.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                handled += 1
    return handled
