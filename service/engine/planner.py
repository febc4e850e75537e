"""Plan: learn every source's size, ETag and date before one byte is uploaded.

The plan is what lets the rest be exact: the archive's length (hence the part
size and exact progress), the ETag each ranged GET pins with If-Match, and the
complete list of missing keys, so a job with a bad key fails at once and
names them all instead of hanging or failing halfway (s3-zip #47, #67).

Metadata comes from ListObjectsV2 where many requested keys share a
"directory" (one call describes 1,000 keys) and from HEAD for the rest.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from .arcnames import unique_names
from .models import (
    MissingPolicy,
    MissingSourcesError,
    Plan,
    PlannedEntry,
    SourceObject,
    SourceProblem,
    TooManySourcesError,
)
from .taskgroups import first_error

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


# A directory with at least this many requested keys is listed instead of
# HEADed key by key.
LIST_MIN_KEYS = 20
# Stop listing a directory that holds far more than was asked for.
LIST_MAX_OVERREAD = 4
# ListObjectsV2 returns at most 1,000 keys per page.
LIST_PAGE_KEYS = 1000


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    size: int
    etag: str
    last_modified: dt.datetime


# S3 answers a HEAD of a missing key with 403, not 404, when the caller may
# not s3:ListBucket the bucket, so a 403 cannot tell "missing" from "not
# readable" and is reported as both (docs/aws.md, rule S1).
MISSING_OR_NOT_READABLE = "MissingOrNotReadable"


def _error_reason(err: ClientError) -> str | None:
    """Map a HEAD/List error to a user-facing reason, or None if it is not about the key."""
    code = str(err.response.get("Error", {}).get("Code", ""))
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("404", "NoSuchKey", "NotFound") or status == 404:
        return "NoSuchKey"
    if code in ("403", "AccessDenied", "Forbidden") or status == 403:
        return MISSING_OR_NOT_READABLE
    if code in ("NoSuchBucket",):
        return "NoSuchBucket"
    return None


async def _head(s3: S3Client, bucket: str, key: str) -> ObjectMeta | str:
    """Metadata of one object, or the reason it cannot be read."""
    try:
        resp = await s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        reason = _error_reason(err)
        if reason is None:
            raise
        return reason
    return ObjectMeta(int(resp["ContentLength"]), resp["ETag"], resp["LastModified"])


async def _list_directory(
    s3: S3Client, bucket: str, directory: str, wanted: set[str]
) -> dict[str, ObjectMeta]:
    """List one directory (no recursion), stopping early if it is much larger than wanted.

    Listing is an optimisation only: any error falls back to HEAD by
    returning what was found so far.
    """
    found: dict[str, ObjectMeta] = {}
    seen = 0
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": directory, "Delimiter": "/"}
    try:
        while True:
            resp = await s3.list_objects_v2(**kwargs)
            for obj in resp.get("Contents", []):
                seen += 1
                if obj["Key"] in wanted:
                    found[obj["Key"]] = ObjectMeta(
                        int(obj["Size"]), obj["ETag"], obj["LastModified"]
                    )
            if len(found) == len(wanted) or not resp.get("IsTruncated"):
                return found
            if seen > LIST_MAX_OVERREAD * max(len(wanted), 1000):
                return found
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]
    except ClientError:
        return found


def _directories(sources: Sequence[SourceObject]) -> dict[tuple[str, str], set[str]]:
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for src in sources:
        directory = src.key.rpartition("/")[0]
        groups[(src.bucket, directory + "/" if directory else "")].add(src.key)
    return groups


async def fetch_metadata(
    s3: S3Client, sources: Sequence[SourceObject], concurrency: int
) -> dict[tuple[str, str], ObjectMeta | str]:
    """Metadata (or a problem reason) for every distinct (bucket, key)."""
    sem = asyncio.Semaphore(concurrency)
    meta: dict[tuple[str, str], ObjectMeta | str] = {}

    async def list_one(bucket: str, directory: str, keys: set[str]) -> None:
        async with sem:
            for key, m in (await _list_directory(s3, bucket, directory, keys)).items():
                meta[(bucket, key)] = m

    async def head_one(bucket: str, key: str) -> None:
        async with sem:
            meta[(bucket, key)] = await _head(s3, bucket, key)

    try:
        async with asyncio.TaskGroup() as tg:
            for (bucket, directory), keys in _directories(sources).items():
                if len(keys) >= LIST_MIN_KEYS:
                    tg.create_task(list_one(bucket, directory, keys))
        wanted = {(s.bucket, s.key) for s in sources}
        async with asyncio.TaskGroup() as tg:
            for bucket, key in wanted - meta.keys():
                tg.create_task(head_one(bucket, key))
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return meta


async def make_plan(
    s3: S3Client,
    sources: Sequence[SourceObject],
    *,
    missing: MissingPolicy = MissingPolicy.FAIL,
    concurrency: int = 64,
) -> Plan:
    """Look every source up; fail naming all problems, or skip them, per ``missing``."""
    meta = await fetch_metadata(s3, sources, concurrency)
    problems: list[SourceProblem] = []
    found: list[tuple[SourceObject, ObjectMeta]] = []
    for src in sources:
        m = meta[(src.bucket, src.key)]
        if isinstance(m, str):
            problems.append(SourceProblem(src.bucket, src.key, m))
        else:
            found.append((src, m))
    if problems and missing is MissingPolicy.FAIL:
        raise MissingSourcesError(problems)
    names = unique_names(src.arcname or src.key for src, _ in found)
    entries = tuple(
        PlannedEntry(src, name, m.size, m.etag, m.last_modified)
        for (src, m), name in zip(found, names, strict=True)
    )
    return Plan(entries=entries, skipped=tuple(problems))


async def list_prefix(
    s3: S3Client, bucket: str, prefix: str, *, limit: int | None = None
) -> list[SourceObject]:
    """Every object under ``prefix`` in key order, folder markers (``a/``) excluded.

    With ``limit``, raise ``TooManySourcesError`` as soon as one more object
    is seen: pages are asked for no larger than what is still allowed, so a
    prefix over a huge bucket is never listed (or held) past the limit.
    """
    out: list[SourceObject] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        if limit is not None:
            kwargs["MaxKeys"] = max(1, min(LIST_PAGE_KEYS, limit + 1 - len(out)))
        page = await s3.list_objects_v2(**kwargs)
        out.extend(
            SourceObject(bucket, obj["Key"])
            for obj in page.get("Contents", [])
            if not obj["Key"].endswith("/")
        )
        if limit is not None and len(out) > limit:
            raise TooManySourcesError(bucket, prefix, limit)
        if not page.get("IsTruncated"):
            return out
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
