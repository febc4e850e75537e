"""One place that builds AWS clients, so every caller gets the same settings.

Settings that matter for correctness live here: SigV4 for presigning (a plain
us-east-1 client may sign with SigV2), path-style addressing for local
endpoints, standard-mode retries (5xx, SlowDown, throttling), a connection
pool large enough for the engine's concurrency, and payload signing only
where TLS does not protect the bytes (see ``signs_payload``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

from aiobotocore.session import AioSession, get_session
from botocore.config import Config

from .s3_ranged_get import disable_fast_get, enable_fast_get
from .sdk_loader import use_startup_loader
from .sdk_overhead import skip_unused_endpoint_params, use_fast_timestamps

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sqs import SQSClient


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """Where AWS is. ``endpoint_url`` set means a local emulator or benchmark endpoint."""

    region: str = field(default_factory=lambda: os.environ.get("AWS_REGION", "us-east-1"))
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    # Per-service endpoints (``AWS_ENDPOINT_URL_DYNAMODB`` and friends, the
    # AWS SDKs' own convention): e.g. S3 on an S3-compatible store and
    # DynamoDB elsewhere. A service named here wins over ``endpoint_url``.
    service_endpoints: tuple[tuple[str, str], ...] = ()
    # S3 clients send the engine's ranged GETs on the fast signed-GET path
    # (service/s3_ranged_get.py) unless ZIPJOBS_FAST_GET=0.
    fast_get: bool = field(default_factory=lambda: os.environ.get("ZIPJOBS_FAST_GET", "1") != "0")

    def endpoint_for(self, service: str) -> str | None:
        return dict(self.service_endpoints).get(service, self.endpoint_url)

    def session(self) -> AioSession:
        """An aiobotocore session with these credentials (or the default chain) and region.

        aiobotocore's, not aioboto3's: clients are all we make, and aioboto3
        would import boto3 and its resource layer into every process for
        them (start-up time; docs/performance.md).
        """
        session = get_session()
        # Before any client loads botocore's data files (docs/performance.md).
        use_startup_loader(session)
        if self.access_key_id or self.secret_access_key or self.session_token:
            if not (self.access_key_id and self.secret_access_key):
                raise ValueError("AWS credentials need an access key id and a secret access key")
            session.set_credentials(self.access_key_id, self.secret_access_key, self.session_token)
        session.set_config_variable("region", self.region)
        return session


def signs_payload(endpoint_url: str | None) -> bool:
    """SHA-256 the request bodies only over plain HTTP.

    Over HTTPS (AWS itself, ``endpoint_url`` None) TLS protects the bytes in
    transit and the engine sends a CRC-32 of every part that S3 checks, so
    SigV4 signs ``UNSIGNED-PAYLOAD``, as botocore itself does for streaming
    uploads that carry a checksum; hashing every part cost about 20% of the
    engine's CPU. Over plain HTTP (a local emulator) the payload hash is the
    only protection a signature gives, so it stays (docs/performance.md).
    """
    return endpoint_url is not None and not endpoint_url.lower().startswith("https://")


@dataclass(frozen=True, slots=True)
class CallLimits:
    """How long one AWS call may wait and how many times botocore tries it.

    Worst case for one call: about ``max_attempts * (connect + read)`` plus
    backoff. See docs/lifecycle.md ("Bounded API answers").
    """

    connect_timeout: float
    read_timeout: float
    max_attempts: int


# Workers and the engine: patient, a job has minutes; a stuck read is still cut.
BACKGROUND = CallLimits(connect_timeout=10, read_timeout=60, max_attempts=5)
# The API path: a client waits for the answer, and API Gateway gives up at
# 29-30 s. One call fails within about 2 x (2 + 4) s; the request deadline
# (ZIPJOBS_API_DEADLINE_SECONDS) bounds the sum of the calls.
INTERACTIVE = CallLimits(connect_timeout=2, read_timeout=4, max_attempts=2)


def client_config(
    max_pool_connections: int = 64,
    *,
    path_style: bool = False,
    limits: CallLimits = BACKGROUND,
    sign_payload: bool = True,
) -> Config:
    """botocore Config shared by every client we create."""
    return Config(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": limits.max_attempts},
        max_pool_connections=max_pool_connections,
        connect_timeout=limits.connect_timeout,
        read_timeout=limits.read_timeout,
        s3={
            "addressing_style": "path" if path_style else "auto",
            "payload_signing_enabled": sign_payload,
        },
        # Let botocore compute checksums only where an API requires them: the
        # uploader passes its own precomputed CRC-32s (taken as the bytes are
        # copied), which also keeps botocore from re-framing bodies as
        # aws-chunked.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


@overload
def aws_client(
    service: Literal["s3"],
    settings: AwsSettings,
    *,
    max_pool_connections: int = 64,
    limits: CallLimits = BACKGROUND,
    session: AioSession | None = None,
) -> AbstractAsyncContextManager[S3Client]: ...
@overload
def aws_client(
    service: Literal["dynamodb"],
    settings: AwsSettings,
    *,
    max_pool_connections: int = 64,
    limits: CallLimits = BACKGROUND,
    session: AioSession | None = None,
) -> AbstractAsyncContextManager[DynamoDBClient]: ...
@overload
def aws_client(
    service: Literal["sqs"],
    settings: AwsSettings,
    *,
    max_pool_connections: int = 64,
    limits: CallLimits = BACKGROUND,
    session: AioSession | None = None,
) -> AbstractAsyncContextManager[SQSClient]: ...
@overload
def aws_client(
    service: Literal["secretsmanager", "ssm", "sts"],
    settings: AwsSettings,
    *,
    max_pool_connections: int = 64,
    limits: CallLimits = BACKGROUND,
    session: AioSession | None = None,
) -> AbstractAsyncContextManager[
    Any
]: ...  # one call each (api_token.py, signing_role.py); no stubs


def aws_client(
    service: str,
    settings: AwsSettings,
    *,
    max_pool_connections: int = 64,
    limits: CallLimits = BACKGROUND,
    session: AioSession | None = None,
) -> AbstractAsyncContextManager[Any]:
    """An entered aiobotocore client for ``service``, typed by the aiobotocore stubs.

    The overloads give each caller ``S3Client``/``DynamoDBClient``/``SQSClient``,
    so a misspelt operation or parameter fails mypy instead of failing in AWS.

    ``session``: one ``settings.session()`` shared by the clients a process
    makes together. botocore keeps its data loader (endpoints.json, the
    partitions, the retry and defaults tables) and the resolved credentials
    per session, so clients of one session load and resolve them once
    (start-up time; docs/performance.md).
    """
    return _client(service, settings, max_pool_connections, limits, session)


@asynccontextmanager
async def _client(
    service: str,
    settings: AwsSettings,
    max_pool_connections: int,
    limits: CallLimits,
    session: AioSession | None,
) -> AsyncIterator[Any]:
    endpoint_url = settings.endpoint_for(service)
    cfg = client_config(
        max_pool_connections,
        path_style=endpoint_url is not None,
        limits=limits,
        sign_payload=signs_payload(endpoint_url),
    )
    session = session or settings.session()
    # Per-request SDK overhead that is ours to cut (docs/performance.md).
    use_fast_timestamps(session)
    async with session.create_client(service, endpoint_url=endpoint_url, config=cfg) as client:  # type: ignore[call-overload]
        if service != "s3":
            yield client
            return
        skip_unused_endpoint_params(client)
        if settings.fast_get:
            await enable_fast_get(client)
        try:
            yield client
        finally:
            disable_fast_get(client)
