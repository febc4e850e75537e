"""The job's vocabulary: what a client asks for and what the store keeps.

Plain frozen dataclasses, no I/O: the API, the worker and the Lambda handlers
all pass these around, and the DynamoDB codec is the only place that knows
how they are laid out in an item.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..engine import Compression, MissingPolicy, Progress


class JobStatus(StrEnum):
    """PENDING -> RUNNING <-> WAITING -> one of the three final states (docs/lifecycle.md).

    WAITING is a job whose attempt ended without finishing it (a transient
    error, a shutdown, a lease that expired) and that waits for its next
    attempt; it never goes back to PENDING, and the final states are final.
    """

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    READY = "READY"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        return self in (JobStatus.READY, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated request. Exactly one of ``keys`` (non-empty) and ``prefix`` is set."""

    bucket: str
    keys: tuple[str, ...] | None
    prefix: str | None
    name: str = "archive.zip"
    missing: MissingPolicy = MissingPolicy.FAIL
    compression: Compression = Compression.STORED

    def canonical(self) -> dict[str, Any]:
        """The request with defaults applied: what idempotency compares."""
        return {
            "bucket": self.bucket,
            "keys": list(self.keys) if self.keys is not None else None,
            "prefix": self.prefix,
            "name": self.name,
            "missing": self.missing.value,
            "compression": self.compression.value,
        }


@dataclass(frozen=True, slots=True)
class FailureReason:
    """Why a job FAILED (or why its last attempt did), as the client sees it.

    ``missing_keys`` names the missing sources up to a size bound
    (``bounds.REPORTED_KEYS_BYTES``); ``missing_keys_omitted`` counts the rest.
    """

    code: str
    message: str
    missing_keys: tuple[str, ...] = ()
    missing_keys_omitted: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.missing_keys:
            out["missingKeys"] = list(self.missing_keys)
        if self.missing_keys_omitted:
            out["missingKeysOmitted"] = self.missing_keys_omitted
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """Where the keys of a job too large for one DynamoDB item live in S3."""

    bucket: str
    key: str
    count: int


@dataclass(frozen=True, slots=True)
class FanOut:
    """A STORED job split into ``workers`` range messages on one multipart upload.

    What every range worker needs so that none re-plans differently: the
    upload, the part size and archive length (so the part split, ``split_parts``)
    and the plan's fingerprint (the plan itself is in S3, ``jobs/fanout_plan.py``).
    ``done`` is the set of finished ranges (a DynamoDB number set, so a
    redelivered range adds itself once); ``bytes_done``/``files_done`` each
    range's progress. Bounded: at most ``settings.MAX_FANOUT_WORKERS`` ranges.
    See docs/resume.md, "Job-level fan-out".
    """

    upload_id: str
    workers: int
    part_size: int
    length: int
    fingerprint: str
    done: frozenset[int] = frozenset()
    bytes_done: tuple[int, ...] = ()
    files_done: tuple[int, ...] = ()

    @property
    def finished(self) -> bool:
        return len(self.done) >= self.workers


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as stored. Timestamps are timezone-aware UTC."""

    job_id: str
    status: JobStatus
    request: JobRequest
    dst_bucket: str
    dst_key: str
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: int  # the DynamoDB TTL attribute (epoch seconds)
    manifest: Manifest | None = None
    keys_count: int = 0
    progress: Progress = field(default_factory=Progress)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    error: FailureReason | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None  # epoch seconds
    message_id: str | None = None
    attempts: int = 0
    archive_bytes: int | None = None
    skipped_keys: tuple[str, ...] = ()
    skipped_keys_omitted: int = 0
    # Set while WAITING: why the last attempt ended, when the next one is due
    # and how many attempts the queue allows in all (its maxReceiveCount).
    last_error: FailureReason | None = None
    next_attempt_at: dt.datetime | None = None
    max_attempts: int = 0
    resends: int = 0  # messages re-sent by the sweeper (docs/lifecycle.md)
    fanout: FanOut | None = None  # set once the job is split into range messages

    def lease_live(self, now: float) -> bool:
        return (
            self.status is JobStatus.RUNNING
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )
