"""What a client sees of a job: pure functions from a record to JSON.

The download URL is passed in, never read from the record: it is signed at
read time, because a URL signed with a role's temporary credentials stops
working when that session token expires, whatever expiry it asked for.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .codec import iso, progress_json
from .models import JobRecord, JobStatus


def status_path(job_id: str, base_path: str = "") -> str:
    return f"{base_path.rstrip('/')}/zip-jobs/{job_id}"


def accepted_view(job_id: str, status: JobStatus, base_path: str = "") -> dict[str, Any]:
    """The POST /zip-jobs answer."""
    return {"jobId": job_id, "status": status.value, "statusUrl": status_path(job_id, base_path)}


def job_view(
    record: JobRecord,
    *,
    base_path: str = "",
    download_url: str | None = None,
    url_expires_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The GET /zip-jobs/{id} answer; optional members appear only when they mean something."""
    out: dict[str, Any] = {
        "jobId": record.job_id,
        "status": record.status.value,
        "statusUrl": status_path(record.job_id, base_path),
        "name": record.request.name,
        "progress": progress_json(record.progress),
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
        "attempts": record.attempts,
    }
    if record.started_at is not None:
        out["startedAt"] = iso(record.started_at)
    if record.finished_at is not None:
        out["finishedAt"] = iso(record.finished_at)
    if record.status is JobStatus.FAILED and record.error is not None:
        out["error"] = record.error.to_json()
    if record.status is JobStatus.WAITING:
        out["retry"] = retry_view(record)
    if record.status is JobStatus.READY:
        if record.archive_bytes is not None:
            out["archiveBytes"] = record.archive_bytes
        if record.skipped_keys:
            out["skippedKeys"] = list(record.skipped_keys)
        if record.skipped_keys_omitted:
            out["skippedKeysOmitted"] = record.skipped_keys_omitted
        if download_url is not None and url_expires_at is not None:
            out["downloadUrl"] = download_url
            out["expiresAt"] = iso(url_expires_at)
    return out


def retry_view(record: JobRecord) -> dict[str, Any]:
    """A WAITING job: attempts made, how many the queue allows, when the next is due, why."""
    out: dict[str, Any] = {"attemptsMade": record.attempts}
    if record.max_attempts:
        out["maxAttempts"] = record.max_attempts
    if record.next_attempt_at is not None:
        out["nextAttemptAt"] = iso(record.next_attempt_at)
    if record.last_error is not None:
        out["lastError"] = record.last_error.to_json()
    return out
