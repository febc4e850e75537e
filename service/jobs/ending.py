"""The one way a job ends without an archive: FAILED or CANCELLED, output discarded.

Every path that makes a job FAILED or CANCELLED (the runner, the Lambda
deadline, the sweeper, the dead-letter handler, the cancel API, a failed
enqueue) goes through here, so none of them can leave a multipart upload
being billed or an archive a client was told does not exist.

Order: the status write first, then the discard. The write is conditional;
only its winner discards, so a job that another worker finished READY a
moment earlier never loses its archive. If the discard then fails, the
upload is left to the bucket's AbortIncompleteMultipartUpload rule
(terraform/bucket.tf) and the failure is logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..engine import Compression
from ..engine.cleanup import discard_archive
from .fanout_store import delete_fanout_objects
from .models import FailureReason, JobRecord

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

    from .service import JobService

log = logging.getLogger(__name__)


async def discard_output(s3: S3Client, record: JobRecord) -> None:
    """Abort the job's multipart uploads and delete its archive, if any.

    A STORED job may have been split into ranges (docs/resume.md, "Job-level
    fan-out"): its plan goes too, and the results of the ranges the record
    knows of. A range that saves its result after this finds the job ended
    when it tries to count it, and discards again (``runner._range_job_gone``).
    """
    try:
        aborted = await discard_archive(s3, record.dst_bucket, record.dst_key)
        if record.request.compression is Compression.STORED:
            workers = record.fanout.workers if record.fanout is not None else 0
            await delete_fanout_objects(s3, record.dst_bucket, record.dst_key, workers)
    except Exception as err:
        log.error("job %s: could not discard its output: %s", record.job_id, err)
        return
    if aborted:
        log.info("job %s: aborted %d multipart upload(s)", record.job_id, aborted)


async def fail_job(
    svc: JobService,
    record: JobRecord,
    error: FailureReason,
    *,
    owner: str | None = None,
    unless_leased: bool = False,
) -> bool:
    """Mark the job FAILED (see ``JobStore.mark_failed``) and discard its output if we did."""
    if not await svc.store.mark_failed(record.job_id, error, owner, unless_leased=unless_leased):
        return False
    log.info("job %s: FAILED (%s)", record.job_id, error.code)
    await discard_output(svc.s3, record)
    return True


async def cancel_job(svc: JobService, job_id: str) -> JobRecord | None:
    """Mark the job CANCELLED and discard its output; None if unknown or already final.

    A worker running it notices at its next heartbeat and stops; its
    engine aborts its own upload, and this discard covers what an earlier,
    dead attempt left.
    """
    record = await svc.store.cancel(job_id)
    if record is not None:
        await discard_output(svc.s3, record)
    return record
