"""A build that fails or is cancelled lets go of its buffers while its error is still kept.

The job runner keeps a failed build's exception (to log it and record why),
and a Lambda keeps its container warm for the next job. If that error's
traceback still reaches the read-ahead ranges or the part buffers, the
memory stays allocated although the budget has counted it free, and the
next job's RSS can pass budget + overhead (service/memory.py). With the
cyclic collector off (as it in effect is in a long-lived worker;
docs/resume.md, "What kept job-level resume off") only reference counting
frees memory, so these tests measure what reference counting leaves behind:
tracemalloc's bytes still allocated by reader.py and uploader.py (the range
and part buffers are made there) after the build raised, with its error held.
docs/DESIGN.md, "Memory" has the numbers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError

from service.engine import (
    Compression,
    Destination,
    MiB,
    ReadFailedError,
    SourceObject,
    ZipOptions,
    build_zip,
    reader,
    uploader,
)
from service.engine.cleanup import abort_uploads
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.s3_objects import body, open_uploads

pytestmark = pytest.mark.integration

# 5 MiB parts, 2 MiB ranges: three part buffers (15 MiB) and a 17 MiB read window.
OPTIONS = ZipOptions(
    range_size=2 * MiB,
    min_part_size=5 * MiB,
    budget_bytes=32 * MiB,
    upload_concurrency=2,
    read_attempts=1,
)
OUT = "out/stopped.zip"
BAD = "m-bad.pdf"
# Two files before the bad one (parts get written), four after it (read ahead
# while the bad one is held in the proxy).
SOURCES = {"a0.pdf": 6 * MiB, "a1.pdf": 6 * MiB, BAD: MiB} | {
    f"z{i}.pdf": 4 * MiB for i in range(4)
}
BUFFER_FILES = (reader.__file__, uploader.__file__)
# What may stay: nothing of a buffer; small objects allocated on those lines
# (slots, part records) are well under this.
HELD_LIMIT = MiB // 4


@dataclasses.dataclass
class Traced:
    """Range and part buffer bytes tracemalloc sees: at the fault, and after the stop."""

    at_fault: int = 0

    def buffers(self) -> int:
        """Bytes still allocated by the lines of reader.py and uploader.py.

        Only those files: moto runs in this process (its werkzeug server keeps
        the uploaded parts), so a total would measure the emulator too.
        """
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, name) for name in BUFFER_FILES]
        )
        return sum(stat.size for stat in snapshot.statistics("filename"))

    async def note(self) -> None:
        """The fault proxy's ``before`` hook: what the build holds as the fault hits."""
        self.at_fault = max(self.at_fault, self.buffers())


@contextmanager
def reference_counting_only() -> Iterator[Traced]:
    """The cyclic collector off and tracemalloc on, for the block."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        yield Traced()
    finally:
        tracemalloc.stop()
        gc.enable()


async def _seed(put_objects: Any, bucket: str) -> list[SourceObject]:
    await put_objects({key: body(size, seed) for seed, (key, size) in enumerate(SOURCES.items())})
    return [SourceObject(bucket, key) for key in SOURCES]


def _assert_let_go(traced: Traced, kept: BaseException) -> None:
    held = traced.buffers()
    # The same measure was large while the build ran: ranges read ahead, parts.
    assert traced.at_fault >= 8 * MiB, f"only {traced.at_fault / MiB:.1f} MiB at the fault"
    assert held < HELD_LIMIT, (
        f"{held / MiB:.1f} MiB of range/part buffers still allocated "
        f"({traced.at_fault / MiB:.1f} MiB at the fault) while the {type(kept).__name__} is kept"
    )


@pytest.mark.parametrize(
    ("workers", "compression"),
    [(1, Compression.STORED), (2, Compression.STORED), (1, Compression.DEFLATE)],
    ids=["single", "fan-out", "deflate"],
)
async def test_a_failed_build_s_kept_error_holds_no_buffer(
    workers: int,
    compression: Compression,
    bucket: str,
    put_objects: Any,
    proxy: FaultProxy,
    proxied_s3: Any,
) -> None:
    """The bad source is held 1 s (the ranges after it are read ahead), then cut."""
    sources = await _seed(put_objects, bucket)
    options = dataclasses.replace(
        OPTIONS, workers=workers, worker_min_bytes=1, compression=compression
    )
    with reference_counting_only() as traced:
        proxy.add(
            Fault(
                "GET", path_contains=BAD, delay_s=1.0, cut_after=1000, before=traced.note, times=9
            )
        )
        try:
            await build_zip(sources, Destination(bucket, OUT), s3=proxied_s3, options=options)
        except ReadFailedError as err:
            kept: BaseException = err  # as the runner keeps it
        else:
            pytest.fail("the build did not fail")
        _assert_let_go(traced, kept)
    assert BAD in str(kept)


@pytest.mark.usefixtures("no_backoff")
async def test_a_failed_upload_s_kept_error_holds_no_buffer(
    bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    """Part 2 fails every time (botocore retries it, then gives up): the job's
    error is that part's, raised through the frames that sent its buffer."""
    sources = await _seed(put_objects, bucket)
    with reference_counting_only() as traced:
        proxy.add(
            Fault("PUT", query_contains="partNumber=2", status=500, before=traced.note, times=10**6)
        )
        try:
            await build_zip(sources, Destination(bucket, OUT), s3=proxied_s3, options=OPTIONS)
        except ClientError as err:
            kept: BaseException = err
        else:
            pytest.fail("the build did not fail")
        _assert_let_go(traced, kept)
    assert "UploadPart" in str(kept)


@pytest.mark.parametrize("resume", [False, True], ids=["aborted", "kept-to-resume"])
async def test_a_cancelled_build_s_kept_error_holds_no_buffer(
    resume: bool, s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    """Cancelled (a deadline, a cancel) while the bad source is held and the rest read ahead.

    With resume on the stop keeps the upload for the next attempt: the part
    buffers must go all the same.
    """
    sources = await _seed(put_objects, bucket)
    proxy.add(Fault("GET", path_contains=BAD, delay_s=60))
    options = dataclasses.replace(OPTIONS, resume=resume, checkpoint_interval_s=0)
    with reference_counting_only() as traced:
        job = asyncio.ensure_future(
            build_zip(sources, Destination(bucket, OUT), s3=proxied_s3, options=options)
        )
        for _ in range(600):
            if proxy.seen("GET", "z3.pdf"):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the ranges read ahead have arrived
        await traced.note()
        job.cancel()
        try:
            await job
        except asyncio.CancelledError as err:
            kept: BaseException = err
        else:
            pytest.fail("the build was not cancelled")
        _assert_let_go(traced, kept)
    left = await open_uploads(s3, bucket)
    assert bool(left) == resume  # the resumable stop kept its upload, the other aborted it
    await abort_uploads(s3, bucket, OUT)
