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
import json
import logging
import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..engine import (
    Budget,
    Compression,
    Destination,
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
from .ending import discard_output, fail_job
from .manifest import read_manifest
from .models import FailureReason, JobRecord, JobStatus
from .service import JobService

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0


class Action(StrEnum):
    DELETE = "delete"  # done with this message (finished, duplicate, poison)
    RETRY = "retry"  # make it visible again after ``delay`` seconds
    LEAVE = "leave"  # another worker owns the job now; do not touch the message


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    reason: str
    delay: int = 0


@dataclass(frozen=True, slots=True)
class JobMessage:
    job_id: str
    message_id: str
    receive_count: int


def parse_message(body: str, message_id: str, receive_count: int) -> JobMessage | None:
    """The job id from a message body; None for a body no job can come from (poison)."""
    try:
        doc = json.loads(body)
        job_id = doc["jobId"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(job_id, str):
        return None
    return JobMessage(job_id, message_id, receive_count)


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
    """Latest engine progress, and why the heartbeat stopped the build (if it did)."""

    def __init__(self, record: JobRecord) -> None:
        self.progress = record.progress
        self.stop_reason: str | None = None

    def update(self, p: Progress) -> None:
        self.progress = p


async def run_job_message(
    svc: JobService, msg: JobMessage, *, owner: str, budget: Budget
) -> Outcome:
    """Claim the job and run it to an end state, or say why not.

    A duplicate delivery does nothing: a finished job is acknowledged, and a
    job RUNNING under a live lease is either acknowledged (a second message
    for it) or returned until that lease would have expired (the same
    message, redelivered: if its worker died, we take the job over then).
    """
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
    build = asyncio.create_task(_build(svc, record, budget, tracker))
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
    return await _succeeded(svc, record, owner, tracker, result)


async def _succeeded(
    svc: JobService, record: JobRecord, owner: str, tracker: _Tracker, result: ZipResult
) -> Outcome:
    skipped = [p.key for p in result.skipped]  # capped in bytes by the store
    done = Progress(result.source_bytes, result.source_bytes, result.files, result.files)
    if await svc.store.mark_ready(record.job_id, owner, done, result.archive_bytes, skipped):
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


async def _build(
    svc: JobService, record: JobRecord, budget: Budget, tracker: _Tracker
) -> ZipResult:
    # A STORED archive continues from the checkpoint an earlier attempt left,
    # and build_zip aborts any upload that checkpoint does not name; a deflate
    # archive starts over (docs/resume.md). The upload belongs to the job
    # until it ends: READY completes it, ending.py discards it.
    # ZIPJOBS_RESUME_JOBS=0 (Settings.resume_jobs) turns this off.
    stored = svc.settings.resume_jobs and record.request.compression is Compression.STORED
    if record.attempts > 1 and not stored:
        # An earlier attempt that died left its upload behind (docs/lifecycle.md).
        n = await abort_uploads(svc.s3, record.dst_bucket, record.dst_key)
        if n:
            log.info("job %s: aborted %d upload(s) left by an earlier attempt", record.job_id, n)
    sources = await _sources(svc, record)
    options = ZipOptions(
        budget_bytes=svc.settings.job_budget_bytes,
        compression=record.request.compression,
        missing=record.request.missing,
        resume=stored,
        checkpoint_interval_s=svc.settings.checkpoint_seconds,
    )
    return await build_zip(
        sources,
        Destination(record.dst_bucket, record.dst_key),
        s3=svc.s3,
        options=options,
        budget=budget,
        on_progress=tracker.update,
    )


async def _heartbeat(
    svc: JobService, job_id: str, owner: str, tracker: _Tracker, build: asyncio.Task[Any]
) -> None:
    """Once a second: write progress and renew the lease; stop the build if it cannot.

    Whatever goes wrong here ends in ``build.cancel()``: a heartbeat that
    died quietly would leave the build running without a lease, while
    another worker takes the job over (two writers on one archive key).
    """
    try:
        tracker.stop_reason = await _beat_until_refused(svc, job_id, owner, tracker, build)
    except Exception as err:  # belt and braces: _beat_until_refused catches its calls
        log.error("job %s: heartbeat crashed: %s", job_id, err)
        tracker.stop_reason = "lease lost"
    if tracker.stop_reason is not None:
        build.cancel()


async def _beat_until_refused(
    svc: JobService, job_id: str, owner: str, tracker: _Tracker, build: asyncio.Task[Any]
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
            ok = await svc.store.heartbeat(job_id, owner, tracker.progress, lease)
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
