"""A job's reach is bounded, and a failed plan says why (issue 8).

* A prefix job stops listing at ZIPJOBS_MAX_KEYS and fails naming the limit,
  instead of archiving (and first listing into memory) the whole prefix.
* When planning fails, the error is the cause (a ClientError saying what S3
  answered), never "unhandled errors in a TaskGroup (1 sub-exception)".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from service.engine import Budget, Destination, SourceObject, TooManySourcesError, build_zip
from service.engine.planner import list_prefix
from service.jobs import JobMessage, JobService, JobStatus, run_job_message
from service.jobs.runner import classify
from service.jobs.validation import parse_job_request
from service.local.stack import Provisioned, StackNames, provision
from tests.support.aws_backend import AwsEndpoint
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.s3_objects import object_exists, open_uploads

pytestmark = pytest.mark.integration

MAX_KEYS = 5


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    return await provision(aws_endpoint.settings(), StackNames(f"bnd-{uuid.uuid4().hex[:8]}"))


@pytest.fixture
async def svc(stack: Provisioned, proxy: FaultProxy) -> AsyncIterator[JobService]:
    """The service with ZIPJOBS_MAX_KEYS=5, its AWS traffic through the fault proxy."""
    settings = stack.settings(ZIPJOBS_MAX_KEYS=str(MAX_KEYS), AWS_ENDPOINT_URL=proxy.url)
    async with JobService.open(settings) as service:
        yield service


async def test_a_prefix_job_stops_listing_at_the_key_limit(
    svc: JobService, proxy: FaultProxy
) -> None:
    bucket = svc.settings.default_bucket
    for i in range(40):
        await svc.s3.put_object(Bucket=bucket, Key=f"many/{i:03}.txt", Body=b"x")
    request = parse_job_request(json.dumps({"prefix": "many/"}).encode(), svc.settings)
    record = await svc._new_record(uuid.uuid4().hex, request)
    await svc.store.create(record)
    outcome = await run_job_message(
        svc, JobMessage(record.job_id, "m-1", 1), owner="t", budget=Budget(64 * 1024 * 1024)
    )
    final = await svc.store.get(record.job_id)
    assert final is not None and final.status is JobStatus.FAILED, (outcome, final)
    assert final.error is not None and final.error.code == "TooManySources"
    assert f"ZIPJOBS_MAX_KEYS={MAX_KEYS}" in final.error.message
    lists = [r for r in proxy.seen("GET", f"/{bucket}") if "list-type=2" in r.query]
    # One page, asked for no more than one object past the limit.
    assert len(lists) == 1 and f"max-keys={MAX_KEYS + 1}" in lists[0].query, lists
    assert not await object_exists(svc.s3, final.dst_bucket, final.dst_key)
    assert await open_uploads(svc.s3, final.dst_bucket) == []


class EndlessBucket:
    """A ListObjectsV2 that never runs out: what ``{"prefix": ""}`` on a huge bucket looks like."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        start = len(self.calls) * 10_000
        n = kwargs.get("MaxKeys", 1000)
        return {
            "Contents": [{"Key": f"k/{start + i}"} for i in range(n)],
            "IsTruncated": True,
            "NextContinuationToken": str(len(self.calls)),
        }


async def test_listing_a_huge_prefix_costs_pages_for_the_limit_only() -> None:
    endless = EndlessBucket()
    with pytest.raises(TooManySourcesError) as info:
        await list_prefix(endless, "b", "", limit=2500)
    assert "2500" in str(info.value)
    assert [c.get("MaxKeys") for c in endless.calls] == [1000, 1000, 501]


@pytest.mark.usefixtures("no_backoff")
async def test_a_failing_plan_names_its_cause_not_the_task_group(
    proxied_s3: Any, proxy: FaultProxy, bucket: str, put_objects: Any
) -> None:
    await put_objects({"a.txt": b"a", "b.txt": b"b"})
    proxy.add(Fault("HEAD", path_contains="/a.txt", status=500, times=1000))
    with pytest.raises(ClientError) as info:
        await build_zip(
            [SourceObject(bucket, "a.txt"), SourceObject(bucket, "b.txt")],
            Destination(bucket, "out.zip"),
            s3=proxied_s3,
        )
    permanent, reason = classify(info.value)
    assert not permanent  # a 500 is transient: the job is retried
    assert "TaskGroup" not in reason.message and "sub-exception" not in reason.message
    assert "500" in reason.message or "InternalError" in reason.message, reason.message
