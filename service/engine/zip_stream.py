"""Zip: one ordered ZIP stream from the ranges the reader fills.

zipstream-ng writes the format (headers, data descriptors, ZIP64 where an
entry or offset needs it, the central directory). Two things are ours:

1. ``ArchiveStream``, a small subclass, because ``add()`` cannot set an
   entry's date or mode (it stamps generation time and 0600, so no two runs
   agree) and ``len()`` misses the ZIP64 end records at exactly 65,535
   entries (it tests ``>`` where the footer tests ``>=``). We need the exact
   length before the first byte: it fixes the part size and the progress
   total, and the uploader refuses to complete an archive of another length.

2. ``ZipPump``, which drives the synchronous generator from asyncio without
   ever blocking the event loop: it steps the generator only when the next
   step cannot block (the current entry's next piece is already buffered, or
   the entry is complete), a bounded number of steps per turn. In STORED mode
   a step is a CRC-32 over at most 1 MiB (~0.3 ms) and a memcpy, so stepping
   on the loop beats a thread hand-off (~1 GiB/s vs 640 MiB/s with a thread,
   56 MiB/s with one to_thread per chunk; docs/DESIGN.md, "zipstream-ng"). Deflate is CPU
   bound (~44 MiB/s), so there the same step runs on one worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from zipstream import ZipStream
from zipstream.ng import ZipStreamInfo

from .budget import ByteSemaphore
from .models import Compression, LengthMismatchError, PlannedEntry
from .reader import RangeSlot

MAX_STEPS_PER_TURN = 64
MAX_BATCH_BYTES = 4 * 1024 * 1024
FILE_MODE = stat.S_IFREG | 0o644
_ZIP64_END_RECORDS = 56 + 20  # zip64 end of central directory record + locator


def dos_date_time(when: dt.datetime) -> tuple[int, int, int, int, int, int]:
    """S3's LastModified (UTC) as ZIP's local-time fields.

    UTC, not the machine's zone, so the same sources give the same archive
    bytes everywhere.
    """
    t = when.astimezone(dt.UTC) if when.tzinfo else when
    return (t.year, t.month, t.day, t.hour, t.minute, t.second)


class ArchiveStream(ZipStream):  # type: ignore[misc]
    """ZipStream with per-entry dates and modes, and an exact ``len()``.

    Relies on zipstream-ng's private ``_enqueue``/``_gen_file_entry`` hooks,
    hence the tight version pin in pyproject.toml; the test suite checks the
    length against the bytes produced at 65,534/65,535/65,536 entries.
    """

    def add_entry(
        self, data: Iterator[memoryview], arcname: str, size: int, modified: dt.datetime
    ) -> None:
        self._enqueue(iterable=data, size=size, arcname=arcname, date_time=dos_date_time(modified))

    def _gen_file_entry(
        self,
        *,
        iterable: Iterator[memoryview],
        size: int,
        arcname: str,
        date_time: tuple[int, int, int, int, int, int],
        compress_type: int | None = None,
        compress_level: int | None = None,
    ) -> Iterator[bytes | memoryview]:
        zinfo = ZipStreamInfo(arcname, date_time=date_time)
        zinfo.external_attr = FILE_MODE << 16
        zinfo.file_size = size
        zinfo.compress_type = self._compress_type if compress_type is None else compress_type
        stored = zinfo.compress_type == zipfile.ZIP_STORED
        zinfo._compresslevel = None if stored else (compress_level or self._compress_level)
        zinfo.header_offset = self._pos
        for chunk in zinfo._file_data(iterable):
            yield self._track(chunk)
        if zinfo.file_size != size:
            raise LengthMismatchError(
                f"{arcname}: read {zinfo.file_size} bytes, planned {size}; archive aborted"
            )
        self._filelist.append(zinfo)

    def __len__(self) -> int:
        length: int = super().__len__()
        num_files, files_size, cdfh_size = self._size_prog
        big = files_size > zipfile.ZIP64_LIMIT or cdfh_size > zipfile.ZIP64_LIMIT
        # The footer writes ZIP64 end records from 65,535 entries on; the
        # library's len() counts them only from 65,536.
        if num_files == zipfile.ZIP_FILECOUNT_LIMIT and not big:
            length += _ZIP64_END_RECORDS
        return length


class EntryFeed:
    """The iterator zipstream-ng pulls one entry's bytes from.

    It never waits: the pump only steps the generator when ``ready()`` says
    the next pull will find a piece (or the end). Pulling before data arrived
    is a bug, and raises instead of blocking the loop. Slots arrive from the
    reader through ``add`` and are dropped once drained.
    """

    __slots__ = ("_cursor", "_left", "_slots")

    def __init__(self, slot_count: int, cursor: Cursor) -> None:
        self._slots: list[RangeSlot] = []
        self._left = slot_count  # slots not yet drained, including those not yet added
        self._cursor = cursor

    def add(self, slot: RangeSlot) -> None:
        self._slots.append(slot)

    def __iter__(self) -> EntryFeed:
        return self

    def __next__(self) -> memoryview:
        while self._left:
            if not self._slots:
                raise RuntimeError("zip stream stepped before its data arrived")
            slot = self._slots[0]
            if slot.pieces:
                piece = slot.pieces.popleft()
                slot.consumed += len(piece)
                self._cursor.bytes_pulled += len(piece)
                if slot.drained:
                    self._drop_first()
                return piece
            if not slot.done:
                raise RuntimeError("zip stream stepped before its data arrived")
            self._drop_first()
        self._cursor.entry_finished()
        raise StopIteration

    def _drop_first(self) -> None:
        self._cursor.drained.append(self._slots.pop(0))
        self._left -= 1

    def discard(self) -> None:
        """The build stopped: let go of the ranges still queued here."""
        for slot in self._slots:
            slot.drop()
        self._slots.clear()

    def ready(self) -> bool:
        """Would ``next()`` return without waiting?"""
        for slot in self._slots:
            if slot.pieces:
                return True
            if not slot.done:
                return False
        # Every added slot is drained: ready only if no more are to come.
        return self._left == len(self._slots)


class Cursor:
    """Where the generator is: which entry it pulls from, what it has drained."""

    def __init__(self) -> None:
        self.entry = 0
        self.bytes_pulled = 0
        self.drained: list[RangeSlot] = []

    def entry_finished(self) -> None:
        self.entry += 1


class Sink(Protocol):
    async def write(self, data: bytes | memoryview, crc: int | None = None) -> None:
        """Take ``data``; ``crc`` is its CRC-32 when the stream already knows it."""
        ...


def build_stream(
    entries: Sequence[PlannedEntry], compression: Compression, range_size: int
) -> tuple[ArchiveStream, list[EntryFeed], Cursor]:
    """The archive stream with every entry queued, and the (empty) feeds behind it."""
    if compression is Compression.STORED:
        stream = ArchiveStream(sized=True)
    else:
        stream = ArchiveStream(compress_type=zipfile.ZIP_DEFLATED, compress_level=6)
    cursor = Cursor()
    feeds = [EntryFeed(-(-entry.size // range_size), cursor) for entry in entries]
    for entry, feed in zip(entries, feeds, strict=True):
        stream.add_entry(feed, entry.arcname, entry.size, entry.last_modified)
    return stream, feeds, cursor


class ZipPump:
    """Steps the archive generator as data arrives and writes its output to a sink."""

    def __init__(
        self,
        stream: Iterable[bytes | memoryview],
        feeds: Sequence[EntryFeed],
        cursor: Cursor,
        read_budget: ByteSemaphore,
        sink: Sink,
        *,
        on_step: Callable[[int, int], None],
        threaded: bool,
        chunk_crc: Callable[[], int | None] | None = None,
    ) -> None:
        self._gen: Iterator[bytes | memoryview] = iter(stream)
        # The CRC-32 of the chunk the generator just yielded, if it knows it
        # (``StoredArchive.yielded_crc``); handed to the sink with the chunk.
        self._chunk_crc = chunk_crc
        self._feeds = feeds
        self._cursor = cursor
        self._read_budget = read_budget
        self._sink = sink
        self._on_step = on_step
        self._wake = asyncio.Event()
        self._threaded = threaded
        self.archive_bytes = 0

    def notify(self) -> None:
        """Called by the reader whenever a piece lands."""
        self._wake.set()

    def ready(self) -> bool:
        i = self._cursor.entry
        return i >= len(self._feeds) or self._feeds[i].ready()

    async def run(self) -> None:
        executor = ThreadPoolExecutor(1, "zip-deflate") if self._threaded else None
        try:
            while True:
                await self._wait_ready()
                chunks, finished = await self._steps(executor)
                await self._write(chunks)
                self._release_drained()
                self._on_step(self._cursor.bytes_pulled, self._cursor.entry)
                if finished:
                    return
                await asyncio.sleep(0)  # let the readers and uploads run
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)

    async def _write(self, chunks: list[tuple[bytes | memoryview, int | None]]) -> None:
        """Write a batch to the sink; its views are released once it is written
        or the write failed.

        The sink copies each chunk. zipstream-ng's generator frames still hold
        the last chunk they yielded until the next step; releasing the view
        lets its range buffer go when the budget does, not one range later.
        On a failure this frame lives on in the error's traceback: released
        views in it hold no memory.
        """
        try:
            for chunk, crc in chunks:
                await self._sink.write(chunk, crc)
                self.archive_bytes += len(chunk)
        finally:
            for chunk, _ in chunks:
                if isinstance(chunk, memoryview):
                    chunk.release()

    def discard(self) -> None:
        """The build stopped: let go of every range still held and of the generator.

        Called by whoever made the pump once its run has ended (the deflate
        thread too), whether the run failed, was cancelled or never started.
        The budget is given back with the job's lease; this gives back the
        memory, which a kept error could otherwise reach through the build's
        frames (docs/DESIGN.md, "Memory").
        """
        close = getattr(self._gen, "close", None)
        if close is not None:
            # Its frames hold the pieces they were stepping through. Never
            # raises in practice; if it did, the build's own error is the one
            # to report, not this one.
            with contextlib.suppress(Exception):
                close()
        for feed in self._feeds:
            feed.discard()
        for slot in self._cursor.drained:
            slot.drop()
        self._cursor.drained.clear()

    async def _wait_ready(self) -> None:
        while not self.ready():
            self._wake.clear()
            if self.ready():
                return
            await self._wake.wait()

    def _step_batch(self) -> tuple[list[tuple[bytes | memoryview, int | None]], bool]:
        """A few steps, each guaranteed not to block.

        Bounded in count (loop latency) and in bytes: STORED output is views
        of budgeted range buffers, but deflate output is new memory that the
        budget does not cover until the sink has copied it.
        """
        out: list[tuple[bytes | memoryview, int | None]] = []
        size = 0
        chunk_crc = self._chunk_crc
        for _ in range(MAX_STEPS_PER_TURN):
            if size >= MAX_BATCH_BYTES or not self.ready():
                return out, False
            try:
                chunk = next(self._gen)
            except StopIteration:
                return out, True
            if chunk:  # deflate yields many empty chunks
                out.append((chunk, None if chunk_crc is None else chunk_crc()))
                size += len(chunk)
        return out, False

    async def _steps(
        self, executor: ThreadPoolExecutor | None
    ) -> tuple[list[tuple[bytes | memoryview, int | None]], bool]:
        if executor is None:
            return self._step_batch()
        return await asyncio.get_running_loop().run_in_executor(executor, self._step_batch)

    def _release_drained(self) -> None:
        """Give a range's read-ahead budget and its buffer back once the stream
        has copied all of it."""
        drained, self._cursor.drained = self._cursor.drained, []
        for slot in drained:
            self._read_budget.release(slot.length)
            slot.drop()  # the memory goes with the budget
