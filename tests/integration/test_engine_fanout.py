"""One archive built by N workers on one multipart upload, against the local S3 endpoint.

1, 2, 3, 4 and 7 workers must give byte-identical archives (equal to
zipstream-ng's bytes for the same plan), each passing the five readers, with
the full-object CRC-32 sent at completion equal to zlib's over the archive;
a file straddles two and three workers, empty files sit between; each
worker reads only its own bytes (plus the deferred parts the finisher
regenerates). A worker that fails permanently, or a failed completion,
leaves no upload and no object. ``zipjobs zip --workers`` does the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from service.engine import (
    Destination,
    MiB,
    Progress,
    SourceChangedError,
    SourceObject,
    ZipOptions,
    build_zip,
    fanout,
)
from service.engine.planner import make_plan
from service.engine.stored_zip import StoredLayout
from service.engine.uploader import b64_crc32
from tests.integration.test_cli_resume import REPO, _env
from tests.support.archive_check import verify_archive
from tests.support.aws_backend import AwsEndpoint
from tests.support.s3_objects import body, download, object_exists, open_uploads
from tests.unit.test_stored_zip import _zipstream_bytes

pytestmark = pytest.mark.integration

PART = 5 * MiB
BASE = ZipOptions(
    range_size=1 * MiB, min_part_size=PART, budget_bytes=48 * MiB, upload_concurrency=2
)
# A 14 MiB file spans three 5 MiB parts (two or three workers), empty ones sit between.
SIZES = [3 * MiB + 17, 0, 14 * MiB + 5, 123, 0, 2 * MiB, 9 * MiB + 1, 0, 4 * MiB - 3, 555]

Failure = Callable[[str, dict[str, Any]], BaseException | None]


class Watched:
    """Delegates to the real client; records completions and ranged-GET bytes,
    and raises what ``fail`` returns for a call (after planning)."""

    def __init__(self, s3: Any, fail: Failure | None = None) -> None:
        self._s3 = s3
        self._fail = fail
        self.completions: list[dict[str, Any]] = []
        self.get_bytes = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._s3, name)
        if not callable(real) or name.startswith("get_paginator"):
            return real

        async def call(**kwargs: Any) -> Any:
            error = self._fail(name, kwargs) if self._fail is not None else None
            if error is not None:
                raise error
            if name == "complete_multipart_upload":
                self.completions.append(kwargs)
            if name == "get_object" and "Range" in kwargs:
                first, last = kwargs["Range"].removeprefix("bytes=").split("-")
                self.get_bytes += int(last) - int(first) + 1
            return await real(**kwargs)

        return call


async def _sources(put_objects: Any, bucket: str) -> tuple[list[SourceObject], dict[str, bytes]]:
    objects = {f"in/{i:02d}-ü.pdf": body(size, i) for i, size in enumerate(SIZES)}
    await put_objects(objects)
    return [SourceObject(bucket, k) for k in objects], objects


async def _zipstream_reference(
    s3: Any, sources: list[SourceObject], objects: dict[str, bytes]
) -> bytes:
    """zipstream-ng's bytes for the plan the engine makes (names, sizes, dates)."""
    plan = await make_plan(s3, sources)
    return _zipstream_bytes(list(plan.entries), [objects[e.source.key] for e in plan.entries])


async def test_one_to_seven_workers_build_the_same_bytes(
    s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    sources, objects = await _sources(put_objects, bucket)
    want = await _zipstream_reference(s3, sources, objects)
    parts = -(-len(want) // PART)
    assert parts == 7
    layout = StoredLayout((await make_plan(s3, sources)).entries)
    reread: list[int] = []
    for workers in (1, 2, 3, 4, 7):
        key = f"out/fanned-{workers}.zip"
        client = Watched(s3)
        options = dataclasses.replace(BASE, workers=workers, worker_min_bytes=1)
        seen: list[Progress] = []
        result = await build_zip(
            sources, Destination(bucket, key), s3=client, options=options, on_progress=seen.append
        )
        assert result.workers == workers
        # The workers' progress adds up, never goes backwards, and ends complete.
        done = [p.bytes_done for p in seen]
        assert done == sorted(done) and done[-1] == sum(SIZES)
        assert seen[-1].files_done == len(SIZES)
        assert result.peak_budget_bytes <= BASE.budget_bytes
        path = tmp_path / f"fanned-{workers}.zip"
        await download(s3, bucket, key, path)
        assert path.read_bytes() == want, workers
        verify_archive(path, objects)
        # S3 checks the full-object CRC-32 at completion; it must be the archive's.
        assert client.completions[-1]["ChecksumCRC32"] == b64_crc32(zlib.crc32(want))
        assert len(client.completions[-1]["MultipartUpload"]["Parts"]) == parts
        # Each source byte is read once by its worker; the finisher reads again
        # exactly the source bytes inside the deferred parts, nothing else.
        again = _deferred_source_bytes(layout, workers)
        assert client.get_bytes == sum(SIZES) + again
        reread.append(again)
        assert client.get_bytes <= sum(SIZES) + 2 * (workers - 1) * PART
        assert await open_uploads(s3, bucket) == []
    assert reread[0] == 0 and all(reread[1:]), reread  # the finisher did read again


def _deferred_source_bytes(layout: StoredLayout, workers: int) -> int:
    """Source bytes inside the parts the workers leave to the finisher."""
    total = 0
    ranges = fanout.split_parts(-(-layout.length // PART), workers)
    deferred = [n for f, last in ranges for n in fanout.deferred_parts(layout, PART, f, last)]
    for first, last in fanout.runs(deferred):
        lo, hi = fanout.range_span(first, last, PART, layout.length)
        total += sum(
            layout.data_before(i, hi) - layout.data_before(i, lo) for i in range(len(SIZES))
        )
    return total


async def test_cancelled_mid_build_leaves_no_upload(s3: Any, bucket: str, put_objects: Any) -> None:
    """A deadline (task cancellation) while parts are in flight: the upload is
    aborted on the way out, shielded from the cancellation itself."""
    sources, _ = await _sources(put_objects, bucket)
    parts_started = asyncio.Event()

    def watch(name: str, kwargs: dict[str, Any]) -> BaseException | None:
        if name == "upload_part":
            parts_started.set()
        return None

    options = dataclasses.replace(BASE, workers=4, worker_min_bytes=1)
    build = asyncio.ensure_future(
        build_zip(
            sources,
            Destination(bucket, "out/cancelled.zip"),
            s3=Watched(s3, watch),
            options=options,
        )
    )
    await asyncio.wait_for(parts_started.wait(), 60)
    build.cancel()
    with pytest.raises(asyncio.CancelledError):
        await build
    assert await open_uploads(s3, bucket) == []
    assert not await object_exists(s3, bucket, "out/cancelled.zip")


async def test_a_small_archive_stays_single(s3: Any, bucket: str, put_objects: Any) -> None:
    """The default of 8 GiB per worker keeps tens of MiB on one (resumable) build."""
    sources, _ = await _sources(put_objects, bucket)
    options = dataclasses.replace(BASE, workers=8, resume=True)
    result = await build_zip(sources, Destination(bucket, "out/single.zip"), s3=s3, options=options)
    assert result.workers == 1
    assert await open_uploads(s3, bucket) == []


def _failing_get(key: str) -> Failure:
    def fail(name: str, kwargs: dict[str, Any]) -> BaseException | None:
        if name == "get_object" and kwargs.get("Key") == key and "Range" in kwargs:
            return ClientError(
                {"Error": {"Code": "PreconditionFailed", "Message": "changed"}}, "GetObject"
            )
        return None

    return fail


def _failing_completion(name: str, kwargs: dict[str, Any]) -> BaseException | None:
    if name == "complete_multipart_upload":
        return ClientError({"Error": {"Code": "InternalError", "Message": "no"}}, "Complete")
    return None


def _failing_part(name: str, kwargs: dict[str, Any]) -> BaseException | None:
    """Not a ZipJobError: a single build would keep its upload to resume; a fan-out cannot."""
    if name == "upload_part" and kwargs.get("PartNumber") == 4:
        return ClientError({"Error": {"Code": "InternalError", "Message": "no"}}, "UploadPart")
    return None


@pytest.mark.parametrize(
    ("fail", "error"),
    [
        (_failing_get("in/06-ü.pdf"), SourceChangedError),  # in the third worker's range
        (_failing_get("in/00-ü.pdf"), SourceChangedError),  # the first worker's
        (_failing_completion, ClientError),  # the finisher's
        (_failing_part, ClientError),  # a transient error in the second worker
    ],
    ids=["third-worker", "first-worker", "completion", "transient-part"],
)
async def test_a_failure_leaves_no_upload(
    s3: Any, bucket: str, put_objects: Any, fail: Failure, error: type[BaseException]
) -> None:
    sources, _ = await _sources(put_objects, bucket)
    client = Watched(s3, fail)
    options = dataclasses.replace(BASE, workers=4, worker_min_bytes=1)
    with pytest.raises(error):
        await build_zip(sources, Destination(bucket, "out/failed.zip"), s3=client, options=options)
    assert await open_uploads(s3, bucket) == []
    assert not await object_exists(s3, bucket, "out/failed.zip")


async def test_cli_workers_builds_the_same_bytes(
    aws_endpoint: AwsEndpoint, s3: Any, bucket: str, put_objects: Any, tmp_path: Path
) -> None:
    """``zipjobs zip --workers 3`` splits the archive and says so in its summary."""
    sources, objects = await _sources(put_objects, bucket)
    want = await _zipstream_reference(s3, sources, objects)
    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"{s.key}\n" for s in sources))
    argv = [
        sys.executable, "-m", "service.cli", "zip", "--bucket", bucket, "--keys-file", str(keys),
        "--dest", f"s3://{bucket}/out/cli.zip", "--endpoint-url", aws_endpoint.endpoint_url,
        "--region", aws_endpoint.region, "--budget-mb", "48", "--no-progress",
        "--workers", "3", "--worker-min-mb", "1",
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=REPO, env=_env(aws_endpoint), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["workers"] == 3
    path = tmp_path / "cli.zip"
    await download(s3, bucket, "out/cli.zip", path)
    assert path.read_bytes() == want
    verify_archive(path, objects)
    assert await open_uploads(s3, bucket) == []
