"""The yardsticks the engine is measured against.

``seed_zip``: the design this project started from, kept deliberately as it
was: synchronous boto3, one object at a time (``get_object`` +
``iter_chunks``), zipstream-ng (STORED, no sizes given, as the seed did), and
a multipart upload fed from one 8 MiB buffer, one part at a time. It is what
the engine has to beat on many small objects over a slow link, where
sequential round trips dominate.

``stream_zip_boto3``: the idiomatic recipe a Python developer would reach
for today, as stream-zip's documentation shows it: boto3 ``get_object`` per
member, ``Body.iter_chunks()`` as each member's bytes, ``stream_zip`` over
the members, and ``upload_fileobj`` (boto3's managed multipart transfer,
default TransferConfig: 8 MiB parts, 10 threads) of ``to_file_like_obj`` of
the zipped chunks. Members are STORED (``NO_COMPRESSION_32``) like the
engine's, and iter_chunks gets the same 1 MiB favour as the seed.

``plain_copy``: the practical limit: the same bytes downloaded with ranged
GETs and uploaded (multipart parts, or one PutObject per small object) with
the engine's concurrency (32 GETs, 4 uploads in flight) and the engine's byte
budget (64 MiB held at most), but no ZIP at all. The engine cannot beat this;
the target is to come close to it on large objects.

All use the same client settings as the engine (path style, SigV4, payload
signing only over plain HTTP, no SDK-computed checksums) so the difference is
the design, not the SDK configuration. The plain copy also sends each part's
CRC-32 for S3 to check, as the engine does, so both pay for the same
integrity.
"""

from __future__ import annotations

import asyncio
import base64
import time
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from service.units import MiB

SEED_PART = 8 * MiB
SEED_CHUNK = 1 * MiB  # generous: iter_chunks() defaults to 1 KiB reads


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one contender produced: bytes written, requests made, wall time."""

    seconds: float
    bytes_out: int
    objects_out: int


# -- the seed design ---------------------------------------------------------------


def sync_client(endpoint_url: str) -> Any:
    import boto3

    from service.aws import client_config, signs_payload

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=client_config(10, path_style=True, sign_payload=signs_payload(endpoint_url)),
    )


def seed_zip(
    endpoint_url: str,
    bucket: str,
    keys: Sequence[str],
    dest_bucket: str,
    dest_key: str,
    *,
    chunk_size: int = SEED_CHUNK,
) -> Outcome:
    """The seed: sequential GETs -> zipstream-ng -> one 8 MiB part at a time."""
    import zipstream

    s3 = sync_client(endpoint_url)
    started = time.monotonic()

    def body(key: str) -> Iterator[bytes]:
        # The GET happens when zipstream-ng reaches this entry, not up front.
        resp = s3.get_object(Bucket=bucket, Key=key)
        yield from resp["Body"].iter_chunks(chunk_size)

    zs = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED)
    for key in keys:
        zs.add(body(key), key)

    upload_id: str | None = None
    parts: list[dict[str, Any]] = []
    buf = bytearray()
    written = 0

    def send(data: bytes) -> None:
        nonlocal upload_id
        if upload_id is None:
            upload_id = s3.create_multipart_upload(Bucket=dest_bucket, Key=dest_key)["UploadId"]
        number = len(parts) + 1
        resp = s3.upload_part(
            Bucket=dest_bucket, Key=dest_key, UploadId=upload_id, PartNumber=number, Body=data
        )
        parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    try:
        for chunk in zs:
            buf += chunk
            written += len(chunk)
            if len(buf) >= SEED_PART:
                send(bytes(buf[:SEED_PART]))
                del buf[:SEED_PART]
        if upload_id is None:
            s3.put_object(Bucket=dest_bucket, Key=dest_key, Body=bytes(buf))
        else:
            if buf:
                send(bytes(buf))
            s3.complete_multipart_upload(
                Bucket=dest_bucket,
                Key=dest_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
    except BaseException:
        if upload_id is not None:
            s3.abort_multipart_upload(Bucket=dest_bucket, Key=dest_key, UploadId=upload_id)
        raise
    return Outcome(time.monotonic() - started, written, 1)


# -- stream-zip + boto3, as stream-zip's documentation shows it --------------------


def stream_zip_boto3(
    s3: Any, bucket: str, keys: Sequence[str], dest: tuple[str, str], chunk_size: int = SEED_CHUNK
) -> Outcome:
    """stream_zip(members) -> to_file_like_obj -> s3.upload_fileobj to ``dest`` (bucket, key)."""
    import datetime as dt
    from stat import S_IFREG

    from stream_zip import NO_COMPRESSION_32, stream_zip
    from to_file_like_obj import to_file_like_obj

    started = time.monotonic()
    written = 0

    def member_files() -> Iterator[tuple[str, dt.datetime, int, Any, Iterator[bytes]]]:
        modified_at = dt.datetime.now()
        for key in keys:
            obj = s3.get_object(Bucket=bucket, Key=key)
            yield (
                key,
                modified_at,
                S_IFREG | 0o600,
                NO_COMPRESSION_32,
                obj["Body"].iter_chunks(chunk_size),
            )

    def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
        nonlocal written
        for chunk in chunks:
            written += len(chunk)
            yield chunk

    s3.upload_fileobj(to_file_like_obj(counted(stream_zip(member_files()))), *dest)
    return Outcome(time.monotonic() - started, written, 1)


# -- the plain parallel copy ------------------------------------------------------


def _crc(data: bytes | bytearray) -> str:
    """The part's CRC-32 as S3 wants it (zlib releases the GIL for this)."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


class _Window:
    """Bytes held at once, granted strictly in request order (like the engine's budget)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, n: int) -> None:
        n = min(n, self.capacity)
        if not self._waiters and self.used + n <= self.capacity:
            self.used += n
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        await fut

    def release(self, n: int) -> None:
        self.used -= min(n, self.capacity)
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            m, fut = self._waiters.popleft()
            self.used += m
            fut.set_result(None)


@dataclass(slots=True)
class _Copy:
    """One object being copied: its multipart upload (if any) and part ETags."""

    key: str
    size: int
    multipart: bool
    upload_id: asyncio.Future[str] | None = None
    tasks: list[asyncio.Task[tuple[int, str, str]]] | None = None


async def _list_sizes(s3: Any, bucket: str, keys: Sequence[str]) -> dict[str, int]:
    """Sizes by listing each directory once (what the engine does for many keys)."""
    wanted = set(keys)
    sizes: dict[str, int] = {}
    directories = sorted({k.rpartition("/")[0] + "/" if "/" in k else "" for k in keys})
    for directory in directories:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket, Prefix=directory, Delimiter="/"):
            for obj in page.get("Contents", []):
                if obj["Key"] in wanted:
                    sizes[obj["Key"]] = int(obj["Size"])
    missing = wanted - sizes.keys()
    if missing:
        raise RuntimeError(f"{len(missing)} source(s) not found, e.g. {sorted(missing)[:3]}")
    return sizes


async def plain_copy(
    s3: Any,
    bucket: str,
    keys: Sequence[str],
    dest_bucket: str,
    dest_prefix: str,
    *,
    window_bytes: int = 64 * MiB,
    read_concurrency: int = 32,
    upload_concurrency: int = 4,
    part_size: int = 8 * MiB,
) -> Outcome:
    """Copy every object byte for byte, ranges in parallel, under a byte window."""
    started = time.monotonic()
    sizes = await _list_sizes(s3, bucket, keys)
    window = _Window(window_bytes)
    reads = asyncio.Semaphore(read_concurrency)
    uploads = asyncio.Semaphore(upload_concurrency)

    async def fetch(key: str, start: int, end: int) -> bytearray:
        try:
            resp = await s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            buf = bytearray(end - start)
            view = memoryview(buf)
            filled = 0
            body = resp["Body"]
            while filled < len(buf):
                n = await body.readinto(view[filled:])
                if n == 0:
                    raise ConnectionError(f"short read of {key} at {start + filled}")
                filled += n
            body.release()
            return buf
        finally:
            reads.release()

    async def put_whole(key: str, size: int) -> None:
        try:
            if size:
                data = await fetch(key, 0, size)
            else:
                reads.release()
                data = bytearray()
            async with uploads:
                await s3.put_object(
                    Bucket=dest_bucket, Key=dest_prefix + key, Body=data, ChecksumCRC32=_crc(data)
                )
        finally:
            window.release(size)

    async def put_part(c: _Copy, number: int, start: int, end: int) -> tuple[int, str, str]:
        try:
            data = await fetch(c.key, start, end)
            assert c.upload_id is not None
            upload_id = await c.upload_id
            async with uploads:
                resp = await s3.upload_part(
                    Bucket=dest_bucket,
                    Key=dest_prefix + c.key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ChecksumCRC32=(crc := _crc(data)),
                )
            return number, str(resp["ETag"]), crc
        finally:
            window.release(end - start)

    async def create(key: str) -> str:
        resp = await s3.create_multipart_upload(
            Bucket=dest_bucket, Key=dest_prefix + key, ChecksumAlgorithm="CRC32"
        )
        return str(resp["UploadId"])

    async def complete(c: _Copy) -> None:
        assert c.tasks is not None and c.upload_id is not None
        parts = [await t for t in c.tasks]
        await s3.complete_multipart_upload(
            Bucket=dest_bucket,
            Key=dest_prefix + c.key,
            UploadId=await c.upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": e, "ChecksumCRC32": c} for n, e, c in parts]
            },
        )

    written = 0
    async with asyncio.TaskGroup() as tg:
        for key in keys:
            size = sizes[key]
            written += size
            if size <= part_size:
                await window.acquire(size)
                await reads.acquire()
                tg.create_task(put_whole(key, size))
                continue
            c = _Copy(key, size, True, tg.create_task(create(key)), [])
            for number, start in enumerate(range(0, size, part_size), start=1):
                end = min(start + part_size, size)
                await window.acquire(end - start)
                await reads.acquire()
                assert c.tasks is not None
                c.tasks.append(tg.create_task(put_part(c, number, start, end)))
            tg.create_task(complete(c))
    return Outcome(time.monotonic() - started, written, len(keys))
