"""The engine's vocabulary: what goes in, what the plan knows, what comes out.

Plain frozen dataclasses with no I/O, so every stage (plan, read, zip,
upload) and every caller (CLI, job worker, Lambda) speaks the same types.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from ..units import MiB


class Compression(StrEnum):
    """PDFs are already compressed, so STORED is the default: deflate costs
    about 44 MiB/s of CPU per core for a few percent of size."""

    STORED = "stored"
    DEFLATE = "deflate"


class MissingPolicy(StrEnum):
    """What a missing or unreadable source does to the job."""

    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class SourceObject:
    """One object to put in the archive. ``arcname`` defaults to the key."""

    bucket: str
    key: str
    arcname: str | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where the archive goes. ``filename`` feeds Content-Disposition."""

    bucket: str
    key: str

    @property
    def filename(self) -> str:
        return self.key.rsplit("/", 1)[-1] or "archive.zip"

    @classmethod
    def parse(cls, url: str) -> Destination:
        """Parse ``s3://bucket/key``; anything else is a caller error."""
        if not url.startswith("s3://"):
            raise ValueError(f"destination must look like s3://bucket/key.zip, got {url!r}")
        bucket, _, key = url[len("s3://") :].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise ValueError(f"destination must name a bucket and a key, got {url!r}")
        return cls(bucket=bucket, key=key)


@dataclass(frozen=True, slots=True)
class PlannedEntry:
    """A source that exists, with what HEAD told us and its final arcname.

    ``etag`` pins the version we read (GET with If-Match), so an object
    overwritten mid-job fails the job instead of corrupting the archive.
    """

    source: SourceObject
    arcname: str
    size: int
    etag: str
    last_modified: dt.datetime


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """A source we could not use, and why (``NoSuchKey``, ``MissingOrNotReadable``...)."""

    bucket: str
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything known before the first byte moves."""

    entries: tuple[PlannedEntry, ...]
    skipped: tuple[SourceProblem, ...] = ()

    @property
    def total_source_bytes(self) -> int:
        return sum(e.size for e in self.entries)


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for progress callbacks; cheap to build, safe to keep.

    The job layer stores the same object in its record (``JobRecord.progress``).
    """

    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0

    @property
    def fraction(self) -> float:
        return 1.0 if self.bytes_total == 0 else self.bytes_done / self.bytes_total


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class ZipOptions:
    """Configuration for one ``build_zip`` job. Defaults suit S3 from a Lambda or a small container.

    :param budget_bytes: The most bytes of buffers the job holds at once:
        read-ahead ranges, the part being filled and the parts in flight.
        ``layout.split_budget`` shares it between part buffers and read-ahead
        in proportion to how long each holds its bytes. The smallest
        that works is one part plus one range (else ``BudgetTooSmallError``
        says how much is needed). The process's RSS follows
        ``service/memory.py``, not this figure alone.
    :param compression: ``STORED`` (default: PDFs are compressed already, and
        the exact archive length is known up front) or ``DEFLATE`` (about
        44 MiB/s per core, run on a worker thread).
    :param missing: ``FAIL`` (default) fails the job before any upload,
        naming every missing or unreadable source; ``SKIP`` leaves them out
        and reports them in ``ZipResult.skipped``.
    :param head_concurrency: The maximum number of HEAD requests in flight
        while planning.
    :param read_concurrency: The maximum number of ranged GETs in flight.
        The read-ahead budget, not this, is usually the limit.
    :param upload_concurrency: The maximum number of UploadPart requests in
        flight; each holds one part buffer from the budget.
    :param range_size: The size of each ranged GET; a smaller object is one
        range. A broken range is resumed from the byte where it broke.
    :param min_part_size: The smallest multipart part (S3's floor is 5 MiB).
        Parts grow with the archive so it fits in 9,000 parts; an archive
        smaller than one part buffer is a single PutObject.
    :param read_attempts: The maximum number of tries for one range before
        the job fails with the transient ``ReadFailedError``.
    :param progress_interval_s: The least time between two progress
        callbacks (the last one, at the end, always fires).
    :param content_type: The archive object's Content-Type.

    Why each default: docs/DESIGN.md, "Knobs and why they have their defaults".
    """

    budget_bytes: int = 64 * MiB
    compression: Compression = Compression.STORED
    missing: MissingPolicy = MissingPolicy.FAIL
    head_concurrency: int = 64
    read_concurrency: int = 32
    upload_concurrency: int = 4
    # 4 MiB: a range holds budget only for its own transfer, so smaller ranges
    # leave more of the budget to parts in flight (docs/performance.md).
    range_size: int = 4 * MiB
    min_part_size: int = 8 * MiB
    read_attempts: int = 5
    progress_interval_s: float = 0.25
    content_type: str = "application/zip"
    # Keep a STORED multipart archive resumable (docs/resume.md): checkpoints
    # in S3 next to it, at most every checkpoint_interval_s; a stop that is
    # not a ZipJobError keeps the upload for the next attempt.
    resume: bool = False
    checkpoint_interval_s: float = 5.0
    # Fan-out (docs/resume.md, "Fan-out"): a STORED multipart archive is
    # built by up to ``workers`` concurrent range builds, one per
    # ``worker_min_bytes`` of archive (8 GiB: about a tenth of what one
    # Lambda moves in an attempt, so a second worker pays for itself), each
    # with its share of ``budget_bytes``. 1 = never.
    workers: int = 1
    worker_min_bytes: int = 8 * 1024 * MiB


@dataclass(frozen=True, slots=True)
class ZipResult:
    """What a finished job produced; ``peak_budget_bytes`` is the engine's own accounting."""

    destination: Destination
    files: int
    source_bytes: int
    archive_bytes: int
    parts: int
    part_size: int
    seconds: float
    etag: str
    skipped: tuple[SourceProblem, ...] = ()
    peak_budget_bytes: int = 0
    resumed_from: int = 0  # archive bytes a checkpoint let this attempt skip
    workers: int = 1  # range builds that made it (docs/resume.md, "Fan-out")

    @property
    def mb_per_s(self) -> float:
        return self.archive_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


class ZipJobError(Exception):
    """Base of every error the engine raises on purpose; ``str()`` is user-facing.

    Permanent unless a subclass says otherwise: the runner fails the job at
    once instead of retrying it, because the same inputs would fail the same
    way. A subclass for a transient failure sets ``permanent = False``.
    """

    code = "ZipJobError"
    permanent: ClassVar[bool] = True


def _describe(reason: str) -> str:
    """A reason as a person reads it; S3's 403 on HEAD may mean either (planner)."""
    if reason == "MissingOrNotReadable":
        return "missing or not readable: S3 answered 403"
    return reason


class MissingSourcesError(ZipJobError):
    """Raised before any upload starts, naming every source we could not read."""

    code = "MissingSources"

    def __init__(self, problems: list[SourceProblem] | tuple[SourceProblem, ...]) -> None:
        self.problems = tuple(problems)
        names = ", ".join(
            f"s3://{p.bucket}/{p.key} ({_describe(p.reason)})" for p in self.problems[:20]
        )
        more = f" and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"{len(self.problems)} source(s) missing or unreadable: {names}{more}")


class SourceChangedError(ZipJobError):
    """A source is not the object the plan saw: overwritten, shrunk or deleted mid-job.

    Raised when S3 refuses If-Match, and also when a GET answer's own ETag or
    Content-Range differs from the plan, because not every S3-compatible
    server honours If-Match (docs/s3-compatibility.md). ``why`` says which.
    """

    code = "SourceChanged"

    def __init__(self, bucket: str, key: str, why: str = "") -> None:
        self.bucket, self.key, self.why = bucket, key, why
        detail = f" ({why})" if why else ""
        super().__init__(f"s3://{bucket}/{key} changed while the archive was being built{detail}")


class RangeNotHonouredError(ZipJobError):
    """The server answered a ranged GET with other bytes than asked (no Content-Range).

    Permanent: a server that ignores ``Range`` does so every time, and the
    engine cannot stitch an archive from whole-object answers.
    """

    code = "RangeNotHonoured"


class BudgetTooSmallError(ZipJobError):
    """The byte budget cannot hold even one upload part plus one read range."""

    code = "BudgetTooSmall"


class ArchiveTooLargeError(ZipJobError):
    """The archive would be larger than S3 can store in one object (5 TiB)."""

    code = "ArchiveTooLarge"


class TooManySourcesError(ZipJobError):
    """A prefix holds more objects than a job may archive; found while listing.

    Listing stops at the first object past the limit, so a prefix of a huge
    bucket (or ``""``) costs one page per 1,000 allowed keys, never the bucket.
    """

    code = "TooManySources"

    def __init__(self, bucket: str, prefix: str, limit: int) -> None:
        self.bucket, self.prefix, self.limit = bucket, prefix, limit
        super().__init__(
            f"s3://{bucket}/{prefix} holds more than {limit} objects, the limit per job "
            f"(ZIPJOBS_MAX_KEYS={limit}); zip a narrower prefix or list the keys"
        )


class EmptyArchiveError(ZipJobError):
    """No sources (left) to archive."""

    code = "EmptyArchive"


class LengthMismatchError(ZipJobError):
    """The bytes produced differ from the plan's exact length (one entry or the archive).

    The archive is never completed. Permanent: the plan came from HEAD, so a
    second attempt with the same plan would stream the same wrong length.
    """

    code = "LengthMismatch"


class ReadFailedError(ZipJobError, ConnectionError):
    """A range could not be read after every retry.

    Transient (the job is retried later), and a ``ConnectionError`` like
    aiohttp's client errors, so code that handles network failures in general
    handles this one too.
    """

    code = "ReadFailed"
    permanent: ClassVar[bool] = False
