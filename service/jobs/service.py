"""The job operations every front end calls: create, view, cancel.

No web framework here. The aiohttp service (service/api.py) and the Lambda
handlers are thin layers over ``JobService``, so validation, idempotency,
the enqueue-or-fail rule and presigning behave the same everywhere.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..api_token import with_api_token
from ..aws import BACKGROUND, CallLimits, aws_client
from ..settings import Settings
from .ending import cancel_job, fail_job
from .manifest import delete_manifest, keys_fit_inline, put_manifest
from .messages import job_message
from .models import FailureReason, JobRecord, JobRequest, JobStatus
from .presign import presign_download
from .problems import ApiError, not_found
from .signing_role import RoleSigner
from .store import IdempotencyKeyReusedError, IdempotencyRaceError, JobStore, digest
from .validation import check_content_type, check_idempotency_key, is_job_id, parse_job_request
from .views import job_view

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sqs import SQSClient


log = logging.getLogger(__name__)

# Used when the queue has no redrive policy: give up after this many receives.
DEFAULT_MAX_RECEIVES = 5


@dataclass(frozen=True, slots=True)
class Submitted:
    """A POST's result: the job and whether this call created it (False = replay)."""

    job_id: str
    status: JobStatus
    new: bool


def destination_key(settings: Settings, job_id: str, name: str) -> str:
    return f"{settings.dst_prefix}{job_id}/{name}"


class JobService:
    """Job operations over entered S3, DynamoDB and SQS clients."""

    def __init__(
        self,
        settings: Settings,
        *,
        s3: S3Client,
        dynamodb: DynamoDBClient,
        sqs: SQSClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.dynamodb = dynamodb
        self.sqs = sqs
        self.store = JobStore(dynamodb, settings.table, clock)
        self._signer = RoleSigner(settings) if settings.signing_role_arn else None
        self._clock = clock
        self._max_receives: int | None = None
        self._dlq_arn: str | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, *, limits: CallLimits = BACKGROUND
    ) -> AsyncIterator[JobService]:
        """Create the clients once per process (Lambda: once per container).

        ``limits``: ``INTERACTIVE`` for a process that only answers the API.
        """
        settings = await with_api_token(settings, limits)
        async with AsyncExitStack() as stack:
            aws = settings.aws
            # One botocore session for the three: data files and credentials once.
            session = aws.session()
            s3 = await stack.enter_async_context(
                aws_client("s3", aws, limits=limits, session=session)
            )
            db = await stack.enter_async_context(
                aws_client("dynamodb", aws, limits=limits, session=session)
            )
            sqs = await stack.enter_async_context(
                aws_client("sqs", aws, limits=limits, session=session)
            )
            yield cls(settings, s3=s3, dynamodb=db, sqs=sqs)

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    # --- create ---------------------------------------------------------------

    async def create_job(
        self,
        body: bytes,
        *,
        content_type: str | None = None,
        idempotency_key: str | None = None,
    ) -> Submitted:
        """Validate a POST body, store the job (PENDING), enqueue it.

        If the enqueue fails the job is marked FAILED and a 503 is raised: a
        PENDING job that no message will ever run must not exist.
        """
        check_content_type(content_type)
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        request = parse_job_request(body, self.settings)
        return await self.submit(request, idempotency_key=idempotency_key)

    async def submit(self, request: JobRequest, *, idempotency_key: str | None = None) -> Submitted:
        job_id = uuid.uuid4().hex
        record = await self._new_record(job_id, request)
        body_hash = digest(json.dumps(request.canonical(), sort_keys=True))
        try:
            created = await self.store.create(record, idempotency_key, body_hash)
        except IdempotencyRaceError as err:
            raise _retry_the_request() from err
        except IdempotencyKeyReusedError as err:
            raise ApiError(409, "idempotency-key-reused", str(err)) from err
        if not created.new:
            if record.manifest is not None:
                await delete_manifest(self.s3, record.manifest)
            return await self._replayed(created.job_id)
        await self._enqueue_or_fail(record)
        return Submitted(job_id, JobStatus.PENDING, new=True)

    async def _new_record(self, job_id: str, request: JobRequest) -> JobRecord:
        now = self.now()
        manifest = None
        keys_count = len(request.keys) if request.keys is not None else 0
        if request.keys is not None and not keys_fit_inline(request.keys):
            manifest = await put_manifest(
                self.s3,
                self.settings.manifest_bucket_or_dst,
                self.settings.manifest_prefix,
                job_id,
                request.keys,
            )
        return JobRecord(
            job_id=job_id,
            status=JobStatus.PENDING,
            request=request,
            dst_bucket=self.settings.dst_bucket,
            dst_key=destination_key(self.settings, job_id, request.name),
            created_at=now,
            updated_at=now,
            expires_at=int(now.timestamp()) + self.settings.job_ttl_days * 86_400,
            manifest=manifest,
            keys_count=keys_count,
        )

    async def _replayed(self, job_id: str) -> Submitted:
        """The job an Idempotency-Key already stands for.

        A replay of a job still PENDING re-sends its message: the first
        request may have died between the write and the send, and a
        duplicate message is harmless (a worker runs a job only once).
        """
        record = await self.store.get(job_id)
        if record is None:
            raise _retry_the_request()
        if record.status is JobStatus.PENDING:
            await self._enqueue_or_fail(record)
        return Submitted(job_id, record.status, new=False)

    async def send(self, job_id: str, k: int | None = None) -> None:
        """Queue one message for the job (also the sweeper's re-send), or for its range ``k``."""
        await self.sqs.send_message(
            QueueUrl=self.settings.queue_url, MessageBody=job_message(job_id, k)
        )

    async def _enqueue_or_fail(self, record: JobRecord) -> None:
        job_id = record.job_id
        try:
            await self.send(job_id)
        except Exception as err:
            log.error("job %s: enqueue failed (%s); marking it FAILED", job_id, type(err).__name__)
            await fail_job(
                self,
                record,
                FailureReason("EnqueueFailed", "the job could not be queued; submit it again"),
            )
            raise ApiError(
                503,
                "enqueue-failed",
                "the job was stored but could not be queued, so it was marked FAILED; retry",
                jobId=job_id,
                headers={"Retry-After": "5"},
            ) from err

    # --- read -----------------------------------------------------------------

    async def get_record(self, job_id: str) -> JobRecord:
        record = await self.store.get(job_id) if is_job_id(job_id) else None
        if record is None:
            raise not_found(job_id)
        return record

    async def view_job(self, job_id: str, *, base_path: str = "") -> dict[str, Any]:
        """Status and progress; a READY job gets a download URL signed right now."""
        record = await self.get_record(job_id)
        return await self.view(record, base_path=base_path)

    async def view(self, record: JobRecord, *, base_path: str = "") -> dict[str, Any]:
        """A READY job's URL lasts the TTL or until the signing credentials expire,
        whichever is first, and ``expiresAt`` says which (jobs/presign.py)."""
        if record.status is not JobStatus.READY:
            return job_view(record, base_path=base_path)
        url, expires = await presign_download(
            self.s3,
            record.dst_bucket,
            record.dst_key,
            record.request.name,
            ttl_seconds=self.settings.presign_ttl_seconds,
            signer=self._signer,
        )
        return job_view(record, base_path=base_path, download_url=url, url_expires_at=expires)

    # --- cancel ---------------------------------------------------------------

    async def cancel_job(self, job_id: str, *, base_path: str = "") -> dict[str, Any]:
        """PENDING, RUNNING or WAITING -> CANCELLED; a running worker notices within seconds.

        The worker's next heartbeat (a conditional write on RUNNING) fails, it
        cancels the build, and the engine aborts the multipart upload.
        """
        if not is_job_id(job_id):
            raise not_found(job_id)
        record = await cancel_job(self, job_id)
        if record is not None:
            return job_view(record, base_path=base_path)
        current = await self.store.get(job_id)
        if current is None:
            raise not_found(job_id)
        raise ApiError(
            409,
            "job-finished",
            f"job {job_id} is {current.status.value} and can no longer be cancelled",
            jobStatus=current.status.value,
        )

    # --- queue facts ----------------------------------------------------------

    async def max_receives(self) -> int:
        """The queue's maxReceiveCount (from its redrive policy), read once."""
        if self._max_receives is None:
            self._max_receives = DEFAULT_MAX_RECEIVES
            try:
                resp = await self.sqs.get_queue_attributes(
                    QueueUrl=self.settings.queue_url, AttributeNames=["RedrivePolicy"]
                )
                policy = resp.get("Attributes", {}).get("RedrivePolicy")
                if policy:
                    doc = json.loads(policy)
                    self._max_receives = int(doc["maxReceiveCount"])
                    self._dlq_arn = doc.get("deadLetterTargetArn")
            except Exception as err:  # a missing permission must not stop the worker
                log.warning("could not read the queue's redrive policy: %s", err)
        return self._max_receives

    async def dead_letter_queue_url(self) -> str | None:
        """ZIPJOBS_DLQ_URL, else the queue named by the job queue's redrive policy."""
        if self.settings.dlq_url:
            return self.settings.dlq_url
        await self.max_receives()
        if not self._dlq_arn:
            return None
        *_, account, name = self._dlq_arn.split(":")
        try:
            resp = await self.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
        except Exception as err:
            log.warning("could not find the dead-letter queue %s: %s", name, err)
            return None
        url: str = resp["QueueUrl"]
        return url


def _retry_the_request() -> ApiError:
    """A replay that raced the idempotency item's expiry: the client just sends it again."""
    return ApiError(409, "idempotency-race", "retry the request")
