"""Fan-out's I/O: build one range of an archive's parts, finish the upload, and
the in-process driver that runs N ranges at once (docs/resume.md, "Fan-out").

    build_fanned_out     create the upload; N x build_range at once; finish
        build_range      reader -> StoredArchive [start, end) -> PartWriter (drops deferred parts)
        finish           every entry's CRC from the results; build_range over each
                         run of deferred parts with a complete ZipState; complete

One primitive (``build_range``) serves the workers and the finisher: a worker
starts from a blind state and drops the parts that carry CRCs it cannot
know; the finisher starts from a complete state and drops nothing. The pure
arithmetic (which parts, which CRCs, which state) is in ``fanout.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .budget import Budget, Lease
from .checkpoint import RecordStore
from .fanout import (
    RangeResult,
    blind_state,
    deferred_parts,
    entry_crcs,
    finished_state,
    range_result,
    range_span,
    runs,
    split_parts,
)
from .layout import BudgetShares, split_budget
from .models import Destination, PlannedEntry, ZipOptions
from .progress import ProgressReporter
from .range_checkpoint import RangeCheckpoint, RangeCheckpointer, RangeSpec
from .reader import RangeReader
from .resume import FINGERPRINT_METADATA, discard_partial, final_quietly, permanent
from .stored_zip import StoredLayout, ZipState, build_stored_stream
from .taskgroups import run_together
from .uploader import (
    ExistingUpload,
    PartWriter,
    UploadedPart,
    UploadResult,
    complete_upload,
    create_upload,
)
from .zip_stream import ZipPump

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class RangeJob:
    """What every range build of one archive shares."""

    s3: S3Client
    entries: Sequence[PlannedEntry]
    layout: StoredLayout
    destination: Destination
    upload_id: str
    part_size: int
    options: ZipOptions


def worker_shares(options: ZipOptions, part_size: int, workers: int) -> BudgetShares:
    """One worker's share of the job budget: the N shares add up to at most the budget."""
    return split_budget(
        options.budget_bytes // workers, part_size, options.range_size, options.upload_concurrency
    )


@dataclass(frozen=True, slots=True)
class RangeCheckpoints:
    """A job-level range's own checkpoint (``range_checkpoint.py``): where it is
    kept, what it must match, how often it is written, and the one an earlier
    attempt left that this build continues from (None: from the first part)."""

    store: RecordStore[RangeCheckpoint]
    spec: RangeSpec
    interval: float
    prior: RangeCheckpoint | None


async def build_range(
    job: RangeJob,
    first: int,
    last: int,
    start: ZipState,
    *,
    drop: frozenset[int],
    lease: Lease,
    shares: BudgetShares,
    read_concurrency: int,
    on_step: StepCallback,
    checkpoints: RangeCheckpoints | None = None,
) -> RangeResult:
    """Upload parts ``first..last`` but ``drop``, generated from ``start``.

    Reads only the source bytes inside the range. With ``checkpoints`` the
    range is checkpointed as its parts complete, continues from
    ``checkpoints.prior`` (reading nothing before it), and a stop a later
    attempt can get past writes a last checkpoint. On any failure the parts
    in flight stop; the upload itself is the driver's to abort.
    """
    layout, part_size = job.layout, job.part_size
    begin, end = range_span(first, last, part_size, layout.length)
    if start.offset != begin:
        raise ValueError(f"range starts at {begin}, its state at {start.offset}")
    prior = checkpoints.prior if checkpoints is not None else None
    at = prior.state if prior is not None else start
    stream, feeds, cursor = build_stored_stream(layout, job.options.range_size, part_size, at, end)
    checkpointer = None
    if checkpoints is not None:
        checkpointer = RangeCheckpointer(
            checkpoints.store, checkpoints.spec, stream, checkpoints.interval, prior
        )
    if prior is not None:
        stream.snapshots.update(prior.snapshots)
        # Progress counts the range's source bytes from its start, so it goes on
        # from the checkpoint instead of starting again at zero.
        cursor.bytes_pulled = layout.source_before(at.offset) - layout.source_before(begin)
        log.info(
            "range %d-%d of %s resumes at byte %d", first, last, job.destination.key, at.offset
        )
    read_budget = lease.carve(shares.read_window)
    writer = PartWriter(
        job.s3,
        job.destination,
        part_size=part_size,
        budget=lease.carve(part_size * shares.part_buffers),
        content_type=job.options.content_type,
        expected_bytes=end - at.offset,
        existing=ExistingUpload(job.upload_id, {}),
        first_part=-(-at.offset // part_size) + 1,
        drop=drop,
        on_part=checkpointer.part_done if checkpointer is not None else None,
    )
    if checkpointer is not None:
        checkpointer.attach(writer)
    pump = ZipPump(
        stream,
        feeds,
        cursor,
        read_budget,
        writer,
        on_step=on_step,
        threaded=False,
        chunk_crc=lambda: stream.yielded_crc,
    )
    stop = layout.entry_at(end)
    reader = RangeReader(
        job.s3,
        job.entries,
        read_budget,
        range_size=job.options.range_size,
        concurrency=read_concurrency,
        attempts=job.options.read_attempts,
        on_slot=lambda index, slot: feeds[index].add(slot),
        on_data=pump.notify,
        start=(at.entry, layout.data_before(at.entry, at.offset)),
        end=(stop, layout.data_before(stop, end)),
    )
    try:
        await run_together(reader.run(), pump.run())
        parts = await writer.upload_rest()
    except BaseException as err:
        pump.discard()
        await writer.stop()
        if checkpointer is not None and not permanent(err):
            await final_quietly(checkpointer)
        raise
    finally:
        if checkpointer is not None:
            await checkpointer.close()
    if prior is not None:
        parts = prior.uploaded() + parts
    return range_result(
        layout,
        part_size,
        first,
        last,
        upload_id=job.upload_id,
        parts=parts,
        crcs=stream.crcs,
        snapshots=stream.snapshots,
        deferred=drop,
    )


async def finish(
    job: RangeJob,
    results: Sequence[RangeResult],
    *,
    budget: Budget,
    shares: BudgetShares,
) -> tuple[UploadResult, int]:
    """Regenerate the deferred parts with every CRC known, then complete the upload.

    In production this runs in whichever worker finishes last; here it runs
    after the in-process workers. The full-object CRC-32 S3 checks at
    completion is combined from every part's CRC, the regenerated ones too.
    Returns the upload and the most budget one regeneration held.
    """
    layout = job.layout
    crcs = entry_crcs(layout, results)
    parts: dict[int, UploadedPart] = {p.number: p for r in results for p in r.parts}
    pending = runs(d.number for r in results for d in r.deferred)
    peak = 0
    # The runs are independent: up to ``budget // shares.total`` at once (as
    # many as there were workers), each with one worker's share.
    at_once = max(1, min(len(pending), budget.capacity // shares.total))
    for batch in range(0, len(pending), at_once):
        chosen = pending[batch : batch + at_once]
        async with budget.lease(shares.total * len(chosen)) as lease:
            done = await run_together(
                *(_regenerate(job, crcs, results, run, lease, shares) for run in chosen)
            )
        peak = max(peak, lease.peak)
        parts.update((p.number, p) for again in done for p in again.parts)
    total = math.ceil(layout.length / job.part_size)
    if sorted(parts) != list(range(1, total + 1)):
        missing = sorted(set(range(1, total + 1)) - set(parts))
        raise RuntimeError(f"fan-out finished without parts {missing[:10]}: not completing")
    upload = await complete_upload(job.s3, job.destination, job.upload_id, list(parts.values()))
    return upload, peak


async def _regenerate(
    job: RangeJob,
    crcs: array[int],
    results: Sequence[RangeResult],
    run: tuple[int, int],
    lease: Lease,
    shares: BudgetShares,
) -> RangeResult:
    """Deferred parts ``run`` again, from the complete state at their start."""
    first, last = run
    state = finished_state(job.layout, crcs, results, first, job.part_size)
    log.info("regenerating deferred parts %d-%d of %s", first, last, job.destination.key)
    return await build_range(
        job,
        first,
        last,
        state,
        drop=frozenset(),
        lease=lease,
        shares=shares,
        read_concurrency=job.options.read_concurrency,
        on_step=lambda _bytes, _entry: None,
    )


class _Progress:
    """The workers' counters summed into the job's one progress callback.

    A file counts as done in the worker whose range holds its last data
    byte (``owned``: the entries ``[a, b)`` each worker finishes), so a file
    split between two workers is counted once, when it is complete.
    """

    def __init__(self, reporter: ProgressReporter, owned: list[tuple[int, int]]) -> None:
        self._reporter = reporter
        self._owned = owned
        self._bytes = [0] * len(owned)
        self._done = [0] * len(owned)

    def for_worker(self, k: int) -> StepCallback:
        first, end = self._owned[k]

        def step(pulled: int, entry: int) -> None:
            self._bytes[k] = pulled
            self._done[k] = min(max(0, entry - first), end - first)
            self._reporter.update(sum(self._bytes), sum(self._done))

        return step


def owned_entries(layout: StoredLayout, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """For each worker's ``[start, end)``, the entries whose data ends in ``(start, end]``
    (the first worker's from 0 on): those it completes."""
    ends = [layout.data_offset(i) + e.size for i, e in enumerate(layout.entries)]
    cuts = [0, *(bisect_right(ends, end) for _, end in spans[:-1]), len(ends)]
    return list(itertools.pairwise(cuts))


async def build_fanned_out(
    job_s3: S3Client,
    entries: Sequence[PlannedEntry],
    layout: StoredLayout,
    destination: Destination,
    *,
    part_size: int,
    workers: int,
    fingerprint: str,
    options: ZipOptions,
    budget: Budget,
    progress: ProgressReporter,
) -> tuple[UploadResult, int]:
    """Build the archive with ``workers`` concurrent range builds; (upload, peak budget).

    Any earlier build of this key (an interrupted single run's upload and
    checkpoint) is discarded first. Any failure aborts the upload: in one
    process no later attempt could use the workers' results, so nothing is
    kept (the job-level design that keeps them is in docs/resume.md).
    """
    ranges = split_parts(math.ceil(layout.length / part_size), workers)
    shares = worker_shares(options, part_size, len(ranges))
    await discard_partial(job_s3, destination)
    upload_id = await create_upload(
        job_s3, destination, options.content_type, {FINGERPRINT_METADATA: fingerprint}
    )
    job = RangeJob(job_s3, entries, layout, destination, upload_id, part_size, options)
    try:
        results, peak = await _run_workers(job, ranges, shares, budget, progress)
        upload, finisher_peak = await finish(job, results, budget=budget, shares=shares)
        return upload, max(peak, finisher_peak)
    except BaseException as err:
        await asyncio.shield(_abort(job, err))
        raise


async def _run_workers(
    job: RangeJob,
    ranges: list[tuple[int, int]],
    shares: BudgetShares,
    budget: Budget,
    progress: ProgressReporter,
) -> tuple[list[RangeResult], int]:
    layout = job.layout
    spans = [range_span(f, last, job.part_size, layout.length) for f, last in ranges]
    starts = [start for start, _ in spans]
    tally = _Progress(progress, owned_entries(layout, spans))
    results: list[RangeResult | None] = [None] * len(ranges)
    concurrency = max(1, job.options.read_concurrency // len(ranges))

    async with budget.lease(shares.total * len(ranges)) as lease:

        async def worker(k: int, first: int, last: int) -> None:
            results[k] = await build_range(
                job,
                first,
                last,
                blind_state(layout, starts[k]),
                drop=frozenset(deferred_parts(layout, job.part_size, first, last)),
                lease=lease,
                shares=shares,
                read_concurrency=concurrency,
                on_step=tally.for_worker(k),
            )

        await run_together(*(worker(k, f, last) for k, (f, last) in enumerate(ranges)))
        peak = lease.peak
    return [r for r in results if r is not None], peak


async def _abort(job: RangeJob, err: BaseException) -> None:
    """Abort the shared upload; a failure to do so is added to the job's error."""
    dest = job.destination
    try:
        await job.s3.abort_multipart_upload(
            Bucket=dest.bucket, Key=dest.key, UploadId=job.upload_id
        )
    except Exception as abort_err:
        note = (
            f"the multipart upload of s3://{dest.bucket}/{dest.key} (UploadId {job.upload_id}) "
            f"could not be aborted ({type(abort_err).__name__}: {abort_err}); the bucket's "
            "lifecycle rule for incomplete uploads has to remove it"
        )
        log.warning("%s", note)
        err.add_note(note)
