"""Session-wide test fixtures: one local AWS endpoint, an S3 client, a fresh bucket per test.

The endpoint is LocalStack when a Docker engine answers, else an in-process
moto server; ``ZIPJOBS_TEST_BACKEND`` = auto | moto | localstack (host mode,
no Docker) | localstack-docker (see ``tests/support/aws_backend.py``).
Everything talks real HTTP to it.

Fixtures:
    aws_endpoint   AwsEndpoint (endpoint_url, region, keys, backend); session
    aws_settings   service.aws.AwsSettings for that endpoint; session
    s3             an entered aioboto3 S3 client; session
    bucket         a new, uniquely named bucket, deleted (with its contents) after the test
    put_objects    ``await put_objects({"key": b"body"})``; ``bucket=`` picks another bucket

Tests under ``tests/integration/`` are marked ``integration`` automatically.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import pytest_asyncio
from botocore.retries import standard

from service.aws import AwsSettings, aws_client
from tests.support import archive_check
from tests.support.aws_backend import (
    BACKEND_ENV,
    REAL_AWS_ENV,
    AwsEndpoint,
    BackendUnavailableError,
    aws_endpoint_for,
    choose_backend,
    fake_credentials_env,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.s3_objects import create_bucket, delete_bucket, unique_bucket_name
from tests.support.s3_objects import put_objects as _put_objects

_INTEGRATION_DIR = Path(__file__).parent / "integration"
# X-Amz-Target prefixes of the JSON-protocol services, to route them in the proxy.
TARGET_PREFIXES = {"dynamodb": "DynamoDB_", "sqs": "AmazonSQS."}

# The machines running this suite are shared and small: a slow example is not a
# bug, so Hypothesis' per-example deadline is off (tests never assert speed).
hypothesis.settings.register_profile("zipjobs", deadline=None, print_blob=True)
hypothesis.settings.load_profile("zipjobs")

PutObjects = Callable[..., Awaitable[None]]


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say up front which readers check archives, so a thinner run is visible in the log."""
    found = {r.name: r.locate() for r in archive_check.READERS}
    missing = [n for n, p in found.items() if p is None]
    require = archive_check.REQUIRE_READERS_ENV
    return [
        f"{BACKEND_ENV}={os.environ.get(BACKEND_ENV, 'auto')}; "
        f"{require}={os.environ.get(require, '0')}",
        "zip readers: "
        + ", ".join(n for n, p in found.items() if p)
        + (f" (MISSING: {', '.join(missing)})" if missing else ""),
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _fake_aws_credentials() -> Iterator[None]:
    """No test may ever reach a real AWS account, whatever the developer's shell holds."""
    with pytest.MonkeyPatch.context() as mp:
        for name in REAL_AWS_ENV:
            mp.delenv(name, raising=False)
        for name, value in fake_credentials_env().items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def aws_endpoint(_fake_aws_credentials: None) -> Iterator[AwsEndpoint]:
    """The session's emulated AWS; ``AWS_ENDPOINT_URL`` points at it while it runs."""
    backend = choose_backend()  # raises if localstack was asked for and cannot run
    try:
        starting = aws_endpoint_for(backend)
        endpoint = starting.__enter__()
    except BackendUnavailableError as err:
        if backend == "localstack" and not archive_check.require_readers():
            pytest.skip(f"LocalStack backend unavailable: {err}")
        raise
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in endpoint.env().items():
                mp.setenv(name, value)
            yield endpoint
    finally:
        starting.__exit__(None, None, None)


@pytest.fixture(scope="session")
def aws_settings(aws_endpoint: AwsEndpoint) -> AwsSettings:
    return aws_endpoint.settings()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def s3(aws_settings: AwsSettings) -> AsyncIterator[Any]:
    async with aws_client("s3", aws_settings) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def bucket(s3: Any, aws_endpoint: AwsEndpoint) -> AsyncIterator[str]:
    """A fresh bucket; emptied and deleted afterwards so the emulator's memory is returned."""
    name = unique_bucket_name()
    await create_bucket(s3, name, aws_endpoint.region)
    yield name
    try:
        await delete_bucket(s3, name)
    except Exception as exc:  # cleanup must not mask the test's own result
        warnings.warn(f"could not delete test bucket {name}: {exc!r}", stacklevel=1)


@pytest.fixture
def put_objects(s3: Any, bucket: str) -> PutObjects:
    """Seed objects: ``await put_objects({"a.pdf": b"..."})`` (into ``bucket`` unless told)."""

    async def put(objects: Mapping[str, bytes], *, bucket: str = bucket) -> None:
        await _put_objects(s3, bucket, objects)

    return put


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(aws_endpoint: AwsEndpoint) -> AsyncIterator[FaultProxy]:
    """A fault-injecting proxy in front of the endpoint (tests/support/fault_proxy.py)."""
    # DynamoDB on its own endpoint (host-mode LocalStack) is proxied too, by X-Amz-Target.
    by_target = {TARGET_PREFIXES[service]: url for service, url in aws_endpoint.service_endpoints}
    async with FaultProxy(aws_endpoint.endpoint_url, by_target) as p:
        yield p


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's standard-mode retries without their waits: the same attempts,
    the same error at the end, seconds sooner. For tests whose faults never
    clear (what they check is the outcome after the last retry, never timing);
    the retry count itself is asserted elsewhere (test_engine_failures.py)."""
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


@pytest_asyncio.fixture(loop_scope="session")
async def proxied_s3(proxy: FaultProxy, aws_settings: AwsSettings) -> AsyncIterator[Any]:
    """The engine's client, pointed at the proxy (same settings as the service's)."""
    async with aws_client("s3", dataclasses.replace(aws_settings, endpoint_url=proxy.url)) as c:
        yield c
