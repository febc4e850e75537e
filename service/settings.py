"""The service's configuration, read once from environment variables.

Environment variables only, because the same names are set by Terraform for
the Lambda functions, by a container's task definition and by ``zipjobs dev``
for the embedded stack. Every problem is collected and reported at once, so
an operator fixes a bad deployment in one round instead of one per variable.

Variables (required ones first):
    ZIPJOBS_TABLE                DynamoDB table (hash key ``jobId`` S, TTL attribute ``ttl``)
    ZIPJOBS_QUEUE_URL            SQS queue URL (give it a redrive policy and a DLQ)
    ZIPJOBS_SRC_BUCKETS          allowed source buckets, comma separated; first = default
    ZIPJOBS_DST_BUCKET           where archives go
    ZIPJOBS_SRC_PREFIXES         allowed key prefixes ending in '/', comma separated (empty = any)
    ZIPJOBS_DST_PREFIX           archive key prefix (archives/); key = PREFIX{jobId}/{name}
    ZIPJOBS_PRESIGN_TTL_SECONDS  download URL lifetime (3600; at most 604800)
    ZIPJOBS_JOB_TTL_DAYS         job records expire after (7)
    ZIPJOBS_MAX_KEYS             keys per job (100000)
    ZIPJOBS_MAX_BODY_BYTES       request body limit (5 MiB)
    ZIPJOBS_API_DEADLINE_SECONDS an API request's AWS calls get this long, then 503 (10)
    ZIPJOBS_BUDGET_MB            worker memory budget shared by its jobs (128)
    ZIPJOBS_WORKER_CONCURRENCY   jobs at a time per worker (2; each gets BUDGET/CONCURRENCY)
    ZIPJOBS_LEASE_SECONDS        job lease; a dead worker's job is taken over after it (30)
    ZIPJOBS_SWEEP_INTERVAL_SECONDS  how often a worker sweeps for stuck jobs (60; 0 = never)
    ZIPJOBS_RESEND_AFTER_SECONDS    a job untouched this long past its due time is re-sent (60)
    ZIPJOBS_MAX_RESENDS             re-sends of one job before it is FAILED (5)
    ZIPJOBS_DLQ_URL              dead-letter queue (default: from the queue's redrive policy)
    ZIPJOBS_MANIFEST_BUCKET      bucket for key manifests of big jobs (default: DST bucket)
    ZIPJOBS_MANIFEST_PREFIX      their key prefix (manifests/)
    ZIPJOBS_API_TOKEN            if set, the API requires ``Authorization: Bearer <token>``
    ZIPJOBS_API_TOKEN_SECRET_ARN or read that token from a Secrets Manager secret / SSM
                                 SecureString parameter (ARN) at start (service/api_token.py)
    ZIPJOBS_SIGNING_ROLE_ARN     sign download URLs with this role's session (known expiry)
    ZIPJOBS_SIGNING_SESSION_SECONDS  its session length (3600; 900-43200, 1 h from a Lambda)
    AWS_REGION                   region (us-east-1)
    AWS_ENDPOINT_URL             local emulator only
    AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL_DYNAMODB
                                 one service elsewhere (an S3-compatible store)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .aws import AwsSettings
from .units import MiB

# The engine needs one 8 MiB upload part plus one 8 MiB read range per job.
MIN_JOB_BUDGET_MB = 16
# The most range messages one job is split into: each range's progress and
# done-mark live in the job record, so this bounds its size (jobs/bounds.py).
MAX_FANOUT_WORKERS = 32
# Services whose AWS_ENDPOINT_URL_<SERVICE> is honoured (the SDKs' convention).
SERVICE_ENDPOINT_SERVICES = ("s3", "sqs", "dynamodb")

_T = TypeVar("_T")

# S3 bucket names: 3-63 chars, lowercase letters, digits, dots, hyphens.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class SettingsError(ValueError):
    """Raised with every configuration problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the API, the worker and the Lambda handlers need to know."""

    table: str
    queue_url: str
    src_buckets: tuple[str, ...]
    dst_bucket: str
    src_prefixes: tuple[str, ...] = ()
    dst_prefix: str = "archives/"
    presign_ttl_seconds: int = 3600
    job_ttl_days: int = 7
    max_keys: int = 100_000
    max_body_bytes: int = 5 * MiB
    api_deadline_seconds: int = 10
    budget_mb: int = 128
    worker_concurrency: int = 2
    lease_seconds: int = 30
    # Job-level resume of STORED archives (docs/resume.md). On by default;
    # ZIPJOBS_RESUME_JOBS=0 makes every attempt start over (the engine and
    # `zipjobs zip` resume regardless).
    resume_jobs: bool = True
    # How often a resumable job saves its checkpoint (ZipOptions.checkpoint_interval_s):
    # what a SIGKILL or a frozen Lambda can cost at most; 0 = after every part.
    checkpoint_seconds: int = 5
    # Job-level fan-out (docs/resume.md, "Job-level fan-out"): a STORED job is
    # split into one queue message per range once its archive passes
    # fanout_min_mb per worker, at most fanout_max_workers ranges (1 = off).
    fanout_min_mb: int = 8192
    fanout_max_workers: int = 8
    # No range larger than this, so one range fits one ~880 s Lambda attempt
    # even at 50 MB/s: it may raise the count past fanout_max_workers, up to
    # MAX_FANOUT_WORKERS (docs/resume.md, "How many ranges").
    fanout_range_max_mb: int = 32768
    # The sweeper (docs/lifecycle.md): a lost send is re-sent within
    # resend_after + sweep_interval seconds (2 minutes by default).
    sweep_interval_seconds: int = 60
    resend_after_seconds: int = 60
    max_resends: int = 5
    dlq_url: str | None = None
    manifest_bucket: str = ""
    manifest_prefix: str = "manifests/"
    api_token: str | None = field(default=None, repr=False)
    api_token_secret_arn: str | None = None
    signing_role_arn: str | None = None
    signing_session_seconds: int = 3600
    region: str = "us-east-1"
    endpoint_url: str | None = None
    service_endpoints: tuple[tuple[str, str], ...] = ()
    # Local stacks pass fake credentials explicitly; real deployments leave
    # these None and use the default credential chain (role, profile...).
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)

    @property
    def default_bucket(self) -> str:
        return self.src_buckets[0]

    @property
    def manifest_bucket_or_dst(self) -> str:
        return self.manifest_bucket or self.dst_bucket

    @property
    def job_budget_bytes(self) -> int:
        """Each concurrent job's share, so all of them fit in the process budget."""
        return self.budget_mb * MiB // self.worker_concurrency

    @property
    def aws(self) -> AwsSettings:
        return AwsSettings(
            region=self.region,
            endpoint_url=self.endpoint_url,
            service_endpoints=self.service_endpoints,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build from ``env`` (default os.environ); SettingsError lists every problem."""
        return _Reader(os.environ if env is None else env).settings()


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


class _Reader:
    """Collects problems while reading, instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str:
        value = self.env.get(name, "").strip()
        if value:
            return value
        if default is None:
            self.problems.append(f"{name} is required")
            return ""
        return default

    def number(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name} must be an integer, got {raw!r}")
            return default
        if not low <= value <= high:
            self.problems.append(f"{name} must be between {low} and {high}, got {value}")
        return value

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)

    def bucket(self, name: str, value: str) -> None:
        self.check(not value or bool(_BUCKET_RE.match(value)), f"{name}: bad bucket name {value!r}")

    def optional(self, name: str, convert: Callable[[str], _T]) -> _T | None:
        raw = self.env.get(name, "").strip()
        return convert(raw) if raw else None

    def token(self, name: str) -> str | None:
        """A secret that is either unset or usable: a blank one would mean "no auth" silently."""
        raw = self.env.get(name)
        if raw is None or raw == "":
            return None
        self.check(
            raw.strip() != "",
            f"{name} is set but blank; set a real token, or unset it to run without one",
        )
        return raw.strip() or None

    def settings(self) -> Settings:
        raw_buckets = self.text("ZIPJOBS_SRC_BUCKETS")
        src_buckets = _split(raw_buckets)
        self.check(
            not raw_buckets or bool(src_buckets),
            "ZIPJOBS_SRC_BUCKETS must name at least one bucket",
        )
        for b in src_buckets:
            self.bucket("ZIPJOBS_SRC_BUCKETS", b)
        dst_bucket = self.text("ZIPJOBS_DST_BUCKET")
        self.bucket("ZIPJOBS_DST_BUCKET", dst_bucket)
        manifest_bucket = self.text("ZIPJOBS_MANIFEST_BUCKET", "")
        self.bucket("ZIPJOBS_MANIFEST_BUCKET", manifest_bucket)
        dst_prefix = self.text("ZIPJOBS_DST_PREFIX", "archives/")
        manifest_prefix = self.text("ZIPJOBS_MANIFEST_PREFIX", "manifests/")
        src_prefixes = _split(self.env.get("ZIPJOBS_SRC_PREFIXES", ""))
        # A prefix is a folder: "docs" would also admit "docs-private/..." (and
        # IAM's "docs*" the same), so every prefix must end with "/".
        for name, prefix in (
            *(("ZIPJOBS_SRC_PREFIXES", p) for p in src_prefixes),
            ("ZIPJOBS_DST_PREFIX", dst_prefix),
            ("ZIPJOBS_MANIFEST_PREFIX", manifest_prefix),
        ):
            self.check(
                prefix.endswith("/") and not prefix.startswith("/"),
                f"{name} must end with '/' and not start with one, got {prefix!r}",
            )
        queue_url = self.text("ZIPJOBS_QUEUE_URL")
        self.check(
            not queue_url or queue_url.startswith(("https://", "http://")),
            f"ZIPJOBS_QUEUE_URL must be a URL, got {queue_url!r}",
        )
        budget_mb = self.number("ZIPJOBS_BUDGET_MB", 128, MIN_JOB_BUDGET_MB, 1024 * 1024)
        concurrency = self.number("ZIPJOBS_WORKER_CONCURRENCY", 2, 1, 64)
        self.check(
            budget_mb // max(concurrency, 1) >= MIN_JOB_BUDGET_MB,
            f"ZIPJOBS_BUDGET_MB ({budget_mb}) must give each of the "
            f"ZIPJOBS_WORKER_CONCURRENCY ({concurrency}) jobs at least {MIN_JOB_BUDGET_MB} MiB",
        )
        settings = Settings(
            table=self.text("ZIPJOBS_TABLE"),
            queue_url=queue_url,
            src_buckets=src_buckets,
            src_prefixes=src_prefixes,
            dst_bucket=dst_bucket,
            dst_prefix=dst_prefix,
            # SigV4 presigned URLs are valid for at most 7 days.
            presign_ttl_seconds=self.number("ZIPJOBS_PRESIGN_TTL_SECONDS", 3600, 1, 604_800),
            job_ttl_days=self.number("ZIPJOBS_JOB_TTL_DAYS", 7, 1, 3650),
            max_keys=self.number("ZIPJOBS_MAX_KEYS", 100_000, 1, 10_000_000),
            max_body_bytes=self.number("ZIPJOBS_MAX_BODY_BYTES", 5 * MiB, 1024, 1024 * MiB),
            # API Gateway ends an integration at 29-30 s: answer well before.
            api_deadline_seconds=self.number("ZIPJOBS_API_DEADLINE_SECONDS", 10, 1, 25),
            budget_mb=budget_mb,
            worker_concurrency=concurrency,
            lease_seconds=self.number("ZIPJOBS_LEASE_SECONDS", 30, 3, 3600),
            resume_jobs=bool(self.number("ZIPJOBS_RESUME_JOBS", 1, 0, 1)),
            checkpoint_seconds=self.number("ZIPJOBS_CHECKPOINT_SECONDS", 5, 0, 3600),
            fanout_min_mb=self.number("ZIPJOBS_FANOUT_MIN_MB", 8192, 1, 1024 * 1024),
            fanout_max_workers=self.number("ZIPJOBS_FANOUT_MAX_WORKERS", 8, 1, MAX_FANOUT_WORKERS),
            fanout_range_max_mb=self.number(
                "ZIPJOBS_FANOUT_RANGE_MAX_MB", 32768, 1, 5 * 1024 * 1024
            ),
            sweep_interval_seconds=self.number("ZIPJOBS_SWEEP_INTERVAL_SECONDS", 60, 0, 86_400),
            resend_after_seconds=self.number("ZIPJOBS_RESEND_AFTER_SECONDS", 60, 1, 86_400),
            max_resends=self.number("ZIPJOBS_MAX_RESENDS", 5, 0, 100),
            dlq_url=self.optional("ZIPJOBS_DLQ_URL", str),
            manifest_bucket=manifest_bucket,
            manifest_prefix=manifest_prefix,
            api_token=self.token("ZIPJOBS_API_TOKEN"),
            api_token_secret_arn=self.optional("ZIPJOBS_API_TOKEN_SECRET_ARN", str),
            signing_role_arn=self.optional("ZIPJOBS_SIGNING_ROLE_ARN", str),
            # STS: 900 s to 12 h, and at most 1 h when assumed from a Lambda's role.
            signing_session_seconds=self.number(
                "ZIPJOBS_SIGNING_SESSION_SECONDS", 3600, 900, 43_200
            ),
            region=self.text("AWS_REGION", self.env.get("AWS_DEFAULT_REGION", "us-east-1")),
            endpoint_url=self.optional("AWS_ENDPOINT_URL", str),
            service_endpoints=tuple(
                (service, url)
                for service in SERVICE_ENDPOINT_SERVICES
                if (url := self.env.get(f"AWS_ENDPOINT_URL_{service.upper()}", "").strip())
            ),
        )
        if self.problems:
            raise SettingsError(self.problems)
        return settings
