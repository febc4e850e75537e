"""Download URLs signed with a dedicated role's session (ZIPJOBS_SIGNING_ROLE_ARN).

The session's expiry is known (STS returns it), so expiresAt is exact even in
Lambda, where the function's own credentials come without one. Signatures
are checked with our own SigV4 code (moto accepts any presigned URL).
https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest

from service.jobs import JobService
from service.jobs.models import JobRecord, JobRequest, JobStatus
from service.jobs.signing_role import needs_renewal
from service.local.stack import Provisioned, StackNames, provision
from tests.support import sigv4
from tests.support.aws_backend import AwsEndpoint

pytestmark = pytest.mark.integration

ROLE = "arn:aws:iam::123456789012:role/zipjobs-url-signer"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    return await provision(aws_endpoint.settings(), StackNames(f"sign-{uuid.uuid4().hex[:8]}"))


@pytest.fixture(scope="module")
async def svc(stack: Provisioned) -> AsyncIterator[JobService]:
    settings = stack.settings(
        ZIPJOBS_SIGNING_ROLE_ARN=ROLE,
        ZIPJOBS_SIGNING_SESSION_SECONDS="900",
        ZIPJOBS_PRESIGN_TTL_SECONDS="600",
    )
    async with JobService.open(settings) as service:
        yield service


def _ready(svc: JobService) -> JobRecord:
    now = dt.datetime.now(dt.UTC)
    return JobRecord(
        job_id="ab" * 16,
        status=JobStatus.READY,
        request=JobRequest(bucket=svc.settings.default_bucket, keys=("a.pdf",), prefix=None),
        dst_bucket=svc.settings.dst_bucket,
        dst_key="archives/x/a.zip",
        created_at=now,
        updated_at=now,
        expires_at=int(now.timestamp()) + 3600,
    )


def test_renewal_keeps_at_least_half_the_ttl() -> None:
    assert needs_renewal(None, T0, 600)
    from service.jobs.signing_role import Session

    fresh = Session(s3=None, expires_at=T0 + dt.timedelta(seconds=900))
    assert not needs_renewal(fresh, T0, 600)
    assert not needs_renewal(fresh, T0 + dt.timedelta(seconds=600), 600)  # 300 left = TTL / 2
    assert needs_renewal(fresh, T0 + dt.timedelta(seconds=601), 600)


async def test_urls_are_signed_by_the_role_session_and_expire_with_it(svc: JobService) -> None:
    first = await svc.view(_ready(svc))
    signer = svc._signer
    assert signer is not None and signer._session is not None
    session = signer._session
    creds = session.s3._request_signer._credentials
    assert creds.access_key != svc.settings.access_key_id  # not the function's own credentials
    url = first["downloadUrl"]
    assert sigv4.signature_is_valid(url, creds.secret_key)
    claims = sigv4.parse(url)
    assert claims.access_key == creds.access_key
    assert claims.expires_at <= session.expires_at
    stated = dt.datetime.fromisoformat(first["expiresAt"].replace("Z", "+00:00"))
    assert stated <= claims.expires_at <= stated + dt.timedelta(seconds=2)
    assert 598 <= claims.expires_in <= 600  # the 900 s session outlasts the 600 s TTL

    again = await svc.view(_ready(svc))  # within the session: no new AssumeRole
    assert signer._session is session
    assert sigv4.parse(again["downloadUrl"]).access_key == creds.access_key
