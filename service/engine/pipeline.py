"""The one place where the stages are joined: plan -> read -> zip -> upload.

    planner.make_plan        HEAD/List every source; fail naming all missing keys
        |
    reader.RangeReader       ranged GETs in archive order, under the read budget
        |  RangeSlot pieces
    zip_stream.ZipPump       steps zipstream-ng only when its next chunk is here
        |  archive bytes
    uploader.PartWriter      part buffers under the part budget, parts in flight

All sizes are decided up front from the plan (layout.py), every buffer is
counted against one lease of the process budget (budget.py), and any failure
or cancellation aborts the multipart upload before the error leaves here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .budget import Budget
from .layout import BudgetShares, part_size_for, split_budget
from .models import (
    BudgetTooSmallError,
    Compression,
    Destination,
    EmptyArchiveError,
    Plan,
    ProgressCallback,
    SourceObject,
    ZipOptions,
    ZipResult,
)
from .planner import make_plan
from .progress import ProgressReporter
from .reader import RangeReader
from .taskgroups import first_error
from .uploader import PartWriter
from .zip_stream import ArchiveStream, ZipPump, build_stream

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


# Deflate output length is unknown up front; size parts for the worst case
# (stored length plus zlib's few bytes per 16 KiB block).
_DEFLATE_SLACK = 1.01


def _part_size(stream: ArchiveStream, plan: Plan, options: ZipOptions) -> tuple[int, int | None]:
    """(part size, exact archive length or None when compressing)."""
    if options.compression is Compression.STORED:
        length = len(stream)
        return part_size_for(length, options.min_part_size), length
    upper = int(plan.total_source_bytes * _DEFLATE_SLACK) + 512 * (len(plan.entries) + 1)
    return part_size_for(upper, options.min_part_size), None


def _shares(plan: Plan, options: ZipOptions, part_size: int, length: int | None) -> BudgetShares:
    """Split the job budget; a small archive holds no more than it can use."""
    shares = split_budget(
        options.budget_bytes,
        part_size,
        options.range_size,
        options.upload_concurrency,
        single_put=length is not None and length <= part_size,
    )
    if length is not None and length <= part_size:
        shares = BudgetShares(max(length, 1), 1, shares.read_window)
    largest_range = min(options.range_size, max((e.size for e in plan.entries), default=1))
    useful_read = max(largest_range, min(shares.read_window, plan.total_source_bytes))
    return BudgetShares(shares.part_size, shares.part_buffers, max(useful_read, 1))


async def build_zip(
    sources: Sequence[SourceObject],
    destination: Destination,
    *,
    s3: S3Client,
    options: ZipOptions | None = None,
    budget: Budget | None = None,
    on_progress: ProgressCallback | None = None,
) -> ZipResult:
    """Write one ZIP of ``sources`` to ``destination``; see the module docstring."""
    options = options or ZipOptions()
    started = time.monotonic()
    plan = await make_plan(
        s3, sources, missing=options.missing, concurrency=options.head_concurrency
    )
    if not plan.entries:
        raise EmptyArchiveError("no sources to archive")

    stream, feeds, cursor = build_stream(plan.entries, options.compression, options.range_size)
    part_size, length = _part_size(stream, plan, options)
    shares = _shares(plan, options, part_size, length)
    budget = budget or Budget(options.budget_bytes)
    if shares.total > budget.capacity:
        raise BudgetTooSmallError(
            f"job needs {shares.total} bytes but the shared budget is {budget.capacity}"
        )

    progress = ProgressReporter(plan, on_progress, options.progress_interval_s)
    async with budget.lease(shares.total) as lease:
        read_budget = lease.carve(shares.read_window)
        writer = PartWriter(
            s3,
            destination,
            part_size=shares.part_size,
            budget=lease.carve(shares.part_size * shares.part_buffers),
            content_type=options.content_type,
            expected_bytes=length,
        )
        pump = ZipPump(
            stream,
            feeds,
            cursor,
            read_budget,
            writer,
            on_step=progress.update,
            threaded=options.compression is not Compression.STORED,
        )
        reader = RangeReader(
            s3,
            plan.entries,
            read_budget,
            range_size=options.range_size,
            concurrency=options.read_concurrency,
            attempts=options.read_attempts,
            on_slot=lambda index, slot: feeds[index].add(slot),
            on_data=pump.notify,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(reader.run())
                tg.create_task(pump.run())
            upload = await writer.finish()
        except BaseExceptionGroup as group:
            error = first_error(group)
            await writer.abort()
            _note_abort_failure(error, writer)
            raise error from None
        except BaseException as error:
            await writer.abort()
            _note_abort_failure(error, writer)
            raise
        progress.finish()
        peak = lease.peak

    return ZipResult(
        destination=destination,
        files=len(plan.entries),
        source_bytes=plan.total_source_bytes,
        archive_bytes=upload.bytes,
        parts=upload.parts,
        part_size=shares.part_size,
        seconds=time.monotonic() - started,
        etag=upload.etag,
        skipped=plan.skipped,
        peak_budget_bytes=peak,
    )


def _note_abort_failure(error: BaseException, writer: PartWriter) -> None:
    """A failed abort leaves an upload to pay for: the job's error must say so."""
    if writer.abort_failure is not None:
        error.add_note(writer.abort_failure)
