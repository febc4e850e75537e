"""A long job that keeps making progress is continued, not failed at the receive limit.

SQS counts every receive of a message, and past the queue's
``maxReceiveCount`` the message goes to the dead-letter queue (and the job
ends FAILED). That limit is meant for attempts that *fail*. A STORED archive
too big for one Lambda invocation (about 40-80 GB in 15 minutes) runs out of
time on purpose, keeps its upload and checkpoint, and the next attempt
continues it (docs/resume.md). Counted as failures, such attempts would cap
a job at ``maxReceiveCount`` invocations: with the default of 3, about
130-240 GB, and a redeploy mid-job would use one of them up.

So an attempt that ends by being stopped (out of time, or released on
shutdown) and *kept* more of the archive than it started with (more bytes in
the checkpointed parts of the one upload) is a continuation: the job's
attempt count starts again and the message is replaced by a fresh one (whose
receive count starts at 1). An attempt that kept nothing new counts as
before, so a job that cannot progress still ends FAILED after
``maxReceiveCount`` attempts. The loop ends: every continuation needs more
kept bytes than the last, and the archive's length bounds them.

Only STORED jobs with resume on qualify: a deflate attempt's upload is
aborted when it stops, so it keeps nothing. The measure is the checkpoint in
S3 (what the next attempt will really resume from), not the job record's
progress, which may run ahead of it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..engine import Compression, Destination
from ..engine.checkpoint import CheckpointStore

if TYPE_CHECKING:
    from .service import JobService

log = logging.getLogger(__name__)


async def kept_bytes(svc: JobService, job_id: str) -> int | None:
    """Archive bytes the job's upload holds per its checkpoint; None if it cannot resume.

    None for a job that is gone or final, a deflate job, a job split into
    range messages (docs/resume.md, "Job-level fan-out"), or resume turned
    off: such an attempt can never be a continuation. 0 for a resumable
    job with no checkpoint yet. None too when either read fails: not knowing
    means counting the attempt, as before continuations existed.
    """
    try:
        record = await svc.store.get(job_id)
        if record is None or record.status.final:
            return None
        if record.fanout is not None:  # split into ranges: no checkpoint; ranges count receives
            return None
        if not svc.settings.resume_jobs or record.request.compression is not Compression.STORED:
            return None
        dest = Destination(record.dst_bucket, record.dst_key)
        cp = await CheckpointStore(svc.s3, dest).load()
    except Exception as err:
        log.warning("job %s: could not read what its upload holds (%s)", job_id, err)
        return None
    return 0 if cp is None else sum(part.size for part in cp.parts)


async def continue_if_progressed(svc: JobService, job_id: str, before: int | None) -> bool:
    """True when the job was continued: its attempts reset and a fresh message sent.

    ``before`` is ``kept_bytes`` read as the attempt began. The caller then
    deletes the old message; on False (no progress, or any step failed) it
    settles the message as an ordinary failed attempt. A failed send after
    the reset only gives the job more attempts; the old message, returned,
    still runs it.
    """
    if before is None:
        return False
    after = await kept_bytes(svc, job_id)
    if after is None or after <= before:
        return False
    try:
        if not await svc.store.renew_attempts(job_id):
            return False  # not WAITING any more: cancelled, taken over, or finished
        await svc.send(job_id)
    except Exception as err:  # an ordinary retry is still safe
        log.warning("job %s: not continued (%s); retrying it as a failed attempt", job_id, err)
        return False
    log.info(
        "job %s: continued with a fresh attempt count (%d -> %d archive bytes kept)",
        job_id,
        before,
        after,
    )
    return True
