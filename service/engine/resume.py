"""Resume: find a usable checkpoint before a build, write checkpoints during it.

The pure pieces are elsewhere (``stored_zip`` regenerates the stream from any
offset; ``checkpoint`` encodes and stores). This module holds the two steps
with I/O that the pipeline calls; the rules are in docs/resume.md:

* a checkpoint is used only if it was made for the same plan (fingerprint)
  and S3 still holds every part it names with the same ETag and size
  (ListParts); otherwise its upload is aborted and the build starts over;
* with no checkpoint (or one naming every part of a finished upload) the
  destination is the finished archive if it carries the plan's fingerprint
  and length: nothing is built again;
* a checkpoint is written when parts 1..N are all uploaded, at most every
  ``interval`` seconds, and once more when a build stops for a reason a
  later attempt can get past (deadline, crash-like errors, cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from .checkpoint import Checkpoint, CheckpointStore, PartRecord, listed_parts, parts_match
from .cleanup import abort_uploads
from .models import Destination, ReadFailedError, ZipJobError
from .stored_zip import StoredArchive
from .uploader import ExistingUpload, PartWriter, UploadedPart

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)


# Object metadata (x-amz-meta-...) that ties a completed archive to its plan.
FINGERPRINT_METADATA = "zipjobs-fingerprint"


@dataclass(frozen=True, slots=True)
class AlreadyComplete:
    """The last attempt completed the upload but died before it could say so."""

    etag: str
    parts: int


async def completed_archive(
    s3: S3Client, destination: Destination, fingerprint: str, length: int
) -> AlreadyComplete | None:
    """Is the destination the archive of this very plan (metadata and length)?"""
    try:
        head = await s3.head_object(Bucket=destination.bucket, Key=destination.key)
    except ClientError:
        return None
    ours = head.get("Metadata", {}).get(FINGERPRINT_METADATA) == fingerprint
    if not ours or head.get("ContentLength") != length:
        return None
    etag = str(head.get("ETag", ""))
    return AlreadyComplete(etag, int(etag.strip('"').rpartition("-")[2] or 1))


async def usable_checkpoint(
    s3: S3Client,
    destination: Destination,
    store: CheckpointStore,
    fingerprint: str,
    length: int,
) -> Checkpoint | AlreadyComplete | None:
    """The stored checkpoint if this build can continue from it, or the proof that
    it already finished; else None, and the stale checkpoint and its upload
    are cleaned away (docs/resume.md)."""
    cp = await store.load()
    # An attempt that died inside CreateMultipartUpload made an upload no
    # checkpoint names: only this one, or none, may stay (docs/resume.md).
    keep = cp.upload_id if cp is not None else None
    await abort_uploads(s3, destination.bucket, destination.key, keep=keep)
    if cp is None:
        # The last attempt may have completed the archive and deleted its
        # checkpoint, then died before it could say so: without this HEAD the
        # whole archive would be built again (docs/resume.md, "Resuming").
        return await completed_archive(s3, destination, fingerprint, length)
    if cp.fingerprint == fingerprint:
        listed = await listed_parts(s3, destination, cp.upload_id)
        if listed is not None and parts_match(cp.parts, listed):
            return cp
        if listed is None and cp.state.offset == length:
            done = await completed_archive(s3, destination, fingerprint, length)
            if done is not None:
                return done
        reason = "its upload is gone" if listed is None else "its parts differ from S3's"
    else:
        reason = "it was made for another plan (sources or sizes changed)"
    log.info("not resuming s3://%s/%s: %s", destination.bucket, destination.key, reason)
    with contextlib.suppress(ClientError):  # already completed or aborted
        await s3.abort_multipart_upload(
            Bucket=destination.bucket, Key=destination.key, UploadId=cp.upload_id
        )
    await store.delete()
    return None


async def discard_partial(s3: S3Client, destination: Destination) -> int:
    """Forget every interrupted build of ``destination``: abort its multipart
    uploads, delete its checkpoint. Returns the number of uploads aborted."""
    aborted = await abort_uploads(s3, destination.bucket, destination.key)
    await CheckpointStore(s3, destination).delete()
    return aborted


def existing_upload(cp: Checkpoint) -> ExistingUpload:
    parts = {p.number: UploadedPart(p.number, p.etag, p.crc32, p.size) for p in cp.parts}
    return ExistingUpload(cp.upload_id, parts)


def permanent(err: BaseException) -> bool:
    """Would the same plan fail the same way again? A read that failed after
    every retry is a network problem: worth resuming, not rebuilding."""
    return isinstance(err, ZipJobError) and not isinstance(err, ReadFailedError)


async def final_quietly(checkpointer: PartCheckpointer) -> None:
    """A stopped build's last checkpoint, if it can be written: a missed one
    costs the parts since the one before, never the archive."""
    try:
        await asyncio.shield(checkpointer.final())
    except Exception as save_err:
        log.warning("final checkpoint not written: %s", save_err)


class PartCheckpointer:
    """Writes a checkpoint as parts complete; one save at a time, throttled.

    What a checkpoint holds and where it goes is the subclass's
    (``_covered``, ``_write``): the whole build's (``Checkpointer``) or a
    fan-out range's (``range_checkpoint.RangeCheckpointer``).
    """

    def __init__(self, stream: StoredArchive, interval: float, saved_parts: int = 0) -> None:
        self._stream = stream
        self._interval = interval
        self._writer: PartWriter | None = None
        self._saved = saved_parts
        self._last = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.saves = 0

    def attach(self, writer: PartWriter) -> None:
        self._writer = writer

    def part_done(self) -> None:
        """Called by the part writer after each UploadPart; never blocks."""
        busy = self._task is not None and not self._task.done()
        if self._closed or busy or time.monotonic() - self._last < self._interval:
            return
        self._task = asyncio.ensure_future(self._save_quietly())

    async def _save_quietly(self) -> None:
        try:
            await self.save()
        except Exception as err:  # a missed checkpoint costs time, never the archive
            log.warning("checkpoint not written: %s", err)

    async def save(self) -> None:
        """Checkpoint the finished prefix of parts, if it grew since the last one."""
        assert self._writer is not None
        covered = self._covered(self._writer)
        if covered is None or covered[0] <= self._saved:
            return
        count, offset = covered
        await self._write(self._writer, count, offset)
        self._forget(offset)
        self._saved = count
        self._last = time.monotonic()
        self.saves += 1

    def _covered(self, writer: PartWriter) -> tuple[int, int] | None:
        """(parts, archive offset) a checkpoint could name now; None: nothing yet."""
        raise NotImplementedError

    async def _write(self, writer: PartWriter, count: int, offset: int) -> None:
        raise NotImplementedError

    def _forget(self, offset: int) -> None:
        """The running CRCs before a saved checkpoint are needed no more."""
        self._stream.forget_before(offset)

    async def final(self) -> None:
        """The last checkpoint of this attempt; no save starts after it, so none
        can land after the checkpoint is deleted."""
        self._closed = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.save()

    async def close(self) -> None:
        """Stop a save in flight and let go of the writer.

        The writer calls us back (``part_done``, ``final``) and we read it, a
        reference cycle: left in place, only Python's cyclic GC, which in a
        long-lived worker rarely runs a full pass, would free the writer and
        the part buffers it keeps (docs/resume.md, "What kept job-level
        resume off").
        """
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._writer = None


class Checkpointer(PartCheckpointer):
    """The whole build's checkpoint: parts 1..N and the ZIP state after them."""

    def __init__(
        self,
        store: CheckpointStore,
        fingerprint: str,
        stream: StoredArchive,
        interval: float,
        saved_parts: int = 0,
    ) -> None:
        super().__init__(stream, interval, saved_parts)
        self._store = store
        self._fingerprint = fingerprint

    def _covered(self, writer: PartWriter) -> tuple[int, int] | None:
        if writer.upload_id is None:
            return None
        prefix = writer.uploaded_prefix()
        return len(prefix), sum(p.length for p in prefix)

    async def _write(self, writer: PartWriter, count: int, offset: int) -> None:
        upload_id = writer.upload_id
        assert upload_id is not None
        prefix = writer.uploaded_prefix()[:count]
        state = self._stream.state_at(offset)
        parts = tuple(PartRecord(p.number, p.etag, p.length, p.crc32) for p in prefix)
        await self._store.save(Checkpoint(self._fingerprint, upload_id, parts, state))
