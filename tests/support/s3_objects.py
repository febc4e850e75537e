"""Small S3 chores for tests: buckets, test content, seeding and fetching objects, cleanup.

All of it goes over HTTP through an aioboto3 client, the same way the service
talks to S3; nothing here patches botocore.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from service.units import MiB


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


async def open_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """Incomplete multipart uploads in ``bucket``: what a failed job must never leave."""
    resp = await s3.list_multipart_uploads(Bucket=bucket)
    uploads: list[dict[str, Any]] = resp.get("Uploads", [])
    return uploads


async def object_exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        await s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return False
        raise
    return True


async def download(s3: Any, bucket: str, key: str, path: Path, chunk_size: int = 4 * MiB) -> int:
    """Stream an object to ``path``; returns its size.

    Reads ``Body`` itself (aiobotocore's StreamingBody, whose ``read()`` takes a
    size), not the object ``async with Body`` returns (aiohttp's response).
    """
    resp = await s3.get_object(Bucket=bucket, Key=key)
    stream = resp["Body"]
    written = 0
    try:
        with path.open("wb") as out:
            while chunk := await stream.read(chunk_size):
                out.write(chunk)
                written += len(chunk)
    finally:
        stream.close()
    return written


def body(size: int, seed: int) -> bytes:
    """Deterministic incompressible test content."""
    return random.Random(seed).randbytes(size)
