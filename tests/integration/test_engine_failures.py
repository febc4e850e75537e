"""build_zip when something is wrong: every job ends, says why, and leaves no upload behind.

docs/DESIGN.md, "What other zippers get wrong": one bad key hangs or half-fails other zippers,
and failed multipart uploads are billed until someone aborts them. So each
failure here is checked for three things: the error names the problem, the
destination object does not exist, and ``list_multipart_uploads`` is empty.
Requests go through ``FaultProxy`` (as a recorder, or to break uploads), so
"nothing was uploaded" is checked on the wire, not inferred.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from service.engine import (
    Budget,
    BudgetTooSmallError,
    Destination,
    EmptyArchiveError,
    MiB,
    MissingPolicy,
    MissingSourcesError,
    Progress,
    ReadFailedError,
    SourceChangedError,
    SourceObject,
    ZipJobError,
    ZipOptions,
    build_zip,
)
from tests.support.archive_check import verify_archive
from tests.support.aws_backend import AwsEndpoint
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.s3_objects import body, download, object_exists, open_uploads, unique_bucket_name

pytestmark = pytest.mark.integration

SMALL = ZipOptions(range_size=256 * 1024, min_part_size=5 * MiB, budget_bytes=16 * MiB)
OUT = "out/archive.zip"


def writes(proxy: FaultProxy) -> list[str]:
    """Every request that could have written something, as ``METHOD path?query``."""
    return [
        f"{r.method} {r.path}?{r.query}" for r in proxy.requests if r.method not in ("GET", "HEAD")
    ]


async def assert_nothing_left(s3: Any, bucket: str, key: str = OUT) -> None:
    assert not await object_exists(s3, bucket, key)
    assert await open_uploads(s3, bucket) == []


# ------------------------------------------------------------ missing sources


async def test_every_missing_key_is_named_and_nothing_is_uploaded(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    present = {f"dir/{i:02d}.pdf": body(1000, i) for i in range(25)}  # listed, not HEADed
    present["solo.pdf"] = body(10, 99)
    await put_objects(present)
    no_bucket = unique_bucket_name("zj-absent")
    missing = [
        (bucket, "dir/missing-a.pdf"),  # in a listed directory
        (bucket, "dir/missing-b.pdf"),
        (bucket, "elsewhere/gone.pdf"),  # HEADed
        (no_bucket, "k.pdf"),
    ]
    sources = [SourceObject(bucket, k) for k in present]
    for i, (b, k) in enumerate(missing):
        sources.insert(i * 7, SourceObject(b, k))

    with pytest.raises(MissingSourcesError) as caught:
        await build_zip(sources, Destination(bucket, OUT), s3=proxied_s3, options=SMALL)

    err = caught.value
    assert isinstance(err, ZipJobError) and err.code == "MissingSources"
    assert {(p.bucket, p.key) for p in err.problems} == set(missing)
    reasons = {(p.bucket, p.key): p.reason for p in err.problems}
    assert all(reasons[(bucket, k)] == "NoSuchKey" for b, k in missing if b == bucket)
    assert reasons[(no_bucket, "k.pdf")] in ("NoSuchKey", "NoSuchBucket")
    message = str(err)
    assert message.startswith("4 source(s) missing")
    for b, k in missing:
        assert f"s3://{b}/{k}" in message
    assert writes(proxy) == []  # decided before a single write
    assert not proxy.seen("GET", "/dir/0")  # and before reading any data
    await assert_nothing_left(s3, bucket)


async def test_a_403_on_head_is_reported_as_missing_or_not_readable(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    """S3 answers HEAD of a missing key with 403 when the caller may not s3:ListBucket.

    The key may be missing or unreadable; the job must say so, not claim a
    permission problem only. https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
    (moto answers 404 whatever the permissions, so the proxy answers as S3 would.)
    """
    await put_objects({"ok.pdf": body(100, 1)})
    proxy.add(Fault("HEAD", path_contains="/gone.pdf", status=403, code="AccessDenied"))
    sources = [SourceObject(bucket, "ok.pdf"), SourceObject(bucket, "gone.pdf")]
    with pytest.raises(MissingSourcesError) as caught:
        await build_zip(sources, Destination(bucket, OUT), s3=proxied_s3, options=SMALL)
    assert [(p.key, p.reason) for p in caught.value.problems] == [
        ("gone.pdf", "MissingOrNotReadable")
    ]
    assert f"s3://{bucket}/gone.pdf (missing or not readable" in str(caught.value)
    assert writes(proxy) == []
    await assert_nothing_left(s3, bucket)


async def test_a_long_missing_list_is_complete_in_the_error(
    s3: Any, bucket: str, put_objects: Any
) -> None:
    await put_objects({"ok.pdf": b"ok"})
    missing = [f"gone/{i:03d}.pdf" for i in range(45)]
    sources = [SourceObject(bucket, "ok.pdf")] + [SourceObject(bucket, k) for k in missing]
    with pytest.raises(MissingSourcesError) as caught:
        await build_zip(sources, Destination(bucket, OUT), s3=s3, options=SMALL)
    assert [p.key for p in caught.value.problems] == missing  # all of them, in order
    assert "and 25 more" in str(caught.value)  # the message is bounded, the list is not
    await assert_nothing_left(s3, bucket)


async def test_skip_policy_reports_skipped_keys_and_archives_the_rest(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    present = {"a.pdf": body(5000, 1), "sub/b.pdf": body(0, 2), "c.pdf": body(300_000, 3)}
    await put_objects(present)
    order = ["missing-1.pdf", "a.pdf", "sub/missing-2.pdf", "sub/b.pdf", "c.pdf"]
    options = dataclasses.replace(SMALL, missing=MissingPolicy.SKIP)
    result = await build_zip(
        [SourceObject(bucket, k) for k in order], Destination(bucket, OUT), s3=s3, options=options
    )
    assert [(p.bucket, p.key, p.reason) for p in result.skipped] == [
        (bucket, "missing-1.pdf", "NoSuchKey"),
        (bucket, "sub/missing-2.pdf", "NoSuchKey"),
    ]
    assert result.files == 3
    path = tmp_path / "a.zip"
    await download(s3, bucket, OUT, path)
    verify_archive(path, present)


async def test_nothing_to_archive_is_an_error(s3: Any, bucket: str) -> None:
    options = dataclasses.replace(SMALL, missing=MissingPolicy.SKIP)
    with pytest.raises(EmptyArchiveError):
        await build_zip([], Destination(bucket, OUT), s3=s3, options=options)
    with pytest.raises(EmptyArchiveError) as caught:
        await build_zip(
            [SourceObject(bucket, "nope.pdf")], Destination(bucket, OUT), s3=s3, options=options
        )
    assert caught.value.code == "EmptyArchive"
    await assert_nothing_left(s3, bucket)


# ------------------------------------------------------------ a source changes mid-job


@pytest.mark.parametrize("change", ["overwrite", "delete"])
async def test_source_changed_mid_job_fails_and_aborts_the_upload(
    change: str,
    s3: Any,
    bucket: str,
    put_objects: Any,
    aws_endpoint: AwsEndpoint,
    proxy: FaultProxy,
    proxied_s3: Any,
) -> None:
    """Deterministic: a 1 MiB read window (five 200 KB files ahead) and the overwrite
    done synchronously from the callback when the first file completes, long before
    the reader may start the last file's GET."""
    objects = {f"seq/{i:02d}.pdf": body(200_000, i) for i in range(40)}
    await put_objects(objects)
    victim = "seq/39.pdf"
    sync_s3 = boto3.client(
        "s3",
        endpoint_url=aws_endpoint.endpoint_url,
        region_name=aws_endpoint.region,
        aws_access_key_id=aws_endpoint.access_key_id,
        aws_secret_access_key=aws_endpoint.secret_access_key,
    )
    overwritten: list[int] = []

    def on_progress(p: Progress) -> None:
        if p.files_done >= 1 and not overwritten:
            if change == "overwrite":
                sync_s3.put_object(Bucket=bucket, Key=victim, Body=b"a newer version")
            else:
                sync_s3.delete_object(Bucket=bucket, Key=victim)
            overwritten.append(p.files_done)

    options = ZipOptions(
        range_size=256 * 1024, min_part_size=5 * MiB, budget_bytes=6 * MiB, progress_interval_s=0
    )
    with pytest.raises(SourceChangedError) as caught:
        await build_zip(
            [SourceObject(bucket, k) for k in objects],
            Destination(bucket, OUT),
            s3=proxied_s3,
            options=options,
            on_progress=on_progress,
        )
    # The pump may finish a few small files per turn; the victim is far behind.
    assert len(overwritten) == 1 and overwritten[0] <= 20
    assert (caught.value.bucket, caught.value.key) == (bucket, victim)
    assert caught.value.code == "SourceChanged" and victim in str(caught.value)
    # The first 5 MiB part was under way (the archive is 8 MB): started, then aborted.
    methods = writes(proxy)
    assert any(w.startswith("POST") and w.endswith("?uploads") for w in methods), methods
    assert any(w.startswith("DELETE") and "uploadId=" in w for w in methods), methods
    await assert_nothing_left(s3, bucket)


# A server that ignores If-Match (s3rver does): the GET answers themselves are checked.
IGNORED_IF_MATCH_CHANGES = {
    "same-size": lambda old: bytes(b ^ 0xFF for b in old),  # new ETag, same Content-Range
    "shrunk": lambda old: old[:1000],  # the next range starts past the end: InvalidRange
    "grown": lambda old: old + b"more",  # Content-Range total differs
    "deleted": lambda old: None,
}


@pytest.mark.parametrize("change", list(IGNORED_IF_MATCH_CHANGES))
async def test_server_ignoring_if_match_still_fails_a_changed_source(
    change: str, s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    """The proxy strips If-Match from every GET, and swaps the victim between its first
    and second range (when the second range's GET arrives). Without the ETag and
    Content-Range checks the job would succeed with an entry that matches neither
    version (or fail with a raw InvalidRange)."""
    victim = "swap/victim.pdf"
    old = body(1 * MiB, 77)  # four 256 KiB ranges
    objects = {f"swap/{i:02d}.pdf": body(200_000, i) for i in range(30)} | {victim: old}
    await put_objects(objects)
    new = IGNORED_IF_MATCH_CHANGES[change](old)

    async def swap() -> None:
        if new is None:
            await s3.delete_object(Bucket=bucket, Key=victim)
        else:
            await s3.put_object(Bucket=bucket, Key=victim, Body=new)

    swapped = proxy.add(
        Fault(
            "GET",
            path_contains=victim,
            range_from=SMALL.range_size,
            drop_headers=("If-Match",),
            before=swap,
        )
    )
    proxy.add(Fault("GET", drop_headers=("If-Match",), times=10**6))
    with pytest.raises(SourceChangedError) as caught:
        await build_zip(
            [SourceObject(bucket, k) for k in objects],
            Destination(bucket, OUT),
            s3=proxied_s3,
            options=SMALL,
        )
    assert swapped.hits == 1
    assert not any("if-match" in r.headers for r in proxy.seen("GET", victim))
    assert (caught.value.bucket, caught.value.key) == (bucket, victim)
    assert caught.value.why, "the error must say what differed"
    assert not any(
        "uploadId=" in w and w.startswith("POST") and "?uploads" not in w for w in writes(proxy)
    ), "never completed"
    await assert_nothing_left(s3, bucket)


# ------------------------------------------------------------ cancellation


async def test_cancelling_mid_upload_aborts_the_multipart_upload(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    objects = {f"c/{i}.pdf": body(3 * MiB, 50 + i) for i in range(4)}  # 12 MiB: 3 parts
    await put_objects(objects)
    # Part 2 is held in the proxy, so the job is certainly mid-upload when cancelled.
    proxy.add(Fault("PUT", query_contains="partNumber=2", delay_s=60))
    job = asyncio.create_task(
        build_zip(
            [SourceObject(bucket, k) for k in objects],
            Destination(bucket, OUT),
            s3=proxied_s3,
            options=SMALL,
        )
    )
    for _ in range(600):
        if any("partNumber=2" in r.query for r in proxy.requests):
            break
        await asyncio.sleep(0.05)
    uploads = await open_uploads(s3, bucket)
    assert [u["Key"] for u in uploads] == [OUT]

    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert any(r.method == "DELETE" and "uploadId=" in r.query for r in proxy.requests)
    await assert_nothing_left(s3, bucket)


# ------------------------------------------------------------ failing uploads


@pytest.mark.parametrize("size", [100_000, 6 * MiB], ids=["single-put", "multipart"])
async def test_missing_destination_bucket_is_a_clear_error(
    s3: Any, bucket: str, put_objects: Any, size: int
) -> None:
    await put_objects({"a.pdf": body(size, 1)})
    absent = unique_bucket_name("zj-absent")
    with pytest.raises(ClientError) as caught:
        await build_zip(
            [SourceObject(bucket, "a.pdf")], Destination(absent, OUT), s3=s3, options=SMALL
        )
    assert "NoSuchBucket" in str(caught.value)
    assert await open_uploads(s3, bucket) == []


@pytest.mark.usefixtures("no_backoff")
async def test_upload_part_failing_every_time_aborts_and_raises(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    """500 on every UploadPart: botocore retries each, gives up, the job aborts."""
    objects = {f"u/{i}.pdf": body(3 * MiB, 70 + i) for i in range(4)}
    await put_objects(objects)
    fault = proxy.add(
        Fault("PUT", query_contains="partNumber=", status=500, code="InternalError", times=10**6)
    )
    with pytest.raises(ClientError) as caught:
        await build_zip(
            [SourceObject(bucket, k) for k in objects],
            Destination(bucket, OUT),
            s3=proxied_s3,
            options=SMALL,
        )
    assert caught.value.operation_name == "UploadPart"
    assert "InternalError" in str(caught.value)
    assert fault.hits >= 5  # botocore's own retries of one part happened first
    assert any(r.method == "DELETE" and "uploadId=" in r.query for r in proxy.requests)
    await assert_nothing_left(s3, bucket)


async def test_read_failing_every_time_is_a_read_error_after_the_set_attempts(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    objects = {f"r/{i:02d}.pdf": body(700_000, i) for i in range(10)}
    objects["r/zz-broken.pdf"] = body(200_000, 11)
    await put_objects(objects)
    proxy.add(Fault("GET", path_contains="zz-broken", cut_after=1000, times=10**6))
    options = dataclasses.replace(SMALL, read_attempts=3)
    with pytest.raises(ReadFailedError) as caught:
        await build_zip(
            [SourceObject(bucket, k) for k in objects],
            Destination(bucket, OUT),
            s3=proxied_s3,
            options=options,
        )
    assert "r/zz-broken.pdf" in str(caught.value) and caught.value.code == "ReadFailed"
    # Each attempt resumed where the previous one broke.
    ranges = [r.range for r in proxy.seen("GET", "zz-broken")]
    assert ranges == [(0, 199_999), (1000, 199_999), (2000, 199_999)]
    await assert_nothing_left(s3, bucket)


# ------------------------------------------------------------ budget


async def test_budget_below_one_part_and_one_range_fails_before_any_request_writes(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    await put_objects({"a.pdf": body(6 * MiB, 1)})
    options = ZipOptions(range_size=8 * MiB, min_part_size=8 * MiB, budget_bytes=10 * MiB)
    with pytest.raises(BudgetTooSmallError) as caught:
        await build_zip(
            [SourceObject(bucket, "a.pdf")],
            Destination(bucket, OUT),
            s3=proxied_s3,
            options=options,
        )
    assert caught.value.code == "BudgetTooSmall"
    assert "16 MiB" in str(caught.value)  # says what it would need
    assert writes(proxy) == [] and not proxy.seen("GET", "a.pdf")
    await assert_nothing_left(s3, bucket)


async def test_job_larger_than_the_shared_budget_fails_at_start(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    await put_objects({"a.pdf": body(6 * MiB, 1)})
    shared = Budget(8 * MiB)
    with pytest.raises(BudgetTooSmallError):
        await build_zip(
            [SourceObject(bucket, "a.pdf")],
            Destination(bucket, OUT),
            s3=proxied_s3,
            options=SMALL,
            budget=shared,
        )
    assert shared.in_use == 0
    assert writes(proxy) == [] and not proxy.seen("GET", "a.pdf")
    await assert_nothing_left(s3, bucket)
