"""DynamoDB's 400 KB item limit: no write the job store makes may exceed it.

AWS rejects the whole write of an item over 400 KB, so a FAILED or READY
update that grew too large leaves the job unfinished (RUNNING until its
lease lapses, retried, then dead-lettered). moto does not behave like this
(it raises but may keep part of the update), so the rule is checked on what
was written: the item read back, sized per AWS's documented formula (the
chaos layer's sizing, tests/chaos/item_limit.py, which also refuses such an
update whole in front of moto).
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-items
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.engine import Budget, MiB, MissingPolicy
from service.jobs import JobService
from service.jobs.manifest import keys_fit_inline
from service.jobs.messages import JobMessage
from service.jobs.models import JobRequest, JobStatus
from service.jobs.runner import run_job_message
from service.local.stack import Provisioned, StackNames, provision
from tests.chaos.item_limit import ITEM_LIMIT, item_size
from tests.support.aws_backend import AwsEndpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    return await provision(aws_endpoint.settings(), StackNames(f"size-{uuid.uuid4().hex[:8]}"))


@pytest.fixture(scope="module")
async def svc(stack: Provisioned) -> AsyncIterator[JobService]:
    async with JobService.open(stack.settings()) as service:
        yield service


def _long_missing_keys() -> tuple[str, ...]:
    """As many ~1 KB keys (S3's maximum is 1,024 bytes) as still fit inline in the record."""
    keys: list[str] = []
    while True:
        key = f"gone/{len(keys):04d}-" + "x" * 1000
        if not keys_fit_inline((*keys, key)):
            return tuple(keys)
        keys.append(key)


async def _run(svc: JobService, request: JobRequest) -> dict[str, Any]:
    submitted = await svc.submit(request)
    msg = JobMessage(submitted.job_id, f"m-{submitted.job_id}", 1)
    await run_job_message(svc, msg, owner="size-test", budget=Budget(32 * MiB))
    raw = await svc.dynamodb.get_item(
        TableName=svc.settings.table, Key={"jobId": {"S": submitted.job_id}}
    )
    return dict(raw["Item"])


@pytest.mark.parametrize("missing", [MissingPolicy.FAIL, MissingPolicy.SKIP])
async def test_a_job_with_every_long_key_missing_stays_under_400_kb(
    svc: JobService, missing: MissingPolicy
) -> None:
    keys = _long_missing_keys()
    present = "here.pdf"
    await svc.s3.put_object(Bucket=svc.settings.default_bucket, Key=present, Body=b"%PDF-1.4")
    request = JobRequest(
        bucket=svc.settings.default_bucket, keys=(present, *keys), prefix=None, missing=missing
    )
    item = await _run(svc, request)
    size = item_size(item)
    assert size <= ITEM_LIMIT, f"the job's item is {size:,} bytes; AWS would reject it"
    expected = JobStatus.FAILED if missing is MissingPolicy.FAIL else JobStatus.READY
    assert item["status"]["S"] == expected.value
