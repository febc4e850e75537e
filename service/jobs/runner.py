"""Run one job message: claim, build under a lease, finish. Shared by worker and Lambda.

The caller owns the queue message and acts on the returned ``Outcome``
(delete it, return it for a retry, or leave it alone); this module never
touches SQS, so the SQS worker and the Lambda SQS handler behave the same.

Why a heartbeat: the engine reports progress every 0.25 s, but one write per
second per job is plenty, and the same conditional write renews the lease
and is how a running job learns it was cancelled (the write fails once the
status is CANCELLED).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..engine import (
    Budget,
    Compression,
    Destination,
    EmptyArchiveError,
    MissingSourcesError,
    Progress,
    SourceObject,
    ZipJobError,
    ZipOptions,
    ZipResult,
    build_zip,
    list_prefix,
)
from ..engine.cleanup import abort_uploads
from ..engine.planner import make_plan
from .ending import discard_output, fail_job
from .fanout import (
    RangeProgress,
    build_one_range,
    finish_ranges,
    load,
    range_progress,
    resend_ranges,
    split,
)
from .fanout_store import delete_fanout_objects
from .manifest import read_manifest
from .messages import Action, JobMessage, Outcome
from .models import FailureReason, FanOut, JobRecord, JobStatus
from .service import JobService

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0


def classify(err: BaseException) -> tuple[bool, FailureReason]:
    """(permanent?, the error the client sees). Permanent errors are never retried."""
    if isinstance(err, MissingSourcesError):
        # Every key here; the store keeps as many as fit its byte bound (bounds.py).
        return True, FailureReason(err.code, str(err), tuple(p.key for p in err.problems))
    if isinstance(err, ZipJobError) and err.permanent:
        return True, FailureReason(err.code, str(err))
    return False, FailureReason("Transient", f"{type(err).__name__}: {err}")


def retry_delay(receive_count: int) -> int:
    """Exponential backoff between attempts, capped at a minute."""
    return int(min(60, 2 ** max(receive_count, 1)))


def arcname_under(prefix: str, key: str) -> str:
    """A prefix job's entry names are relative to the prefix's last folder."""
    cut = prefix.rfind("/") + 1
    return key[cut:] or key


class _Tracker:
    """Latest engine progress, and why the heartbeat stopped the build (if it did).

    The progress a client sees never falls: a resumed attempt starts again
    from its checkpoint, up to a part plus the read window behind what the
    last attempt reported (docs/resume.md, "The 500 GB run"), so the counts
    stay at the record's high-water mark until the build passes it again.
    """

    def __init__(self, record: JobRecord) -> None:
        self.progress = record.progress
        self._floor = record.progress
        self.stop_reason: str | None = None

    def update(self, p: Progress) -> None:
        floor = self._floor
        if p.bytes_total != floor.bytes_total or p.files_total != floor.files_total:
            self.progress = p  # another plan (or the first report): nothing to compare
            return
        self.progress = dataclasses.replace(
            p,
            bytes_done=max(p.bytes_done, floor.bytes_done),
            files_done=max(p.files_done, floor.files_done),
        )


async def run_job_message(
    svc: JobService, msg: JobMessage, *, owner: str, budget: Budget
) -> Outcome:
    """Claim the job and run it to an end state, or say why not.

    A duplicate delivery does nothing: a finished job is acknowledged, and a
    job RUNNING under a live lease is either acknowledged (a second message
    for it) or returned until that lease would have expired (the same
    message, redelivered: if its worker died, we take the job over then).
    A range message of a job split into ranges goes to ``_run_range``.
    """
    if msg.range is not None:
        return await _run_range(svc, msg, budget=budget)
    record = await svc.store.get(msg.job_id)
    if record is None:
        return Outcome(Action.DELETE, "no such job")
    if record.status.final:
        return Outcome(Action.DELETE, f"job already {record.status.value}")
    if record.attempts >= await svc.max_receives() and not record.lease_live(time.time()):
        # Every attempt died without reporting (killed, out of memory); re-sent
        # messages start their receive count afresh, the job's count does not.
        error = retries_exhausted(record.attempts, record.last_error)
        await fail_job(svc, record, error, unless_leased=True)
        return Outcome(Action.DELETE, "attempts used up; job FAILED")
    claimed = await _claim(svc, msg, owner)
    if claimed is None:
        return await _not_claimed(svc, msg)
    return await _run_claimed(svc, claimed, msg, owner=owner, budget=budget)


async def _claim(svc: JobService, msg: JobMessage, owner: str) -> JobRecord | None:
    """``store.claim``, safe against our own cancellation while the call is in flight.

    Cancelled mid-call, DynamoDB may still have applied the claim: the job
    would then be RUNNING under a lease nobody holds until it expires. So
    the call runs on as its own task; if we are cancelled we wait for its
    answer and, if the claim did land, hand the job back (WAITING) before
    passing the cancellation on.
    """
    call = asyncio.ensure_future(
        svc.store.claim(msg.job_id, owner, svc.settings.lease_seconds, msg.message_id)
    )
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        await asyncio.shield(_release_if_claimed(svc, call, owner))
        raise


async def _release_if_claimed(
    svc: JobService, call: asyncio.Future[JobRecord | None], owner: str
) -> None:
    try:
        claimed = await call
    except Exception:  # the claim failed: nothing is held
        return
    if claimed is not None:
        await svc.store.release(claimed.job_id, owner)


async def _not_claimed(svc: JobService, msg: JobMessage) -> Outcome:
    current = await svc.store.get(msg.job_id)
    if current is None or current.status.final:
        return Outcome(Action.DELETE, "job finished meanwhile")
    now = time.time()
    if current.lease_live(now):
        if current.message_id != msg.message_id:
            return Outcome(Action.DELETE, "duplicate message; the job runs under another")
        wait = math.ceil((current.lease_expires_at or now) - now) + 1
        return Outcome(Action.RETRY, "job running under a live lease", delay=wait)
    return Outcome(Action.RETRY, "lost a race to claim the job", delay=1)


async def _run_claimed(
    svc: JobService, record: JobRecord, msg: JobMessage, *, owner: str, budget: Budget
) -> Outcome:
    tracker = _Tracker(record)
    build = asyncio.create_task(_build(svc, record, budget, tracker, owner))
    beat = asyncio.create_task(_heartbeat(svc, record.job_id, owner, tracker, build))
    try:
        result = await build
    except asyncio.CancelledError:
        if tracker.stop_reason is None:  # our caller cancelled us: shutting down
            await asyncio.shield(svc.store.release(record.job_id, owner))
            raise
        log.info("job %s: stopped (%s)", record.job_id, tracker.stop_reason)
        if tracker.stop_reason == "cancelled":
            # The engine kept the upload for a resume that will not come.
            await asyncio.shield(discard_output(svc.s3, record))
            return Outcome(Action.DELETE, "job cancelled")
        return Outcome(Action.LEAVE, "lease lost to another worker")
    except Exception as err:
        return await _failed(svc, record, msg, owner, err)
    finally:
        beat.cancel()
    if isinstance(result, FanOut):
        # The job stays RUNNING; its ranges renew the lease (docs/resume.md).
        return Outcome(Action.DELETE, f"split into {result.workers} range messages")
    return await _succeeded(svc, record, owner, result)


async def _succeeded(
    svc: JobService,
    record: JobRecord,
    owner: str,
    result: ZipResult,
    *,
    fan: FanOut | None = None,
) -> Outcome:
    """READY under our lease (or, ``fan``, on the job's fan-out upload)."""
    skipped = [p.key for p in result.skipped]  # capped in bytes by the store
    done = Progress(result.source_bytes, result.source_bytes, result.files, result.files)
    upload_id = fan.upload_id if fan is not None else None
    ready = await svc.store.mark_ready(
        record.job_id, owner, done, result.archive_bytes, skipped, upload_id=upload_id
    )
    if ready and fan is not None:
        await _forget_ranges(svc, record, fan)
    if ready:
        log.info(
            "job %s: READY, %d files, %d bytes in %.1f s",
            record.job_id,
            result.files,
            result.archive_bytes,
            result.seconds,
        )
        return Outcome(Action.DELETE, "job READY")
    current = await svc.store.get(record.job_id)
    if current is not None and current.status is JobStatus.CANCELLED:
        # Cancelled in the last second: the client must not find an archive later.
        await discard_output(svc.s3, record)
        return Outcome(Action.DELETE, "job cancelled as it finished")
    return Outcome(Action.LEAVE, "lease lost before the job could be marked READY")


async def _run_range(svc: JobService, msg: JobMessage, *, budget: Budget) -> Outcome:
    """One range of a fanned-out job: build it, count it, and finish the job if last.

    No claim: the ranges share the job, which stays RUNNING on its fan-out
    upload, and each range's heartbeat renews the one job lease. A range
    already counted is acknowledged, unless every range is and the job is
    not READY: the finisher died, and this delivery finishes the job.
    Attempts are the range message's own receive count (docs/resume.md).
    """
    k = msg.range
    assert k is not None
    record = await svc.store.get(msg.job_id)
    if record is None:
        return Outcome(Action.DELETE, "no such job")
    if record.status.final:
        return Outcome(Action.DELETE, f"job already {record.status.value}")
    fan = record.fanout
    if fan is None or record.status is not JobStatus.RUNNING or k >= fan.workers:
        # Handed back (sweeper) or never split: the job's own message re-sends ranges.
        return Outcome(Action.DELETE, f"range {k}: the job is not running split into ranges")
    if k in fan.done and not fan.finished:
        return Outcome(Action.DELETE, f"range {k} already built")
    tracker = _Tracker(record)
    holder: list[RangeProgress] = []

    def renew() -> Awaitable[bool]:
        done = holder[0].value if holder else (fan.bytes_done[k], fan.files_done[k])
        lease = svc.settings.lease_seconds
        return svc.store.range_heartbeat(record.job_id, fan.upload_id, k, done, lease)

    work = asyncio.create_task(_range_work(svc, record, fan, k, budget, holder))
    beat = asyncio.create_task(_heartbeat(svc, record.job_id, "", tracker, work, renew))
    try:
        result = await work
    except asyncio.CancelledError:
        if tracker.stop_reason is None:  # shutdown or the deadline: the message comes back
            raise
        log.info("job %s: range %d stopped (%s)", record.job_id, k, tracker.stop_reason)
        return await _range_job_gone(svc, record.job_id, k)
    except Exception as err:
        return await _range_failed(svc, record, fan, msg, err)
    finally:
        beat.cancel()
    if result is None:
        return await _range_job_gone(svc, record.job_id, k)
    if not isinstance(result, ZipResult):
        return Outcome(Action.DELETE, f"range {k} built ({len(result)} of {fan.workers})")
    return await _succeeded(svc, record, "", result, fan=fan)


async def _range_work(
    svc: JobService,
    record: JobRecord,
    fan: FanOut,
    k: int,
    budget: Budget,
    holder: list[RangeProgress],
) -> ZipResult | frozenset[int] | None:
    """Range ``k``'s build (unless counted already), then the finisher if every range is.

    Returns the job's result when this call finished it, else the done set
    (None: the job ended or changed hands before range ``k`` was counted).
    """
    started = time.monotonic()
    options = _options(svc, record)
    loaded = await load(svc, record, fan, options)
    done: frozenset[int] | None = fan.done
    if k not in fan.done:
        holder.append(range_progress(loaded, fan, k))
        done = await build_one_range(svc, record, fan, k, loaded, budget=budget, progress=holder[0])
        if done is None or len(done) < fan.workers:
            return done
        log.info("job %s: range %d was the last of %d; finishing", record.job_id, k, fan.workers)
    upload = await finish_ranges(svc, record, fan, loaded, budget=budget)
    plan = loaded.plan
    return ZipResult(
        destination=loaded.job.destination,
        files=len(plan.entries),
        source_bytes=plan.total_source_bytes,
        archive_bytes=upload.bytes,
        parts=upload.parts,
        part_size=fan.part_size,
        seconds=time.monotonic() - started,
        etag=upload.etag,
        skipped=plan.skipped,
        workers=fan.workers,
    )


def _still_fanned_out(current: JobRecord | None, fan: FanOut) -> bool:
    """Is the job still RUNNING on this fan-out's upload?"""
    return (
        current is not None
        and current.status is JobStatus.RUNNING
        and current.fanout is not None
        and current.fanout.upload_id == fan.upload_id
    )


async def _range_job_gone(svc: JobService, job_id: str, k: int) -> Outcome:
    """The job left RUNNING-on-its-upload while range ``k`` ran: what is left to do."""
    current = await svc.store.get(job_id)
    if current is not None and current.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        # Whoever ended it discarded what existed then; our result may be newer.
        await discard_output(svc.s3, current)
        return Outcome(Action.DELETE, f"range {k}: job {current.status.value}")
    return Outcome(Action.DELETE, f"range {k}: the job changed hands; its message re-sends ranges")


async def _range_failed(
    svc: JobService, record: JobRecord, fan: FanOut, msg: JobMessage, err: Exception
) -> Outcome:
    """A permanent error fails the job (and discards the upload, plan and results);
    a transient one returns the message, until its receives run out.

    A job that ended meanwhile is no failure of this range: a cancel aborts
    the upload under the range's parts, which then fail with NoSuchUpload.
    """
    if not _still_fanned_out(await svc.store.get(record.job_id), fan):
        return await _range_job_gone(svc, record.job_id, msg.range or 0)
    permanent, error = classify(err)
    if permanent:
        await fail_job(svc, record, error)
        return Outcome(Action.DELETE, f"job FAILED: {error.code}")
    log.warning(
        "job %s: range %s, receive %d, failed: %s",
        record.job_id,
        msg.range,
        msg.receive_count,
        error.message,
    )
    final = retries_exhausted(msg.receive_count, error)
    if last := await fail_on_last_receive(svc, msg, final):
        return last
    delay = retry_delay(msg.receive_count)
    return Outcome(Action.RETRY, "transient failure of a range", delay=delay)


async def _forget_ranges(svc: JobService, record: JobRecord, fan: FanOut) -> None:
    """A READY job's plan and range results are of no more use (best effort: they
    expire with the bucket's rule for outputs)."""
    try:
        await delete_fanout_objects(svc.s3, record.dst_bucket, record.dst_key, fan.workers)
    except Exception as err:
        log.warning("job %s: range results not deleted: %s", record.job_id, err)


async def _failed(
    svc: JobService, record: JobRecord, msg: JobMessage, owner: str, err: Exception
) -> Outcome:
    permanent, error = classify(err)
    if permanent:
        await fail_job(svc, record, error, owner=owner)
        return Outcome(Action.DELETE, f"job FAILED: {error.code}")
    max_receives = await svc.max_receives()
    # The job's own count too: a re-sent message (sweeper) starts its receive
    # count afresh, but the job's attempts stay bounded by the same limit.
    attempt = max(msg.receive_count, record.attempts)
    log.warning(
        "job %s: attempt %d of %d failed: %s", record.job_id, attempt, max_receives, error.message
    )
    final = retries_exhausted(attempt, error)
    if last := await fail_on_last_receive(svc, msg, final, owner, attempt=attempt):
        return last
    delay = retry_delay(msg.receive_count)
    await svc.store.release(
        record.job_id, owner, retry_in=delay, error=error, max_attempts=max_receives
    )
    return Outcome(Action.RETRY, "transient failure", delay=delay)


def retries_exhausted(attempts: int, last_error: FailureReason | None) -> FailureReason:
    """The FAILED reason once no attempt is left: how many there were and the last error."""
    why = (
        f"{last_error.code}: {last_error.message}"
        if last_error is not None
        else "none recorded (the attempt's process stopped without reporting one: "
        "killed, out of memory or out of time)"
    )
    return FailureReason(
        "RetriesExhausted", f"gave up after {attempts} attempt(s); last error: {why}"
    )


async def fail_on_last_receive(
    svc: JobService,
    msg: JobMessage,
    reason: FailureReason,
    owner: str | None = None,
    *,
    attempt: int | None = None,
) -> Outcome | None:
    """The out-of-receives rule, for every path that gives up on an attempt.

    On the queue's last receive (or the job's last attempt, ``attempt``) the
    job is FAILED with ``reason``, its output discarded, and the message is
    returned once more, so SQS moves it to the dead-letter queue. Before
    that: None, and the caller returns the message for a retry.
    """
    max_receives = await svc.max_receives()
    if max(msg.receive_count, attempt or 0) < max_receives:
        return None
    record = await svc.store.get(msg.job_id)
    if record is not None:
        await fail_job(svc, record, reason, owner=owner)
    log.error("job %s: FAILED on receive %d of %d", msg.job_id, msg.receive_count, max_receives)
    return Outcome(Action.RETRY, f"job FAILED ({reason.code}); on to the dead-letter queue")


async def _sources(svc: JobService, record: JobRecord) -> list[SourceObject]:
    req = record.request
    if req.prefix is not None:
        listed = await list_prefix(svc.s3, req.bucket, req.prefix, limit=svc.settings.max_keys)
        return [SourceObject(s.bucket, s.key, arcname_under(req.prefix, s.key)) for s in listed]
    keys = req.keys
    if record.manifest is not None:
        keys = await read_manifest(svc.s3, record.manifest)
    return [SourceObject(req.bucket, key) for key in keys or ()]


def _options(svc: JobService, record: JobRecord, *, resume: bool = False) -> ZipOptions:
    return ZipOptions(
        budget_bytes=svc.settings.job_budget_bytes,
        compression=record.request.compression,
        missing=record.request.missing,
        resume=resume,
        checkpoint_interval_s=svc.settings.checkpoint_seconds,
    )


async def _build(
    svc: JobService, record: JobRecord, budget: Budget, tracker: _Tracker, owner: str
) -> ZipResult | FanOut:
    # A STORED archive continues from the checkpoint an earlier attempt left,
    # and build_zip aborts any upload that checkpoint does not name; a deflate
    # archive starts over (docs/resume.md). The upload belongs to the job
    # until it ends: READY completes it, ending.py discards it.
    # ZIPJOBS_RESUME_JOBS=0 (Settings.resume_jobs) turns this off.
    if record.fanout is not None:  # split by an earlier attempt: re-send what is missing
        await resend_ranges(svc, record, record.fanout)
        return record.fanout
    stored = svc.settings.resume_jobs and record.request.compression is Compression.STORED
    if record.attempts > 1 and not stored:
        # An earlier attempt that died left its upload behind (docs/lifecycle.md).
        n = await abort_uploads(svc.s3, record.dst_bucket, record.dst_key)
        if n:
            log.info("job %s: aborted %d upload(s) left by an earlier attempt", record.job_id, n)
    sources = await _sources(svc, record)
    options = _options(svc, record, resume=stored)
    plan = None
    if record.request.compression is Compression.STORED and svc.settings.fanout_max_workers > 1:
        # Planned here (and handed to build_zip) to know the archive's length:
        # past ZIPJOBS_FANOUT_MIN_MB per range it is split (docs/resume.md).
        plan = await make_plan(
            svc.s3, sources, missing=options.missing, concurrency=options.head_concurrency
        )
        if not plan.entries:
            raise EmptyArchiveError("no sources to archive")
        # The totals are known now; the heartbeat must not write zeros over
        # the ones the split records.
        tracker.update(Progress(0, plan.total_source_bytes, 0, len(plan.entries)))
        fan = await split(svc, record, plan, options, owner)
        if fan is not None:
            return fan
    return await build_zip(
        sources,
        Destination(record.dst_bucket, record.dst_key),
        s3=svc.s3,
        options=options,
        budget=budget,
        on_progress=tracker.update,
        plan=plan,
    )


Renew = Callable[[], Awaitable[bool]]


async def _heartbeat(
    svc: JobService,
    job_id: str,
    owner: str,
    tracker: _Tracker,
    build: asyncio.Task[Any],
    renew: Renew | None = None,
) -> None:
    """Once a second: write progress and renew the lease; stop the build if it cannot.

    Whatever goes wrong here ends in ``build.cancel()``: a heartbeat that
    died quietly would leave the build running without a lease, while
    another worker takes the job over (two writers on one archive key).
    """
    try:
        if renew is None:

            def renew_lease() -> Awaitable[bool]:
                lease = svc.settings.lease_seconds
                return svc.store.heartbeat(job_id, owner, tracker.progress, lease)

            renew = renew_lease
        tracker.stop_reason = await _beat_until_refused(svc, job_id, renew, build)
    except Exception as err:  # belt and braces: _beat_until_refused catches its calls
        log.error("job %s: heartbeat crashed: %s", job_id, err)
        tracker.stop_reason = "lease lost"
    if tracker.stop_reason is not None:
        build.cancel()


async def _beat_until_refused(
    svc: JobService, job_id: str, renew: Renew, build: asyncio.Task[Any]
) -> str | None:
    """Renew until the build ends (None) or the lease is gone ("cancelled" / "lease lost").

    A renewal that raises is retried while the lease we hold lasts, minus a
    second of margin; past that we can no longer know we hold it, so we stop.
    """
    lease = svc.settings.lease_seconds
    last_ok = time.monotonic()
    while not build.done():
        await asyncio.sleep(HEARTBEAT_SECONDS)
        try:
            ok = await renew()
        except Exception as err:  # DynamoDB hiccup: keep building while the lease lasts
            log.warning("job %s: heartbeat failed: %s", job_id, err)
            if time.monotonic() - last_ok < lease - HEARTBEAT_SECONDS:
                continue
            log.error("job %s: lease not renewed for %.0f s; stopping", job_id, lease)
            return "lease lost"
        if ok:
            now = time.monotonic()
            if now - last_ok > lease / 2:  # a starved loop risks losing the lease
                log.warning("job %s: heartbeat %.1f s after the last one", job_id, now - last_ok)
            last_ok = now
            continue
        return "cancelled" if await _was_cancelled(svc, job_id) else "lease lost"
    return None


async def _was_cancelled(svc: JobService, job_id: str) -> bool:
    """Why the heartbeat was refused; an unreadable record counts as a lost lease."""
    try:
        current = await svc.store.get(job_id)
    except Exception as err:
        log.warning("job %s: could not read the job after a refused heartbeat: %s", job_id, err)
        return False
    return current is not None and current.status is JobStatus.CANCELLED
