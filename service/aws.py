"""One place that builds AWS clients, so every caller gets the same settings.

Settings that matter for correctness live here: SigV4 for presigning (a plain
us-east-1 client may sign with SigV2), path-style addressing for local
endpoints, standard-mode retries (5xx, SlowDown, throttling) and a connection
pool large enough for the engine's concurrency.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

import aioboto3
from botocore.config import Config

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

    def session(self) -> aioboto3.Session:
        return aioboto3.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            region_name=self.region,
        )


def client_config(max_pool_connections: int = 64, *, path_style: bool = False) -> Config:
    """botocore Config shared by every client we create."""
    return Config(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max_pool_connections,
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path" if path_style else "auto"},
        # Ask for checksums only where an API requires them: the ZIP entries
        # carry CRC-32s already and MD5/CRC of every 8 MiB part costs CPU on
        # the one core the event loop has.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


@overload
def aws_client(
    service: Literal["s3"], settings: AwsSettings, *, max_pool_connections: int = 64
) -> AbstractAsyncContextManager[S3Client]: ...
@overload
def aws_client(
    service: Literal["dynamodb"], settings: AwsSettings, *, max_pool_connections: int = 64
) -> AbstractAsyncContextManager[DynamoDBClient]: ...
@overload
def aws_client(
    service: Literal["sqs"], settings: AwsSettings, *, max_pool_connections: int = 64
) -> AbstractAsyncContextManager[SQSClient]: ...
def aws_client(
    service: str, settings: AwsSettings, *, max_pool_connections: int = 64
) -> AbstractAsyncContextManager[Any]:
    """An entered aioboto3 client for ``service``, typed by the aiobotocore stubs.

    The overloads give each caller ``S3Client``/``DynamoDBClient``/``SQSClient``,
    so a misspelt operation or parameter fails mypy instead of failing in AWS.
    """
    return _client(service, settings, max_pool_connections)


@asynccontextmanager
async def _client(
    service: str, settings: AwsSettings, max_pool_connections: int
) -> AsyncIterator[Any]:
    cfg = client_config(max_pool_connections, path_style=settings.endpoint_url is not None)
    async with settings.session().client(
        service, endpoint_url=settings.endpoint_url, config=cfg
    ) as client:  # type: ignore[call-overload]
        yield client
