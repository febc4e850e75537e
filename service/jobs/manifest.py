"""Keys too many for one DynamoDB item live in S3, referenced from the job.

DynamoDB items are at most 400 KB including attribute names; 100,000 keys of
60 bytes are 6 MB. Below the inline limit the keys stay in the item (one read
for the worker); above it they go to ``{manifest_prefix}{jobId}.json``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .models import Manifest

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


# Leave room under the 400 KB item limit for the rest of the record and the
# per-element overhead DynamoDB counts for list items.
INLINE_KEYS_LIMIT = 256 * 1024


def keys_fit_inline(keys: tuple[str, ...]) -> bool:
    return sum(len(k.encode("utf-8")) + 3 for k in keys) <= INLINE_KEYS_LIMIT


async def put_manifest(
    s3: S3Client, bucket: str, prefix: str, job_id: str, keys: tuple[str, ...]
) -> Manifest:
    key = f"{prefix}{job_id}.json"
    body = json.dumps({"version": 1, "jobId": job_id, "keys": list(keys)}).encode()
    await s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return Manifest(bucket=bucket, key=key, count=len(keys))


async def read_manifest(s3: S3Client, manifest: Manifest) -> tuple[str, ...]:
    resp = await s3.get_object(Bucket=manifest.bucket, Key=manifest.key)
    async with resp["Body"] as stream:
        doc = json.loads(await stream.read())
    keys = tuple(doc["keys"])
    if len(keys) != manifest.count:
        raise ValueError(
            f"manifest s3://{manifest.bucket}/{manifest.key} has {len(keys)} keys, "
            f"the job expects {manifest.count}"
        )
    return keys


async def delete_manifest(s3: S3Client, manifest: Manifest) -> None:
    await s3.delete_object(Bucket=manifest.bucket, Key=manifest.key)
