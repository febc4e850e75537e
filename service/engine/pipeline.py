"""The one place where the stages are joined: plan -> read -> zip -> upload.

    planner.make_plan        HEAD/List every source; fail naming all missing keys
        |
    reader.RangeReader       ranged GETs in archive order, under the read budget
        |  RangeSlot pieces
    zip_stream.ZipPump       steps zipstream-ng only when its next chunk is here
        |  archive bytes
    uploader.PartWriter      part buffers under the part budget, parts in flight

A large STORED archive may instead be built by several range builds at once
(``fanout_build.build_fanned_out``: the same four stages per range, then a
finisher; docs/resume.md, "Fan-out").

All sizes are decided up front from the plan (layout.py), every buffer is
counted against one lease of the process budget (budget.py), and any failure
or cancellation aborts the multipart upload before the error leaves here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .budget import Budget
from .checkpoint import Checkpoint, CheckpointStore, fingerprint
from .cleanup import abort_uploads
from .fanout import workers_for
from .fanout_build import build_fanned_out
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
from .resume import (
    FINGERPRINT_METADATA,
    AlreadyComplete,
    Checkpointer,
    existing_upload,
    final_quietly,
    permanent,
    usable_checkpoint,
)
from .stored_zip import StoredArchive, StoredLayout, build_stored_stream
from .taskgroups import run_together
from .uploader import ExistingUpload, PartWriter, UploadResult
from .zip_stream import Cursor, EntryFeed, ZipPump, build_stream

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


# Deflate output length is unknown up front; size parts for the worst case
# (stored length plus zlib's few bytes per 16 KiB block).
_DEFLATE_SLACK = 1.01


@dataclass(slots=True)
class _Stream:
    """The archive generator and what the pipeline needs to run and resume it."""

    stream: Iterable[bytes | memoryview]
    feeds: list[EntryFeed]
    cursor: Cursor
    part_size: int
    length: int | None  # exact for STORED, None when compressing
    start: tuple[int, int] = (0, 0)  # (entry, byte in it) the reader starts at
    checkpointer: Checkpointer | None = None
    store: CheckpointStore | None = None
    existing: ExistingUpload | None = None
    fingerprint: str = ""
    done: AlreadyComplete | None = None


async def _stored_stream(
    plan: Plan, destination: Destination, s3: S3Client, options: ZipOptions
) -> _Stream:
    """The STORED stream, continued from a checkpoint when one is usable."""
    layout = StoredLayout(plan.entries)
    part_size = part_size_for(layout.length, options.min_part_size)
    if not options.resume or layout.length <= part_size:  # one PutObject: nothing to resume
        if options.resume:  # but an earlier attempt (another plan) may have left an upload
            await abort_uploads(s3, destination.bucket, destination.key)
        stream, feeds, cursor = build_stored_stream(layout, options.range_size, part_size, None)
        return _Stream(stream, feeds, cursor, part_size, layout.length)
    store = CheckpointStore(s3, destination)
    fp = fingerprint(plan.entries, part_size, layout.length)
    found = await usable_checkpoint(s3, destination, store, fp, layout.length)
    cp = found if isinstance(found, Checkpoint) else None
    state = cp.state if cp is not None else None
    stream, feeds, cursor = build_stored_stream(layout, options.range_size, part_size, state)
    checkpointer = Checkpointer(
        store, fp, stream, options.checkpoint_interval_s, len(cp.parts) if cp else 0
    )
    start = (0, 0)
    if state is not None:
        start = (state.entry, layout.data_before(state.entry, state.offset))
        # Progress counts source bytes from the archive's start, so a resumed
        # job's progress carries on from its checkpoint instead of falling back
        # towards zero (docs/resume.md, "The 500 GB run").
        cursor.bytes_pulled = layout.source_before(state.offset)
        log.info(
            "resuming s3://%s/%s at byte %d", destination.bucket, destination.key, state.offset
        )
    existing = existing_upload(cp) if cp is not None else None
    return _Stream(
        stream,
        feeds,
        cursor,
        part_size,
        layout.length,
        start,
        checkpointer,
        store,
        existing,
        fp,
        found if isinstance(found, AlreadyComplete) else None,
    )


def _deflate_stream(plan: Plan, options: ZipOptions) -> _Stream:
    """Deflate output length is unknown up front: parts sized for the worst case
    (stored length plus zlib's few bytes per 16 KiB block). Never resumed."""
    stream, feeds, cursor = build_stream(plan.entries, options.compression, options.range_size)
    upper = int(plan.total_source_bytes * _DEFLATE_SLACK) + 512 * (len(plan.entries) + 1)
    return _Stream(stream, feeds, cursor, part_size_for(upper, options.min_part_size), None)


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
    plan: Plan | None = None,
) -> ZipResult:
    """Write one ZIP of ``sources`` to ``destination``; see the module docstring.

    With ``options.resume`` a STORED archive continues from its checkpoint
    (docs/resume.md) and a stop that is not a ZipJobError keeps its upload.
    ``plan``: the plan of ``sources`` if the caller made it already (the job
    runner, deciding whether to fan a job out), so no source is HEAD twice.
    """
    options = options or ZipOptions()
    started = time.monotonic()
    if plan is None:
        plan = await make_plan(
            s3, sources, missing=options.missing, concurrency=options.head_concurrency
        )
    if not plan.entries:
        raise EmptyArchiveError("no sources to archive")
    budget = budget or Budget(options.budget_bytes)
    if options.compression is Compression.STORED and options.workers > 1:
        fanned = await _fan_out(plan, destination, s3, options, budget, on_progress, started)
        if fanned is not None:
            return fanned

    if options.compression is Compression.STORED:
        zs = await _stored_stream(plan, destination, s3, options)
    else:
        zs = _deflate_stream(plan, options)
    if zs.done is not None and zs.store is not None and zs.length is not None:
        await zs.store.delete()
        return _already_complete(plan, destination, zs, zs.done, started)
    shares = _shares(plan, options, zs.part_size, zs.length)
    if shares.total > budget.capacity:
        raise BudgetTooSmallError(
            f"job needs {shares.total} bytes but the shared budget is {budget.capacity}"
        )

    progress = ProgressReporter(plan, on_progress, options.progress_interval_s)
    async with budget.lease(shares.total) as lease:
        read_budget = lease.carve(shares.read_window)
        cp = zs.checkpointer
        writer = PartWriter(
            s3,
            destination,
            part_size=shares.part_size,
            budget=lease.carve(shares.part_size * shares.part_buffers),
            content_type=options.content_type,
            expected_bytes=zs.length,
            existing=zs.existing,
            on_part=cp.part_done if cp is not None else None,
            # The last checkpoint names every part, so a death during
            # CompleteMultipartUpload costs one HEAD, not the archive.
            before_complete=cp.final if cp is not None else None,
            metadata={FINGERPRINT_METADATA: zs.fingerprint} if zs.fingerprint else None,
        )
        if cp is not None:
            cp.attach(writer)
        pump = ZipPump(
            zs.stream,
            zs.feeds,
            zs.cursor,
            read_budget,
            writer,
            on_step=progress.update,
            threaded=options.compression is not Compression.STORED,
            chunk_crc=_chunk_crc(zs.stream),
        )
        reader = RangeReader(
            s3,
            plan.entries,
            read_budget,
            range_size=options.range_size,
            concurrency=options.read_concurrency,
            attempts=options.read_attempts,
            on_slot=lambda index, slot: zs.feeds[index].add(slot),
            on_data=pump.notify,
            start=zs.start,
        )
        try:
            await run_together(reader.run(), pump.run())
            upload = await writer.finish()
        except BaseException as err:
            pump.discard()
            await _stop(writer, zs, err)
            raise
        finally:
            if cp is not None:
                await cp.close()
        if zs.store is not None:
            await zs.store.delete()
        progress.finish()
        peak = lease.peak

    resumed = zs.existing.offset if zs.existing is not None else 0
    return _result(plan, destination, upload, shares.part_size, started, peak, resumed_from=resumed)


def _chunk_crc(stream: object) -> Callable[[], int | None] | None:
    """How the pump learns the CRC-32 of the chunk the stream just yielded, if it can."""
    if isinstance(stream, StoredArchive):
        return lambda: stream.yielded_crc
    return None


def _result(
    plan: Plan,
    destination: Destination,
    upload: UploadResult,
    part_size: int,
    started: float,
    peak: int,
    *,
    resumed_from: int = 0,
    workers: int = 1,
) -> ZipResult:
    return ZipResult(
        destination=destination,
        files=len(plan.entries),
        source_bytes=plan.total_source_bytes,
        archive_bytes=upload.bytes,
        parts=upload.parts,
        part_size=part_size,
        seconds=time.monotonic() - started,
        etag=upload.etag,
        skipped=plan.skipped,
        peak_budget_bytes=peak,
        resumed_from=resumed_from,
        workers=workers,
    )


async def _fan_out(
    plan: Plan,
    destination: Destination,
    s3: S3Client,
    options: ZipOptions,
    budget: Budget,
    on_progress: ProgressCallback | None,
    started: float,
) -> ZipResult | None:
    """The archive built by several range builds at once; None when it should
    stay single (small, or the budget cannot give two workers a part each)."""
    layout = StoredLayout(plan.entries)
    part_size = part_size_for(layout.length, options.min_part_size)
    workers = workers_for(
        layout.length,
        part_size,
        max_workers=options.workers,
        min_bytes_per_worker=options.worker_min_bytes,
        budget_bytes=min(options.budget_bytes, budget.capacity),
        min_worker_budget=part_size + options.range_size,
    )
    if workers < 2 or layout.length <= part_size:
        return None
    log.info("building s3://%s/%s with %d workers", destination.bucket, destination.key, workers)
    progress = ProgressReporter(plan, on_progress, options.progress_interval_s)
    upload, peak = await build_fanned_out(
        s3,
        plan.entries,
        layout,
        destination,
        part_size=part_size,
        workers=workers,
        fingerprint=fingerprint(plan.entries, part_size, layout.length),
        options=options,
        budget=budget,
        progress=progress,
    )
    progress.finish()
    return _result(plan, destination, upload, part_size, started, peak, workers=workers)


def _already_complete(
    plan: Plan, destination: Destination, zs: _Stream, done: AlreadyComplete, started: float
) -> ZipResult:
    log.info("s3://%s/%s was completed by the last attempt", destination.bucket, destination.key)
    return ZipResult(
        destination=destination,
        files=len(plan.entries),
        source_bytes=plan.total_source_bytes,
        archive_bytes=zs.length or 0,
        parts=done.parts,
        part_size=zs.part_size,
        seconds=time.monotonic() - started,
        etag=done.etag,
        skipped=plan.skipped,
        resumed_from=zs.length or 0,
    )


async def _stop(writer: PartWriter, zs: _Stream, err: BaseException) -> None:
    """Keep a resumable upload (with a last checkpoint) or abort it.

    A ZipJobError is permanent: the same plan would fail again, so the upload
    and checkpoint go. Anything else (deadline, cancellation, network) leaves
    both for the next attempt; the caller aborts them if the job ends.
    """
    if zs.checkpointer is None or permanent(err):
        await writer.abort()
        _note_abort_failure(err, writer)
        if zs.store is not None:
            await asyncio.shield(zs.store.delete())
        return
    await writer.stop()
    await final_quietly(zs.checkpointer)


def _note_abort_failure(error: BaseException, writer: PartWriter) -> None:
    """A failed abort leaves an upload to pay for: the job's error must say so."""
    if writer.abort_failure is not None:
        error.add_note(writer.abort_failure)
