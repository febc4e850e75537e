"""Multipart housekeeping for an archive key: abort what a dead attempt left, discard the rest.

The uploader aborts its own upload on every failure it sees; these functions
are for what it cannot see: a process killed mid-upload (its upload lives on,
billed, until someone aborts it) and a job that ended FAILED or CANCELLED
after an archive was written. An archive key belongs to one job, so every
upload under exactly that key is the job's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


async def abort_uploads(s3: S3Client, bucket: str, key: str) -> int:
    """Abort every multipart upload in progress for ``key``; how many there were."""
    aborted = 0
    args = {"Bucket": bucket, "Prefix": key}
    while True:
        resp = await s3.list_multipart_uploads(**args)  # type: ignore[arg-type]
        for upload in resp.get("Uploads", []):
            if upload.get("Key") == key and "UploadId" in upload:
                await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
                aborted += 1
        if not resp.get("IsTruncated"):
            return aborted
        args["KeyMarker"] = resp.get("NextKeyMarker", "")
        args["UploadIdMarker"] = resp.get("NextUploadIdMarker", "")


async def discard_archive(s3: S3Client, bucket: str, key: str) -> int:
    """No upload in progress and no object left at ``key``; the number of uploads aborted.

    DeleteObject of a key that does not exist succeeds, so this is safe to
    call on every path that ends a job without an archive, any number of times.
    """
    aborted = await abort_uploads(s3, bucket, key)
    await s3.delete_object(Bucket=bucket, Key=key)
    return aborted
