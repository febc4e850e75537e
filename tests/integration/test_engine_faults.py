"""Transient faults are absorbed: a broken body resumes where it broke, throttling is retried,
and the job neither restarts nor produces a different archive.

The proxy (tests/support/fault_proxy.py) sits between the engine's client and
the emulator and breaks the first few matching requests; the recorded
requests show how the engine recovered.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.engine import (
    Compression,
    Destination,
    MiB,
    SourceObject,
    ZipOptions,
    ZipResult,
    build_zip,
)
from tests.support.archive_check import verify_archive
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.s3_objects import body, download, open_uploads

pytestmark = pytest.mark.integration

RANGE = 1 * MiB
OPTIONS = ZipOptions(range_size=RANGE, min_part_size=5 * MiB, budget_bytes=16 * MiB)
OUT = "out/archive.zip"


async def run(
    s3: Any, proxied_s3: Any, bucket: str, objects: dict[str, bytes], tmp_path: Path
) -> ZipResult:
    """Zip ``objects`` through the proxy; the archive must be exactly right anyway."""
    result = await build_zip(
        [SourceObject(bucket, k) for k in objects],
        Destination(bucket, OUT),
        s3=proxied_s3,
        options=OPTIONS,
    )
    path = tmp_path / "archive.zip"
    await download(s3, bucket, OUT, path)
    verify_archive(path, objects)
    assert await open_uploads(s3, bucket) == []
    return result


def data_gets(proxy: FaultProxy, key: str) -> list[tuple[int, int]]:
    ranges = [r.range for r in proxy.seen("GET", f"/{key}")]
    return [r for r in ranges if r is not None]


async def test_cut_body_resumes_from_the_byte_where_it_broke(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any, tmp_path: Path
) -> None:
    objects = {
        "before.pdf": body(1_500_000, 1),
        "big.bin": body(3 * MiB + 5, 2),  # 4 ranges
        "after.pdf": body(700_000, 3),
    }
    await put_objects(objects)
    fault = proxy.add(Fault("GET", path_contains="/big.bin", cut_after=300_000, times=2))

    await run(s3, proxied_s3, bucket, objects, tmp_path)

    assert fault.hits == 2
    cut = [r for r in proxy.seen("GET", "/big.bin") if r.fault]
    assert [r.body_bytes_sent for r in cut] == [300_000, 300_000]
    gets = data_gets(proxy, "big.bin")
    for broken in cut:
        assert broken.range is not None
        first, last = broken.range
        resumed = (first + broken.body_bytes_sent, last)
        assert resumed in gets[gets.index(broken.range) + 1 :], (broken.range, gets)
    # 4 ranges + 2 resumptions; the other objects were read once, range by range.
    assert len(gets) == 4 + 2
    assert Counter(data_gets(proxy, "before.pdf")) == Counter([(0, RANGE - 1), (RANGE, 1_499_999)])
    assert data_gets(proxy, "after.pdf") == [(0, 699_999)]


async def test_slow_down_on_get_is_retried_with_the_same_range(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any, tmp_path: Path
) -> None:
    objects = {"a.pdf": body(200_000, 4), "slow.pdf": body(500_000, 5), "c.pdf": b""}
    await put_objects(objects)
    fault = proxy.add(Fault("GET", path_contains="/slow.pdf", status=503, code="SlowDown", times=2))
    await run(s3, proxied_s3, bucket, objects, tmp_path)
    assert fault.hits == 2
    assert data_gets(proxy, "slow.pdf") == [(0, 499_999)] * 3


async def test_throttled_head_and_upload_part_are_retried(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any, tmp_path: Path
) -> None:
    objects = {f"t/{i}.pdf": body(2 * MiB, 10 + i) for i in range(4)}  # 8 MiB: 2 parts
    await put_objects(objects)
    head = proxy.add(Fault("HEAD", path_contains="/t/2.pdf", status=503, code="SlowDown"))
    part = proxy.add(
        Fault("PUT", query_contains="partNumber=1", status=503, code="SlowDown", times=2)
    )
    result = await run(s3, proxied_s3, bucket, objects, tmp_path)
    assert (head.hits, part.hits) == (1, 2)
    assert result.parts == 2
    assert len([r for r in proxy.seen("PUT") if "partNumber=1&" in r.query + "&"]) == 3


async def test_throttled_single_put_object_is_retried_with_the_whole_body(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any, tmp_path: Path
) -> None:
    """A deflated small archive goes up in one PutObject; a retry must resend all of
    it (the zero-copy body is rewound), not an empty or partial body."""
    objects = {"notes.txt": b"lorem ipsum dolor sit amet\n" * 20_000, "b.bin": body(50_000, 6)}
    await put_objects(objects)
    fault = proxy.add(Fault("PUT", path_contains=f"/{OUT}", status=503, code="SlowDown", times=2))
    options = dataclasses.replace(OPTIONS, compression=Compression.DEFLATE)
    result = await build_zip(
        [SourceObject(bucket, k) for k in objects],
        Destination(bucket, OUT),
        s3=proxied_s3,
        options=options,
    )
    path = tmp_path / "archive.zip"
    await download(s3, bucket, OUT, path)
    verify_archive(path, objects)
    puts = [r for r in proxy.seen("PUT", f"/{OUT}")]
    assert fault.hits == 2 and len(puts) == 3
    assert all(r.query == "" for r in puts)  # PutObject, not UploadPart
    assert {r.headers.get("content-length") for r in puts} == {str(result.archive_bytes)}


async def test_cancelled_while_the_upload_is_being_created_leaves_no_upload(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    """Regression: a cancel landing while CreateMultipartUpload was in flight
    used to cancel that call too; S3 still made the upload, whose id we then
    never learned, so it could not be aborted."""
    await put_objects({f"c/{i}.bin": bytes([i]) * (3 * MiB) for i in range(4)})
    # Held at the proxy: S3 (moto) creates the upload only after the cancel.
    fault = proxy.add(Fault("POST", query_contains="uploads", delay_s=1.5))
    options = ZipOptions(budget_bytes=24 * MiB, min_part_size=5 * MiB, range_size=2 * MiB)
    job = asyncio.create_task(
        build_zip(
            [SourceObject(bucket, f"c/{i}.bin") for i in range(4)],
            Destination(bucket, "out/cancelled.zip"),
            s3=proxied_s3,
            options=options,
        )
    )
    while fault.hits == 0:  # the create call has reached the proxy
        await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    for _ in range(500):  # until the held create has reached S3 and been answered
        if any(r.status for r in proxy.seen("POST") if "uploads" in r.query):
            break
        await asyncio.sleep(0.01)
    listed = await s3.list_multipart_uploads(Bucket=bucket)
    assert listed.get("Uploads", []) == []
    assert [r for r in proxy.seen("DELETE") if "uploadId=" in r.query], "no abort was sent"
