"""Upload: the ZIP stream into S3 parts, several in flight, never orphaned.

The zip stream writes into a part buffer; a full buffer goes up as one
UploadPart while the next one fills. Buffers come from the job's part budget
and are reused (allocating 8+ MiB per part fragments the heap; docs/DESIGN.md,
"Memory"),
so the number of parts in flight is exactly what the budget allows.

The multipart upload is created lazily when the first part is full: an
archive that fits one buffer goes up as one PutObject, the cheapest request
and the only legal one below S3's 5 MiB part minimum.

Integrity is checked by S3 itself: every part carries its CRC-32
(``ChecksumCRC32``) and CompleteMultipartUpload the whole archive's CRC-32
(``ChecksumType=FULL_OBJECT``), combined from the parts' CRCs
(``crc32_combine``), so the archive is never read twice. The CRC is taken as
the bytes are copied into the part buffer, in the same pass. S3 refuses a
part or an object whose bytes do not match (BadDigest); see
docs/performance.md, "Checksums".

``abort()`` is the promise that matters: on any failure or cancellation it
waits for the in-flight parts to stop, then aborts the upload, shielded from
a second cancellation, so no incomplete upload is left to bill.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, cast

from .budget import ByteSemaphore
from .cleanup import abort_uploads
from .crc import crc32, crc32_combine, fast_combine
from .models import Destination, LengthMismatchError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef


log = logging.getLogger(__name__)

# Pieces aiohttp sends a part body in; small enough that its transport
# buffers stay small, large enough that the per-piece cost is nil.
SEND_PIECE = 256 * 1024


class PartBody:
    """A part buffer as an upload body, without copies.

    Why our own class: handed a ``bytearray``, aiohttp slices it (a copy),
    joins it to the headers (a second copy) and buffers what the socket does
    not take (a third): measured 30 MiB over the budget with three 8 MiB
    parts in flight. This object looks like a seekable file to botocore (it
    computes the length and the SigV4 payload hash through ``read``/``seek``,
    and rewinds on a retry) and like an async iterable to aiohttp, which then
    sends zero-copy slices with back-pressure.
    """

    def __init__(self, buf: bytearray, length: int) -> None:
        self._view = memoryview(buf)[:length]
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view) - self._pos

    def as_body(self) -> IO[bytes]:
        """This object as the stubs' ``Body`` type: botocore needs only read/seek/tell.

        Not an ``io.IOBase`` on purpose: aiohttp would then send it through its
        file payload (copying) instead of iterating the zero-copy slices.
        """
        return cast("IO[bytes]", self)

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n is None or n < 0 else min(self._pos + n, len(self._view))
        chunk = bytes(self._view[self._pos : end])
        self._pos = end
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._view)}[whence]
        self._pos = max(0, min(base + offset, len(self._view)))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def release(self) -> None:
        """The call is over: whoever still holds this body no longer holds the buffer."""
        self._view.release()

    async def __aiter__(self) -> AsyncIterator[memoryview]:
        for start in range(self._pos, len(self._view), SEND_PIECE):
            yield self._view[start : start + SEND_PIECE]
        self._pos = len(self._view)


@dataclass(frozen=True, slots=True)
class UploadedPart:
    """One part S3 has acknowledged: what CompleteMultipartUpload lists, and
    what a resumed upload needs to carry the full-object CRC on (its CRC and
    length feed ``crc32_combine``)."""

    number: int
    etag: str
    crc32: int
    length: int


@dataclass(frozen=True, slots=True)
class ExistingUpload:
    """A multipart upload to continue: its id, and parts 1..N already holding
    the archive's first ``offset`` bytes (with their CRCs, which the
    full-object checksum is combined from); see docs/resume.md."""

    upload_id: str
    parts: dict[int, UploadedPart]

    @property
    def offset(self) -> int:
        return sum(p.length for p in self.parts.values())


@dataclass(frozen=True, slots=True)
class UploadResult:
    etag: str
    parts: int
    bytes: int
    crc32: int


def b64_crc32(crc: int) -> str:
    """S3's checksum encoding: the big-endian CRC-32 bytes, base64."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")


def full_object_crc32(parts: list[UploadedPart]) -> int:
    """The CRC-32 of the parts' concatenation, in part order, from their CRCs."""
    crc = 0
    for part in sorted(parts, key=lambda p: p.number):
        crc = crc32_combine(crc, part.crc32, part.length)
    return crc


async def create_upload(
    s3: S3Client, destination: Destination, content_type: str, metadata: dict[str, str]
) -> str:
    """CreateMultipartUpload with the archive's headers and a full-object CRC-32."""
    resp = await s3.create_multipart_upload(
        Bucket=destination.bucket,
        Key=destination.key,
        ContentType=content_type,
        ContentDisposition=content_disposition(destination.filename),
        Metadata=metadata,
        ChecksumAlgorithm="CRC32",
        ChecksumType="FULL_OBJECT",
    )
    return str(resp["UploadId"])


async def complete_upload(
    s3: S3Client, destination: Destination, upload_id: str, done: list[UploadedPart]
) -> UploadResult:
    """CompleteMultipartUpload with every part's CRC and the whole object's,
    combined from them; S3 refuses the completion if the bytes disagree."""
    crc = full_object_crc32(done)
    parts: list[CompletedPartTypeDef] = [
        {"PartNumber": p.number, "ETag": p.etag, "ChecksumCRC32": b64_crc32(p.crc32)}
        for p in sorted(done, key=lambda p: p.number)
    ]
    resp = await s3.complete_multipart_upload(
        Bucket=destination.bucket,
        Key=destination.key,
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
        ChecksumCRC32=b64_crc32(crc),
        ChecksumType="FULL_OBJECT",
    )
    return UploadResult(str(resp.get("ETag", "")), len(parts), sum(p.length for p in done), crc)


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the RFC 5987 UTF-8 name.

    The one definition: the archive object carries it, and the job API asks
    S3 for the same header on the presigned download (ResponseContentDisposition).
    """
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    encoded = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


class PartWriter:
    """A sink for the zip stream that turns bytes into S3 parts."""

    def __init__(
        self,
        s3: S3Client,
        destination: Destination,
        *,
        part_size: int,
        budget: ByteSemaphore,
        content_type: str,
        expected_bytes: int | None,
        existing: ExistingUpload | None = None,
        on_part: Callable[[], None] | None = None,
        before_complete: Callable[[], Awaitable[None]] | None = None,
        metadata: dict[str, str] | None = None,
        first_part: int | None = None,
        drop: frozenset[int] = frozenset(),
    ) -> None:
        self._s3 = s3
        self._dest = destination
        self._part_size = part_size
        self._budget = budget
        self._content_type = content_type
        self._expected = expected_bytes
        self._free: list[bytearray] = []
        self._buf: bytearray | None = None
        self._fill = 0
        self._crc = 0  # CRC-32 of the filling buffer's bytes so far
        self._fast_combine = fast_combine()
        self._written = 0
        self._parts: dict[int, UploadedPart] = {}
        self._next_part = 1
        self._tasks: set[asyncio.Task[None]] = set()
        self._create: asyncio.Future[str] | None = None
        self._failure: BaseException | None = None
        # Set when abort() could not abort the upload: callers add it to their error.
        self.abort_failure: str | None = None
        self._on_part = on_part
        self._before_complete = before_complete
        self._metadata = metadata or {}
        if existing is not None:
            self._create = asyncio.get_running_loop().create_future()
            self._create.set_result(existing.upload_id)
            self._parts = dict(existing.parts)
            self._next_part = len(existing.parts) + 1
            self._written = existing.offset
        # A fan-out range (docs/resume.md, "Fan-out") writes parts from
        # ``first_part`` on into an upload made by its driver, and drops the
        # parts it cannot get right (their bytes carry another worker's CRC).
        if first_part is not None:
            self._next_part = first_part
        self._drop = drop

    @property
    def upload_id(self) -> str | None:
        """The multipart upload's id once S3 has made it."""
        if self._create is None or not self._create.done() or self._create.cancelled():
            return None
        return None if self._create.exception() else self._create.result()

    @property
    def bytes_written(self) -> int:
        """Bytes handed to this writer so far (with an ``existing`` upload's)."""
        return self._written

    def uploaded_prefix(self) -> list[UploadedPart]:
        """Parts 1..N, all uploaded: the archive's first bytes (for checkpoints)."""
        out: list[UploadedPart] = []
        while len(out) + 1 in self._parts:
            out.append(self._parts[len(out) + 1])
        return out

    @property
    def uploaded_parts(self) -> list[UploadedPart]:
        """Parts S3 has acknowledged so far, in part order (for checkpoints)."""
        return [self._parts[n] for n in sorted(self._parts)]

    async def write(self, data: bytes | memoryview, crc: int | None = None) -> None:
        """Copy ``data`` into part buffers; ``crc`` is its CRC-32 if the caller knows it.

        A known CRC is combined into the part's (one C call) instead of reading
        the bytes a second time: the zip stream has just computed it for the
        entry's data descriptor. It is the CRC of the bytes the stream meant to
        send, so S3, checking the part against it, also catches a copy gone
        wrong here (docs/performance.md, "Checksums").

        ``data`` is often a view of a read range. The views made of it here
        are released on the way out, so that this frame, kept in a stopped
        build's error, does not keep the range alive (docs/DESIGN.md, "Memory").
        """
        view = memoryview(data).cast("B")
        whole = len(view)
        try:
            while view:
                self._raise_failure()
                if self._buf is None:
                    self._buf = await self._take_buffer()
                n = min(len(self._buf) - self._fill, len(view))
                with view[:n] as piece:
                    self._buf[self._fill : self._fill + n] = piece
                    if crc is not None and n == whole and (self._fill == 0 or self._fast_combine):
                        self._crc = crc32_combine(self._crc, crc, n)
                    else:
                        self._crc = crc32(piece, self._crc)
                self._fill += n
                self._written += n
                view = view[n:]
                if self._fill == len(self._buf) and not self._is_whole_archive():
                    self._send_part()
        finally:
            view.release()

    async def finish(self) -> UploadResult:
        """Upload what is left and complete; refuse an archive of the wrong length."""
        try:
            return await self._finish()
        finally:
            self._drop_buffers()

    async def _finish(self) -> UploadResult:
        self._raise_failure()
        self._check_length()
        if self._create is None:
            return await self._put_single()
        done = await self.upload_rest()
        upload_id = await self._create
        if self._before_complete is not None:
            await self._before_complete()
        result = await complete_upload(self._s3, self._dest, upload_id, done)
        await self._abort_strays()
        return UploadResult(result.etag, result.parts, self._written, result.crc32)

    async def upload_rest(self) -> list[UploadedPart]:
        """Upload the last (maybe short) part, wait for all in flight; never complete.

        ``finish`` completes after it; a fan-out range stops here and leaves
        the completion to its finisher.
        """
        self._raise_failure()
        self._check_length()
        if self._fill:
            self._send_part()
        if self._tasks:
            await asyncio.gather(*self._tasks)
        self._drop_buffers()  # every part is up: none is needed again
        self._raise_failure()
        return self.uploaded_parts

    def _check_length(self) -> None:
        if self._expected is not None and self._written != self._expected:
            raise LengthMismatchError(
                f"archive is {self._written} bytes, planned {self._expected}: not completing"
            )

    async def _abort_strays(self) -> None:
        """Abort uploads of our key that we never knew of, now that the archive is complete.

        A CreateMultipartUpload whose answer was lost (S3 made the upload,
        the connection broke, botocore asked again) leaves an upload only a
        listing can find. Best effort: the archive is done either way, and
        the bucket's lifecycle rule for incomplete uploads is the backstop.
        """
        try:
            stray = await abort_uploads(self._s3, self._dest.bucket, self._dest.key)
        except Exception as err:
            log.warning("could not look for stray uploads of %s: %s", self._dest.key, err)
            return
        if stray:
            log.info("aborted %d stray upload(s) of %s", stray, self._dest.key)

    async def abort(self) -> None:
        """Stop in-flight parts, then abort the multipart upload (if one began)."""
        await asyncio.shield(self._abort())

    async def stop(self) -> None:
        """Stop in-flight parts but keep the upload and its finished parts, to resume."""
        await asyncio.shield(self._stop_parts())
        self._drop_buffers()
        if self._create is not None:
            await asyncio.wait([self._create])

    async def _stop_parts(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _abort(self) -> None:
        await self._stop_parts()
        self._drop_buffers()
        if self._create is None:
            return
        # Wait for the create call to finish either way: if it was in flight,
        # S3 may have made the upload, and only its id lets us abort it.
        await asyncio.wait([self._create])
        if self._create.cancelled() or self._create.exception() is not None:
            return  # the upload was never created
        upload_id = self._create.result()
        try:
            await self._s3.abort_multipart_upload(
                Bucket=self._dest.bucket, Key=self._dest.key, UploadId=upload_id
            )
        except Exception as err:
            # The bucket's lifecycle rule (abort incomplete uploads after a
            # day) is the backstop; say loudly that it is needed, in one line
            # (the job's own error gets it as a note); the traceback is debug.
            where = f"s3://{self._dest.bucket}/{self._dest.key}"
            self.abort_failure = (
                f"the multipart upload of {where} (UploadId {upload_id}) could not be "
                f"aborted ({type(err).__name__}: {err}); the bucket's lifecycle rule "
                "for incomplete uploads has to remove it"
            )
            log.warning("%s", self.abort_failure)
            log.debug("abort of %s failed", where, exc_info=True)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _is_whole_archive(self) -> bool:
        """A full first buffer that holds the whole (known-length) archive waits
        for ``finish()`` and goes up as one PutObject, not a one-part upload."""
        return self._create is None and self._written == self._expected

    def _buffer_size(self) -> int:
        """A part, or the whole archive when it is known to be smaller."""
        if self._expected is not None and self._create is None:
            return min(self._part_size, max(self._expected, 1))
        return self._part_size

    async def _take_buffer(self) -> bytearray:
        size = self._buffer_size()
        await self._budget.acquire(size)
        for i, buf in enumerate(self._free):
            if len(buf) == size:
                return self._free.pop(i)
        return bytearray(size)

    def _drop_buffers(self) -> None:
        """The upload is over: let go of the buffers kept for reuse (and a
        half-filled one). The budget stopped counting them when they were
        given back; anything still holding this writer must not hold them."""
        self._free.clear()
        self._buf = None

    def _give_back(self, buf: bytearray, acquired: int) -> None:
        self._free.append(buf)
        self._budget.release(acquired)

    def _send_part(self) -> None:
        """Hand the full buffer to a background UploadPart; the next write takes a new one."""
        assert self._buf is not None
        buf, fill, crc = self._buf, self._fill, self._crc
        self._buf, self._fill, self._crc = None, 0, 0
        if self._create is None:
            self._create = asyncio.ensure_future(self._create_upload())
        number, self._next_part = self._next_part, self._next_part + 1
        if number in self._drop:
            self._give_back(buf, len(buf))
            return
        task = asyncio.ensure_future(self._upload_part(number, buf, fill, crc))
        self._tasks.add(task)
        task.add_done_callback(self._part_done)

    def _part_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _create_upload(self) -> str:
        return await create_upload(self._s3, self._dest, self._content_type, self._metadata)

    async def _upload_part(self, number: int, buf: bytearray, fill: int, crc: int) -> None:
        acquired = len(buf)
        body = PartBody(buf, fill)
        try:
            assert self._create is not None
            # Shielded: cancelling this part must not cancel the shared create
            # call mid-flight (S3 would make an upload whose id we never learn).
            upload_id = await asyncio.shield(self._create)
            resp = await self._s3.upload_part(
                Bucket=self._dest.bucket,
                Key=self._dest.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body.as_body(),
                # Precomputed: botocore then computes no checksum itself and
                # sends the body as it is (no aws-chunked re-framing, no copy).
                ChecksumCRC32=b64_crc32(crc),
            )
            self._parts[number] = UploadedPart(number, str(resp["ETag"]), crc, fill)
            if self._on_part is not None:
                self._on_part()
        finally:
            # A failed part's error becomes the job's, and keeps this frame
            # and the SDK's (which hold the body): none may keep the buffer.
            body.release()
            self._give_back(buf, acquired)
            del buf

    async def _put_single(self) -> UploadResult:
        buf, fill, crc = self._buf, self._fill, self._crc
        acquired = 0 if buf is None else len(buf)
        body = None if buf is None else PartBody(buf, fill)
        try:
            resp = await self._s3.put_object(
                Bucket=self._dest.bucket,
                Key=self._dest.key,
                Body=b"" if body is None else body.as_body(),
                ContentType=self._content_type,
                ContentDisposition=content_disposition(self._dest.filename),
                ChecksumCRC32=b64_crc32(crc),
            )
        finally:
            if body is not None:  # as in _upload_part: a kept error must not hold the buffer
                body.release()
            if buf is not None:
                self._buf = None
                self._give_back(buf, acquired)
                del buf
        return UploadResult(str(resp.get("ETag", "")), 1, self._written, crc)
