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
from typing import TYPE_CHECKING, Any

from ..engine import (
    Budget,
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
from .manifest import read_manifest
from .models import FailureReason, JobRecord, JobStatus
from .service import JobService

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
# Keys named in a FAILED/READY record. DynamoDB rejects a whole write whose
# item would exceed 400 KB, which would leave the job unfinished; the request's
# own keys may take up to 256 KiB inline (jobs/manifest.py), so the reported
# ones get at most 64 KiB (S3 keys are up to 1,024 bytes). docs/aws.md, rule D1.
MAX_REPORTED_KEYS = 1000
MAX_REPORTED_KEY_BYTES = 64 * 1024


def reported_keys(keys: list[str]) -> tuple[str, ...]:
    """The first keys that fit both the count and the byte bound."""
    out: list[str] = []
    used = 0
    for key in keys[:MAX_REPORTED_KEYS]:
        used += len(key.encode("utf-8")) + 1  # + DynamoDB's byte per list element
        if used > MAX_REPORTED_KEY_BYTES:
            break
        out.append(key)
    return tuple(out)


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
        keys = [p.key for p in err.problems]
        return True, FailureReason(err.code, str(err), reported_keys(keys))
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
    claimed = await svc.store.claim(msg.job_id, owner, svc.settings.lease_seconds, msg.message_id)
    if claimed is None:
        return await _not_claimed(svc, msg)
    return await _run_claimed(svc, claimed, msg, owner=owner, budget=budget)


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
    skipped = list(reported_keys([p.key for p in result.skipped]))
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
        await svc.s3.delete_object(Bucket=record.dst_bucket, Key=record.dst_key)
        return Outcome(Action.DELETE, "job cancelled as it finished")
    return Outcome(Action.LEAVE, "lease lost before the job could be marked READY")


async def _failed(
    svc: JobService, record: JobRecord, msg: JobMessage, owner: str, err: Exception
) -> Outcome:
    permanent, error = classify(err)
    if permanent:
        log.info("job %s: FAILED (%s)", record.job_id, error.code)
        await svc.store.mark_failed(record.job_id, error, owner)
        return Outcome(Action.DELETE, f"job FAILED: {error.code}")
    log.warning("job %s: attempt %d failed: %s", record.job_id, msg.receive_count, error.message)
    final = FailureReason(
        "RetriesExhausted",
        f"gave up after {msg.receive_count} attempts; last error: {error.message}",
    )
    if last := await fail_on_last_receive(svc, msg, final, owner):
        return last
    await svc.store.release(record.job_id, owner)
    return Outcome(Action.RETRY, "transient failure", delay=retry_delay(msg.receive_count))


async def fail_on_last_receive(
    svc: JobService, msg: JobMessage, reason: FailureReason, owner: str | None = None
) -> Outcome | None:
    """The out-of-receives rule, for every path that gives up on an attempt.

    On the queue's last receive the job is FAILED with ``reason`` and the
    message is returned once more, so SQS moves it to the dead-letter queue.
    Before that: None, and the caller returns the message for a retry.
    """
    max_receives = await svc.max_receives()
    if msg.receive_count < max_receives:
        return None
    await svc.store.mark_failed(msg.job_id, reason, owner)
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


async def abort_leftover_uploads(s3: S3Client, bucket: str, key: str) -> int:
    """Abort multipart uploads a dead worker left for this job's archive key.

    The key contains the job id, so every upload under it belongs to this job.
    """
    aborted = 0
    resp = await s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    for upload in resp.get("Uploads", []):
        if upload["Key"] == key:
            await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
            aborted += 1
    return aborted


async def _build(
    svc: JobService, record: JobRecord, budget: Budget, tracker: _Tracker
) -> ZipResult:
    if record.attempts > 1:
        n = await abort_leftover_uploads(svc.s3, record.dst_bucket, record.dst_key)
        if n:
            log.info("job %s: aborted %d upload(s) left by an earlier attempt", record.job_id, n)
    sources = await _sources(svc, record)
    options = ZipOptions(
        budget_bytes=svc.settings.job_budget_bytes,
        compression=record.request.compression,
        missing=record.request.missing,
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
    """Once a second: write progress and renew the lease; stop the build if either is refused."""
    lease = svc.settings.lease_seconds
    last_ok = time.monotonic()
    while not build.done():
        await asyncio.sleep(HEARTBEAT_SECONDS)
        try:
            ok = await svc.store.heartbeat(job_id, owner, tracker.progress, lease)
        except Exception as err:  # DynamoDB hiccup: keep building while the lease lasts
            log.warning("job %s: heartbeat failed: %s", job_id, err)
            if time.monotonic() - last_ok < lease:
                continue
            ok = False
        if ok:
            now = time.monotonic()
            if now - last_ok > lease / 2:  # a starved loop risks losing the lease
                log.warning("job %s: heartbeat %.1f s after the last one", job_id, now - last_ok)
            last_ok = now
            continue
        current = await svc.store.get(job_id)
        cancelled = current is not None and current.status is JobStatus.CANCELLED
        tracker.stop_reason = "cancelled" if cancelled else "lease lost"
        build.cancel()
        return
