"""Job-level fan-out: one STORED archive built by N queue messages (docs/resume.md,
"Job-level fan-out"). The runner decides what to do with each message; this
module does the work:

    split            (the job's message) create the upload, save the plan next
                     to the archive, record the split in the job, send N range messages
    resend_ranges    (the job's message again, after a lost range) the ranges not done
    build_one_range  (a range message) ``fanout_build.build_range`` from a blind
                     state, or from the range's own checkpoint if an earlier
                     attempt left one; save its ``RangeResult``; add k to the
                     job's done set
    finish_ranges    (whoever adds the last range) the N results -> deferred parts
                     -> CompleteMultipartUpload with the full-object CRC

The engine's pure half (``engine/fanout.py``) and its range builder
(``engine/fanout_build.py``) are the same ones the in-process fan-out uses.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from ..engine import Budget, Destination, MiB, Progress, ZipOptions
from ..engine.checkpoint import fingerprint
from ..engine.fanout import blind_state, deferred_parts, range_span, split_parts, workers_for
from ..engine.fanout_build import (
    RangeCheckpoints,
    RangeJob,
    build_range,
    finish,
    owned_entries,
    worker_shares,
)
from ..engine.layout import part_size_for
from ..engine.models import BudgetTooSmallError, Plan, ZipJobError
from ..engine.range_checkpoint import RangeSpec, range_checkpoint_store, usable_range_checkpoint
from ..engine.resume import FINGERPRINT_METADATA, completed_archive, discard_partial
from ..engine.stored_zip import StoredLayout
from ..engine.uploader import UploadResult, create_upload
from ..settings import MAX_FANOUT_WORKERS, Settings
from .fanout_store import (
    delete_fanout_objects,
    load_plan,
    load_result,
    range_checkpoint_key,
    save_plan,
    save_result,
)
from .models import FanOut, JobRecord

if TYPE_CHECKING:
    from .service import JobService

log = logging.getLogger(__name__)


class FanOutPlanChangedError(ZipJobError):
    """The plan in S3 is not the one the split recorded: no range may build from it."""

    code = "FanOutPlanChanged"


class LeaseLostError(Exception):
    """Transient: the job changed hands while it was being split."""


def destination(record: JobRecord) -> Destination:
    return Destination(record.dst_bucket, record.dst_key)


def workers_wanted(settings: Settings, length: int, part_size: int) -> int:
    """How many range messages an archive of ``length`` bytes gets (1: stay single).

    Whether to split and the usual count: one per ``ZIPJOBS_FANOUT_MIN_MB``
    of archive, at most ``ZIPJOBS_FANOUT_MAX_WORKERS`` and one per part. No
    budget term: each range runs in its own worker or Lambda with a whole
    job's budget. Then the ceiling wins over the configured cap: a job that
    is split gets enough ranges that none holds more than
    ``ZIPJOBS_FANOUT_RANGE_MAX_MB`` (so one range fits one attempt), up to
    ``MAX_FANOUT_WORKERS`` (docs/resume.md, "How many ranges").
    """
    if settings.fanout_max_workers < 2 or length <= part_size:
        return 1
    parts = math.ceil(length / part_size)
    usual = workers_for(
        length,
        part_size,
        max_workers=settings.fanout_max_workers,
        min_bytes_per_worker=settings.fanout_min_mb * MiB,
    )
    if usual < 2:
        return 1
    # Whole parts per range under the ceiling: split_parts gives no range more
    # than ceil(parts / n) parts, which is at most this when n >= parts / this.
    per_range = max(1, settings.fanout_range_max_mb * MiB // part_size)
    return min(max(usual, math.ceil(parts / per_range)), MAX_FANOUT_WORKERS, parts)


async def split(
    svc: JobService, record: JobRecord, plan: Plan, options: ZipOptions, owner: str
) -> FanOut | None:
    """Split a claimed STORED job into range messages; None when it should stay single.

    Order: the plan and the upload first, then the record (conditional on
    our lease), then the messages. A death before the record write leaves an
    upload the next attempt's ``discard_partial`` (or the job's end) aborts;
    a failed send is retried by the job's message, which finds the split in
    the record and re-sends what is missing (``resend_ranges``).
    """
    layout = StoredLayout(plan.entries)
    part_size = part_size_for(layout.length, options.min_part_size)
    wanted = workers_wanted(svc.settings, layout.length, part_size)
    if wanted < 2:
        return None
    workers = len(split_parts(math.ceil(layout.length / part_size), wanted))
    dest = destination(record)
    fp = fingerprint(plan.entries, part_size, layout.length)
    # An earlier single attempt's upload and checkpoint: a fan-out starts over.
    await discard_partial(svc.s3, dest)
    await save_plan(svc.s3, dest, plan, fp)
    upload_id = await create_upload(svc.s3, dest, options.content_type, {FINGERPRINT_METADATA: fp})
    fan = FanOut(upload_id, workers, part_size, layout.length, fp)
    totals = Progress(0, plan.total_source_bytes, 0, len(plan.entries))
    recorded = await svc.store.start_fanout(
        record.job_id, owner, fan, totals, svc.settings.lease_seconds
    )
    if not recorded:  # cancelled, or the lease lost: the upload and plan are nobody's
        await svc.s3.abort_multipart_upload(Bucket=dest.bucket, Key=dest.key, UploadId=upload_id)
        await delete_fanout_objects(svc.s3, dest.bucket, dest.key, 0)
        raise LeaseLostError(f"job {record.job_id}: lease lost before the split was recorded")
    log.info(
        "job %s: %d bytes split into %d ranges of parts of %d bytes",
        record.job_id,
        layout.length,
        workers,
        part_size,
    )
    for k in range(workers):
        await svc.send(record.job_id, k)
    return fan


async def resend_ranges(svc: JobService, record: JobRecord, fan: FanOut) -> int:
    """Send the ranges not yet done (all done: one, whose delivery finishes the job).

    A range still being built gets a second message; that copy builds the
    same bytes into the same parts (docs/resume.md: why this is safe and
    what it costs).
    """
    missing = [k for k in range(fan.workers) if k not in fan.done] or [0]
    for k in missing:
        await svc.send(record.job_id, k)
    log.info("job %s: re-sent range(s) %s", record.job_id, missing)
    return len(missing)


@dataclass(slots=True)
class RangeProgress:
    """One range's (source bytes, files done), never below what the record holds.

    A file counts in the range that holds its last data byte
    (``owned_entries``), so files split between ranges count once.
    """

    owned: tuple[int, int]
    floor: tuple[int, int]
    bytes_done: int = 0
    files_done: int = 0

    def step(self, pulled: int, entry: int) -> None:
        first, end = self.owned
        self.bytes_done = pulled
        self.files_done = min(max(0, entry - first), end - first)

    @property
    def value(self) -> tuple[int, int]:
        return max(self.floor[0], self.bytes_done), max(self.floor[1], self.files_done)


@dataclass(frozen=True, slots=True)
class Loaded:
    """The plan the split saved, checked against the record, and its layout."""

    plan: Plan
    layout: StoredLayout
    job: RangeJob


async def load(svc: JobService, record: JobRecord, fan: FanOut, options: ZipOptions) -> Loaded:
    dest = destination(record)
    plan, fp = await load_plan(svc.s3, dest)
    layout = StoredLayout(plan.entries)
    if fp != fan.fingerprint or fingerprint(plan.entries, fan.part_size, layout.length) != fp:
        raise FanOutPlanChangedError("the saved plan is not the one this job was split with")
    job = RangeJob(svc.s3, plan.entries, layout, dest, fan.upload_id, fan.part_size, options)
    return Loaded(plan, layout, job)


def range_progress(loaded: Loaded, fan: FanOut, k: int) -> RangeProgress:
    ranges = split_parts(math.ceil(fan.length / fan.part_size), fan.workers)
    spans = [range_span(f, last, fan.part_size, fan.length) for f, last in ranges]
    owned = owned_entries(loaded.layout, spans)[k]
    return RangeProgress(owned, (fan.bytes_done[k], fan.files_done[k]))


async def range_checkpoints(
    svc: JobService,
    fan: FanOut,
    k: int,
    loaded: Loaded,
    parts: tuple[int, int],
    drop: frozenset[int],
) -> RangeCheckpoints | None:
    """Range ``k``'s own checkpoint, and the one to continue from if an earlier
    attempt left a usable one (docs/resume.md, "A range resumes from its own
    checkpoint"); None when job-level resume is off (ZIPJOBS_RESUME_JOBS=0)."""
    if not svc.settings.resume_jobs:
        return None
    dest = loaded.job.destination
    store = range_checkpoint_store(svc.s3, dest.bucket, range_checkpoint_key(dest.key, k))
    first, last = parts
    spec = RangeSpec(
        loaded.layout, fan.part_size, first, last, drop, fan.fingerprint, fan.upload_id
    )
    prior = await usable_range_checkpoint(svc.s3, dest, store, spec)
    return RangeCheckpoints(store, spec, loaded.job.options.checkpoint_interval_s, prior)


async def build_one_range(
    svc: JobService,
    record: JobRecord,
    fan: FanOut,
    k: int,
    loaded: Loaded,
    *,
    budget: Budget,
    progress: RangeProgress,
) -> frozenset[int] | None:
    """Build range ``k`` blind, save its result, mark it done; the done set after
    (None: the job ended or changed hands meanwhile, nothing was counted)."""
    job, layout = loaded.job, loaded.layout
    first, last = split_parts(math.ceil(fan.length / fan.part_size), fan.workers)[k]
    start = range_span(first, last, fan.part_size, fan.length)[0]
    drop = frozenset(deferred_parts(layout, fan.part_size, first, last))
    checkpoints = await range_checkpoints(svc, fan, k, loaded, (first, last), drop)
    shares = worker_shares(job.options, fan.part_size, 1)
    if shares.total > budget.capacity:
        raise BudgetTooSmallError(
            f"a range needs {shares.total} bytes but the shared budget is {budget.capacity}"
        )
    async with budget.lease(shares.total) as lease:
        result = await build_range(
            job,
            first,
            last,
            blind_state(layout, start),
            drop=drop,
            lease=lease,
            shares=shares,
            read_concurrency=job.options.read_concurrency,
            on_step=progress.step,
            checkpoints=checkpoints,
        )
    await save_result(svc.s3, job.destination, k, result)
    return await svc.store.range_done(record.job_id, fan.upload_id, k, progress.value)


async def finish_ranges(
    svc: JobService, record: JobRecord, fan: FanOut, loaded: Loaded, *, budget: Budget
) -> UploadResult:
    """Regenerate the deferred parts from the N results and complete the upload.

    A finisher that died after CompleteMultipartUpload left the archive in
    place: found by its fingerprint metadata and length, it is taken as done
    (no byte read again), as is a completion another finisher won.
    """
    job = loaded.job
    done = await completed_archive(svc.s3, job.destination, fan.fingerprint, fan.length)
    if done is not None:
        log.info("job %s: the archive was completed by an earlier finisher", record.job_id)
        return UploadResult(done.etag, done.parts, fan.length, 0)
    results = [await load_result(svc.s3, job.destination, k) for k in range(fan.workers)]
    stray = [r.upload_id for r in results if r.upload_id != fan.upload_id]
    if stray:
        raise FanOutPlanChangedError(f"range results of another upload: {stray[:3]}")
    shares = worker_shares(job.options, fan.part_size, 1)
    job_budget = min(job.options.budget_bytes, budget.capacity)
    try:
        # The job's share of the process budget, and within it the job's own cap.
        async with budget.lease(job_budget):
            upload, _ = await finish(job, results, budget=Budget(job_budget), shares=shares)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise
        done = await completed_archive(svc.s3, job.destination, fan.fingerprint, fan.length)
        if done is None:
            raise
        return UploadResult(done.etag, done.parts, fan.length, 0)
    return upload
