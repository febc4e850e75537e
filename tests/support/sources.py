"""Sources and sinks that are not S3, for driving the ZIP layer and the engine cheaply.

Multi-GiB archives through moto would take minutes and tens of GiB of RAM
(moto builds the whole object at Complete). These helpers produce the bytes
from one repeated buffer instead (no copies: every piece is a view of it) and
write the archive into a sink that counts, CRCs and optionally keeps a file,
so the readers in ``archive_check`` can still open the result.

Two levels:

* ``pump_synthetic`` drives ``build_stream`` + ``ZipPump`` directly with
  ``RangeSlot``s it fills itself, the way ``RangeReader`` does (archive order,
  under a read budget).
* ``SyntheticS3`` is a tiny in-process stand-in for the handful of S3 calls the
  engine makes, so ``build_zip`` itself (planner, reader, pump, uploader,
  budget) can run on a > 4 GiB archive. It is not a botocore mock: it never
  sees HTTP, and tests that talk to an endpoint use moto instead.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import os
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from botocore.exceptions import ClientError

from service.engine.budget import ByteSemaphore
from service.engine.checkpoint import SUFFIX as CHECKPOINT_SUFFIX
from service.engine.crc import crc32_combine
from service.engine.models import Compression, PlannedEntry, SourceObject
from service.engine.reader import PIECE, RangeSlot
from service.engine.zip_stream import ArchiveStream, ZipPump, build_stream
from service.units import MiB

GiB = 1024 * MiB
# A fixed, timezone-aware date (what S3's LastModified looks like), so runs agree.
FIXED_DATE = dt.datetime(2024, 5, 17, 13, 45, 30, tzinfo=dt.UTC)


def pattern(seed: int, size: int = MiB) -> bytes:
    """Position- and seed-dependent bytes; a repeat of it never looks like another seed's."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@dataclass(frozen=True, slots=True)
class RepeatedContent:
    """``size`` bytes made of ``block`` repeated; any range is served as views of ``block``."""

    size: int
    block: bytes = field(repr=False)

    def pieces(self, start: int, end: int, piece: int = PIECE) -> list[memoryview]:
        """Views covering ``[start, end)``, each at most ``piece`` bytes."""
        view = memoryview(self.block)
        out = []
        pos = start
        while pos < end:
            offset = pos % len(self.block)
            n = min(end - pos, len(self.block) - offset, piece)
            out.append(view[offset : offset + n])
            pos += n
        return out

    def crc32(self) -> int:
        crc = 0
        for p in self.pieces(0, self.size, 16 * MiB):
            crc = zlib.crc32(p, crc)
        return crc

    def materialize(self) -> bytes:
        """The whole content; only for small sizes."""
        return b"".join(self.pieces(0, self.size))


def repeated(size: int, seed: int = 0, block_size: int = MiB) -> RepeatedContent:
    return RepeatedContent(size, pattern(seed, min(block_size, max(size, 1))))


def planned_entry(
    arcname: str, size: int, *, modified: dt.datetime = FIXED_DATE, key: str | None = None
) -> PlannedEntry:
    return PlannedEntry(
        source=SourceObject("synthetic", key or arcname),
        arcname=arcname,
        size=size,
        etag='"synthetic"',
        last_modified=modified,
    )


class CountingSink:
    """A ``Sink`` that counts bytes, CRCs the archive and optionally writes it to a file.

    It copies nothing it does not have to: the pump hands views of range
    buffers, which are only valid until the pump releases them, and a real
    sink (the part writer) copies them at once, as this one does into the file.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.bytes = 0
        self.crc = 0
        self.writes = 0
        self.known_crc_bytes = 0  # bytes that came with their CRC-32
        self._file: BinaryIO | None = path.open("wb") if path is not None else None

    async def write(self, data: bytes | memoryview, crc: int | None = None) -> None:
        """``crc``, when the stream hands one over, must be the CRC-32 of ``data``."""
        self.bytes += len(data)
        own = zlib.crc32(data)
        if crc is not None:
            assert crc == own, "the stream handed over a wrong chunk CRC"
            self.known_crc_bytes += len(data)
        self.crc = zlib.crc32(data, self.crc)
        self.writes += 1
        if self._file is not None:
            self._file.write(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(slots=True)
class PumpRun:
    stream: ArchiveStream
    predicted_length: int | None
    archive_bytes: int
    read_budget_peak: int
    steps: list[tuple[int, int]]


async def feed_ranges(
    entries: Sequence[PlannedEntry],
    contents: Sequence[RepeatedContent],
    feeds: Sequence[Any],
    budget: ByteSemaphore,
    range_size: int,
    notify: Callable[[], None],
) -> None:
    """What ``RangeReader`` does, minus S3: slots in archive order under the read budget.

    Each slot gets its budget before it exists (so the pump's release of
    ``slot.length`` balances), then its pieces arrive one by one with a yield
    in between, so the pump really runs while data lands.
    """
    for index, (entry, content) in enumerate(zip(entries, contents, strict=True)):
        for start in range(0, entry.size, range_size):
            slot = RangeSlot(entry, start, min(start + range_size, entry.size))
            await budget.acquire(slot.length)
            feeds[index].add(slot)
            for piece in content.pieces(slot.start, slot.end):
                slot.pieces.append(piece)
                notify()
                await asyncio.sleep(0)
            slot.done = True
            notify()


async def pump_synthetic(
    entries: Sequence[PlannedEntry],
    contents: Sequence[RepeatedContent],
    sink: Any,
    *,
    compression: Compression = Compression.STORED,
    range_size: int = 8 * MiB,
    read_window: int = 32 * MiB,
    prefeed: bool = False,
) -> PumpRun:
    """Build the archive of ``entries`` into ``sink`` through the engine's ZIP layer.

    ``prefeed`` delivers every range before the pump starts (the window must
    hold them all) instead of while it runs.
    """
    stream, feeds, cursor = build_stream(entries, compression, range_size)
    predicted = len(stream) if compression is Compression.STORED else None
    budget = ByteSemaphore(read_window)
    steps: list[tuple[int, int]] = []
    pump = ZipPump(
        stream,
        feeds,
        cursor,
        budget,
        sink,
        on_step=lambda b, f: steps.append((b, f)),
        threaded=compression is not Compression.STORED,
    )
    feed = feed_ranges(entries, contents, feeds, budget, range_size, pump.notify)
    if prefeed:
        await feed
        await pump.run()
    else:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(feed)
            tg.create_task(pump.run())
    return PumpRun(stream, predicted, pump.archive_bytes, budget.peak, steps)


# ------------------------------------------------------------ the engine, without S3


def _client_error(status: int, code: str, operation: str) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


class _Body:
    """What the reader uses of aiobotocore's StreamingBody: readinto, release, close."""

    def __init__(self, pieces: list[memoryview]) -> None:
        self._pieces = pieces
        self.closed = False

    async def readinto(self, buf: memoryview) -> int:
        await asyncio.sleep(0)  # a network read always yields
        if not self._pieces:
            return 0
        piece = self._pieces[0]
        n = min(len(buf), len(piece))
        buf[:n] = piece[:n]
        if n == len(piece):
            self._pieces.pop(0)
        else:
            self._pieces[0] = piece[n:]
        return n

    def release(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


class _WholeBody:
    """A whole small object's body: ``read()`` all of it."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self) -> bytes:
        return self._data


async def _pieces(body: Any) -> AsyncIterator[bytes | memoryview]:
    """An upload body the way the HTTP client sends it: bytes, or an async
    iterable of pieces (the engine's zero-copy ``PartBody``), or a file-like."""
    if isinstance(body, bytes | bytearray | memoryview):
        yield memoryview(body).cast("B")
    elif hasattr(body, "__aiter__"):
        async for piece in body:
            await asyncio.sleep(0)
            yield piece
    else:
        while chunk := body.read(MiB):
            yield chunk


@dataclass(slots=True)
class SyntheticObject:
    content: RepeatedContent
    last_modified: dt.datetime = FIXED_DATE

    @property
    def etag(self) -> str:
        return f'"{zlib.crc32(self.content.block):08x}-{self.content.size}"'


def _crc_b64(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")


class SyntheticS3:
    """The S3 calls ``build_zip`` makes, served from repeated buffers into one file.

    Uploaded parts are written at their offset in ``out_path`` (every part but
    the last has the same size), so parts finishing out of order still give
    the archive's bytes in order, and the readers can open the file afterwards.
    """

    def __init__(self, out_path: Path) -> None:
        self.objects: dict[tuple[str, str], SyntheticObject] = {}
        self.out_path = out_path
        self.parts: dict[int, int] = {}
        self.part_size: int | None = None
        self.completed = False
        self.aborted = False
        self.calls: list[str] = []
        # S3's additional checksums, checked as S3 does (zlib over the bytes
        # received; docs: checking-object-integrity): per part, and the whole
        # object at completion for ChecksumType FULL_OBJECT.
        self.part_crcs: dict[int, int] = {}
        self.object_crc32: int | None = None
        self.corrupt_part: int | None = None  # flip a byte of this part "in transit"
        # Small whole objects (resume checkpoints), never mixed into the archive file.
        self.small: dict[tuple[str, str], bytes] = {}
        self.upload_key = ""
        self._fd: int | None = None

    def add(self, bucket: str, key: str, content: RepeatedContent) -> SourceObject:
        self.objects[(bucket, key)] = SyntheticObject(content)
        return SourceObject(bucket, key)

    def _object(self, bucket: str, key: str, operation: str) -> SyntheticObject:
        try:
            return self.objects[(bucket, key)]
        except KeyError:
            raise _client_error(404, "NoSuchKey", operation) from None

    async def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.calls.append("HeadObject")
        obj = self._object(Bucket, Key, "HeadObject")
        return {
            "ContentLength": obj.content.size,
            "ETag": obj.etag,
            "LastModified": obj.last_modified,
        }

    async def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("ListObjectsV2")
        prefix = kwargs.get("Prefix", "")
        contents = [
            {
                "Key": key,
                "Size": obj.content.size,
                "ETag": obj.etag,
                "LastModified": obj.last_modified,
            }
            for (bucket, key), obj in sorted(self.objects.items())
            if bucket == kwargs["Bucket"]
            and key.startswith(prefix)
            and "/" not in key[len(prefix) :]
        ]
        return {"Contents": contents, "IsTruncated": False}

    async def get_object(
        self,
        *,
        Bucket: str,
        Key: str,
        Range: str | None = None,
        IfMatch: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append("GetObject")
        if Range is None:  # a whole small object: a resume checkpoint
            if (Bucket, Key) not in self.small:
                raise _client_error(404, "NoSuchKey", "GetObject")
            return {"Body": _WholeBody(self.small[(Bucket, Key)])}
        obj = self._object(Bucket, Key, "GetObject")
        if IfMatch is not None and IfMatch != obj.etag:
            raise _client_error(412, "PreconditionFailed", "GetObject")
        first_s, last_s = Range.removeprefix("bytes=").split("-")
        first, last = int(first_s), min(int(last_s), obj.content.size - 1)
        if first >= obj.content.size:
            raise _client_error(416, "InvalidRange", "GetObject")
        # The headers S3 sends with a 206, which the reader checks against its plan.
        return {
            "Body": _Body(obj.content.pieces(first, last + 1, 256 * 1024)),
            "ETag": obj.etag,
            "ContentRange": f"bytes {first}-{last}/{obj.content.size}",
            "ContentLength": last - first + 1,
        }

    async def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("CreateMultipartUpload")
        self.create_kwargs = kwargs
        self.upload_key = str(kwargs["Key"])
        self._fd = os.open(self.out_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        return {"UploadId": "synthetic-upload"}

    async def upload_part(
        self,
        *,
        Bucket: str,
        Key: str,
        UploadId: str,
        PartNumber: int,
        Body: bytes | bytearray,
        ChecksumCRC32: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append("UploadPart")
        assert self._fd is not None and UploadId == "synthetic-upload"
        if self.part_size is None:
            # Parts start in order (the writer creates their tasks in order), so
            # the first call is part 1, which is full-sized unless it is the only one.
            assert PartNumber == 1, f"part {PartNumber} arrived before part 1"
            self.part_size = len(Body)
        assert len(Body) <= self.part_size
        offset = (PartNumber - 1) * self.part_size
        size = 0
        crc = 0
        async for piece in _pieces(Body):
            if PartNumber == self.corrupt_part and size == 0:
                piece = bytes([piece[0] ^ 1]) + bytes(piece[1:])
            os.pwrite(self._fd, piece, offset + size)
            crc = zlib.crc32(piece, crc)
            size += len(piece)
        if ChecksumCRC32 is not None and _crc_b64(crc) != ChecksumCRC32:
            raise _client_error(400, "BadDigest", "UploadPart")
        self.part_crcs[PartNumber] = crc
        self.parts[PartNumber] = size
        return {"ETag": f'"part-{PartNumber}"'}

    async def complete_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("CompleteMultipartUpload")
        numbers = [p["PartNumber"] for p in kwargs["MultipartUpload"]["Parts"]]
        assert numbers == list(range(1, len(numbers) + 1)) == sorted(self.parts)
        sizes = [self.parts[n] for n in numbers]
        assert all(s == sizes[0] for s in sizes[:-1]), "only the last part may differ"
        if kwargs.get("ChecksumType") == "FULL_OBJECT":
            assert self._fd is not None
            whole = 0
            for n in numbers:
                if self.out_path == Path(os.devnull):
                    # Nothing kept to re-read (memory tests): combine the CRCs this
                    # fake computed from the bytes it received, as S3 itself does.
                    whole = crc32_combine(whole, self.part_crcs[n], sizes[n - 1])
                else:  # re-read what was received: independent of the parts' CRCs
                    part = os.pread(self._fd, sizes[n - 1], (n - 1) * sizes[0])
                    whole = zlib.crc32(part, whole)
            if kwargs.get("ChecksumCRC32") != _crc_b64(whole):
                raise _client_error(400, "BadDigest", "CompleteMultipartUpload")
            self.object_crc32 = whole
        self._close()
        self.completed = True
        return {"ETag": f'"synthetic-{len(numbers)}"'}

    async def abort_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("AbortMultipartUpload")
        self._close()
        self.aborted = True
        return {}

    async def put_object(self, *, Body: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("PutObject")
        if kwargs["Key"].endswith(CHECKPOINT_SUFFIX):  # kept apart from the archive
            self.small[(kwargs["Bucket"], kwargs["Key"])] = bytes(Body)
            return {"ETag": '"synthetic-checkpoint"'}
        crc = 0
        with self.out_path.open("wb") as out:
            async for piece in _pieces(Body):
                out.write(piece)
                crc = zlib.crc32(piece, crc)
        if "ChecksumCRC32" in kwargs and kwargs["ChecksumCRC32"] != _crc_b64(crc):
            raise _client_error(400, "BadDigest", "PutObject")
        self.object_crc32 = crc
        self.completed = True
        return {"ETag": '"synthetic-single"'}

    async def delete_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.calls.append("DeleteObject")
        self.small.pop((Bucket, Key), None)
        return {}

    async def list_multipart_uploads(self, *, Bucket: str, Prefix: str = "", **_: Any) -> Any:
        """The one upload this fake makes, while it is neither completed nor aborted."""
        self.calls.append("ListMultipartUploads")
        live = self._fd is not None and not (self.completed or self.aborted)
        uploads = [{"Key": self.upload_key, "UploadId": "synthetic-upload"}] if live else []
        return {
            "Uploads": [u for u in uploads if u["Key"].startswith(Prefix)],
            "IsTruncated": False,
        }

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ------------------------------------------------------------ where big archives go

SHM = Path("/dev/shm")
# Leave this much memory to everything else on the machine when a big archive
# goes to tmpfs instead of disk.
SHM_HEADROOM = 8 * GiB


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def big_file_dir(fallback: Path, needed: int) -> Path:
    """tmpfs when it can take ``needed`` bytes with room to spare, else ``fallback`` (disk).

    A 4 GiB archive is written once and read by five readers; on tmpfs that
    costs seconds, on a busy shared disk a minute. The caller deletes the file.
    """
    try:
        free = os.statvfs(SHM).f_bavail * os.statvfs(SHM).f_frsize
    except OSError:
        return fallback
    if free > needed + GiB and _mem_available() > needed + SHM_HEADROOM:
        return SHM
    return fallback
