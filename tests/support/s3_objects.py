"""Small S3 chores for tests: unique buckets, seeding objects, fetching archives, cleanup.

All of it goes over HTTP through an aioboto3 client, the same way the service
talks to S3; nothing here patches botocore.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any


def unique_bucket_name(prefix: str = "zj-test") -> str:
    """A valid, collision-free bucket name (lowercase, <= 63 chars)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


async def create_bucket(s3: Any, name: str, region: str) -> None:
    """us-east-1 rejects a LocationConstraint; every other region requires one."""
    if region == "us-east-1":
        await s3.create_bucket(Bucket=name)
    else:
        await s3.create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": region}
        )


async def put_objects(
    s3: Any, bucket: str, objects: Mapping[str, bytes], *, concurrency: int = 8
) -> None:
    """PUT every ``key -> body``; a few at a time, so 1,000 small seeds stay quick."""
    gate = asyncio.Semaphore(concurrency)

    async def put(key: str, body: bytes) -> None:
        async with gate:
            await s3.put_object(Bucket=bucket, Key=key, Body=body)

    await asyncio.gather(*(put(k, v) for k, v in objects.items()))


async def get_bytes(s3: Any, bucket: str, key: str) -> bytes:
    """The whole object in memory: only for archives a test knows to be small."""
    resp = await s3.get_object(Bucket=bucket, Key=key)
    async with resp["Body"] as body:
        data: bytes = await body.read()
    return data


async def delete_bucket(s3: Any, bucket: str) -> None:
    """Abort open uploads, delete every object, then the bucket.

    The emulators keep objects in memory for the whole session; a suite that
    builds multi-GiB archives must give that memory back test by test.
    """
    uploads = s3.get_paginator("list_multipart_uploads")
    async for page in uploads.paginate(Bucket=bucket):
        for up in page.get("Uploads", []):
            await s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    objects = s3.get_paginator("list_objects_v2")
    async for page in objects.paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            await s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    await s3.delete_bucket(Bucket=bucket)
