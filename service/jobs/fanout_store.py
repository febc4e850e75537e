"""What a fanned-out job keeps in S3 next to its archive: the plan and each range's result.

Why S3 and not the job record: the plan names every source (200,000 keys
are megabytes) and a range result carries 4 bytes per entry, both past
DynamoDB's 400 KB item limit; the record keeps only the bounded part
(``models.FanOut``). Keys, beside the resume checkpoint:

    <archive key>.zipjobs-plan        the plan every range builds from (JSON)
    <archive key>.zipjobs-range-<k>   range k's ``RangeResult`` (``engine.fanout.encode``)
    <archive key>.zipjobs-range-<k>-checkpoint
                                      range k's own checkpoint while it is built
                                      (``engine.range_checkpoint``)

The plan is written once by the job that splits, so no range re-plans (a
HEAD that answered differently would give another layout); its fingerprint
is checked against the record's by every range. docs/resume.md,
"Job-level fan-out".
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

from ..engine import Destination
from ..engine.fanout import RangeResult, decode, encode
from ..engine.models import Plan, PlannedEntry, SourceObject, SourceProblem

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

PLAN_SUFFIX = ".zipjobs-plan"
RANGE_SUFFIX = ".zipjobs-range-"
CHECKPOINT_SUFFIX = "-checkpoint"
FORMAT = 1


def plan_key(key: str) -> str:
    return key + PLAN_SUFFIX


def range_key(key: str, k: int) -> str:
    return f"{key}{RANGE_SUFFIX}{k}"


def range_checkpoint_key(key: str, k: int) -> str:
    return f"{key}{RANGE_SUFFIX}{k}{CHECKPOINT_SUFFIX}"


def encode_plan(plan: Plan, fingerprint: str) -> bytes:
    doc = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "entries": [
            [
                e.source.bucket,
                e.source.key,
                e.source.arcname,
                e.arcname,
                e.size,
                e.etag,
                e.last_modified.isoformat(),
            ]
            for e in plan.entries
        ],
        "skipped": [[p.bucket, p.key, p.reason] for p in plan.skipped],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_plan(data: bytes) -> tuple[Plan, str]:
    """(plan, fingerprint); ValueError for anything that is not a plan this code wrote."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("not a fan-out plan of this format")
    entries = tuple(
        PlannedEntry(
            SourceObject(str(bucket), str(key), source_arcname),
            str(arcname),
            int(size),
            str(etag),
            dt.datetime.fromisoformat(modified),
        )
        for bucket, key, source_arcname, arcname, size, etag, modified in doc["entries"]
    )
    skipped = tuple(SourceProblem(str(b), str(k), str(r)) for b, k, r in doc["skipped"])
    return Plan(entries, skipped), str(doc["fingerprint"])


async def save_plan(s3: S3Client, dest: Destination, plan: Plan, fingerprint: str) -> None:
    await s3.put_object(
        Bucket=dest.bucket,
        Key=plan_key(dest.key),
        Body=encode_plan(plan, fingerprint),
        ContentType="application/json",
    )


async def load_plan(s3: S3Client, dest: Destination) -> tuple[Plan, str]:
    resp = await s3.get_object(Bucket=dest.bucket, Key=plan_key(dest.key))
    return decode_plan(await resp["Body"].read())


async def save_result(s3: S3Client, dest: Destination, k: int, result: RangeResult) -> None:
    await s3.put_object(
        Bucket=dest.bucket,
        Key=range_key(dest.key, k),
        Body=encode(result),
        ContentType="application/octet-stream",
    )


async def load_result(s3: S3Client, dest: Destination, k: int) -> RangeResult:
    resp = await s3.get_object(Bucket=dest.bucket, Key=range_key(dest.key, k))
    return decode(await resp["Body"].read())


async def delete_fanout_objects(s3: S3Client, bucket: str, key: str, workers: int) -> None:
    """The plan, every range result and range checkpoint; DeleteObject of a
    missing key succeeds."""
    await s3.delete_object(Bucket=bucket, Key=plan_key(key))
    for k in range(workers):
        await s3.delete_object(Bucket=bucket, Key=range_key(key, k))
        await s3.delete_object(Bucket=bucket, Key=range_checkpoint_key(key, k))
