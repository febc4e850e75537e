"""Read: many ranged GETs in flight, across file boundaries, in archive order.

Every source is cut into ranges (about 8 MiB; a small object is one range).
One scheduler walks the ranges in archive order and, for each, waits for
read-ahead budget and a connection slot, then starts its GET. Granting in
archive order is what keeps this deadlock-free: the range the ZIP stream
needs next always got its budget before any range after it.

A range is read straight into one preallocated buffer (``readinto``, no
join copies) and handed over in pieces of about 1 MiB as they arrive, so the
ZIP stream can start on a range before its last byte is in.

Failure handling is per range: a broken connection mid-body resumes from
the byte where it broke, with backoff, without restarting the job. If-Match
pins the ETag from the plan, so an overwritten source fails the job loudly
(SourceChangedError) instead of producing an archive with mixed versions;
and because not every S3-compatible server honours If-Match, every answer's
ETag and Content-Range are checked against the plan too (response_check.py).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import aiohttp
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from ..s3_ranged_get import ranged_get_for
from ..units import MiB
from .budget import ByteSemaphore
from .layout import byte_ranges
from .models import PlannedEntry, ReadFailedError, SourceChangedError
from .response_check import changed_reason, check_get_response

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


PIECE = 1 * MiB

# Errors after which the same range is simply asked for again from where it
# broke. botocore has already retried 5xx/throttling for the request itself;
# these are the failures that happen while the body streams.
RETRYABLE = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)


class RangeSlot:
    """One range of one entry: filled by its GET, drained by the ZIP stream.

    ``pieces`` is appended by the reader and popped by the zip stream, possibly
    from the zip worker thread (deflate); deque append/popleft are atomic.
    ``done`` is set only after the last piece is appended. ``buffer`` is the
    range's memory (made when its GET starts); the pieces are views of it.
    """

    __slots__ = ("buffer", "consumed", "done", "end", "entry", "pieces", "start")

    def __init__(self, entry: PlannedEntry, start: int, end: int) -> None:
        self.entry = entry
        self.start = start
        self.end = end
        self.pieces: deque[memoryview] = deque()
        self.done = False
        self.consumed = 0
        self.buffer: memoryview | None = None

    def release_buffer(self) -> None:
        """Release the view the range is read into: the reader's frames hold it.

        A stopped build's error keeps the frames its traceback passed through,
        and with them every local; a released view in them holds no memory.
        Views already handed out (the pieces) stay valid, and the range's
        memory goes when the last of them does (docs/DESIGN.md, "Memory").
        """
        if self.buffer is not None:
            self.buffer.release()
            self.buffer = None

    def drop(self) -> None:
        """Let go of the range's memory: its budget was given back, or the build stopped."""
        self.pieces.clear()
        self.release_buffer()

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def drained(self) -> bool:
        return self.done and not self.pieces


class RangeReader:
    """Fills ``RangeSlot``s in archive order under a read-ahead budget.

    Slots are created only when their GET is about to start and handed to
    ``on_slot``: with 200,000 entries, creating them all up front cost about
    900 bytes per entry; this way their number is bounded by the read window.
    """

    def __init__(
        self,
        s3: S3Client,
        entries: Sequence[PlannedEntry],
        budget: ByteSemaphore,
        *,
        range_size: int,
        concurrency: int,
        attempts: int,
        on_slot: Callable[[int, RangeSlot], None],
        on_data: Callable[[], None],
        start: tuple[int, int] = (0, 0),
        end: tuple[int, int] | None = None,
    ) -> None:
        # botocore's get_object or the fast signed-GET path, chosen once per
        # client where it was made (service/s3_ranged_get.py).
        self._get = ranged_get_for(s3)
        # (entry index, byte in it): a resumed archive reads nothing before
        # its checkpoint, so its first range may begin mid-entry; a fan-out
        # worker reads nothing at or after its range's end (docs/resume.md).
        self._start = start
        self._end = end if end is not None else (len(entries), 0)
        self._entries = entries
        self._budget = budget
        self._range_size = range_size
        self._connections = asyncio.Semaphore(concurrency)
        self._attempts = attempts
        self._on_slot = on_slot
        self._on_data = on_data

    async def run(self) -> None:
        """Start every range's GET in archive order; return when all are read."""
        first_entry, first_byte = self._start
        last_entry, last_byte = self._end
        async with asyncio.TaskGroup() as tg:
            for index in range(first_entry, min(last_entry + 1, len(self._entries))):
                entry = self._entries[index]
                begin = first_byte if index == first_entry else 0
                limit = last_byte if index == last_entry else entry.size
                for start, end in byte_ranges(limit, self._range_size, begin):
                    slot = RangeSlot(entry, start, end)
                    await self._budget.acquire(slot.length)
                    await self._connections.acquire()
                    self._on_slot(index, slot)
                    tg.create_task(self._fetch(slot))

    async def _fetch(self, slot: RangeSlot) -> None:
        """Read one range into a buffer made here, and let go of it here if the
        read does not finish: a failed or cancelled fetch's frames live on in
        the build's error (the pieces already queued are the consumer's to drop)."""
        slot.buffer = memoryview(bytearray(slot.length))
        try:
            await self._fetch_with_retries(slot, slot.buffer)
        except BaseException:
            slot.release_buffer()
            raise
        finally:
            self._connections.release()

    async def _fetch_with_retries(self, slot: RangeSlot, view: memoryview) -> None:
        filled = 0
        failures = 0
        while True:
            try:
                filled = await self._read_into(slot, view, filled)
                return
            except RETRYABLE as err:
                failures += 1
                if failures >= self._attempts:
                    raise ReadFailedError(
                        f"reading s3://{slot.entry.source.bucket}/{slot.entry.source.key} "
                        f"bytes {slot.start + filled}-{slot.end - 1} failed "
                        f"{failures} times: {type(err).__name__}"
                    ) from err
                # Full jitter backoff; resume from the last byte that arrived.
                await asyncio.sleep(random.uniform(0, min(5.0, 0.1 * 2**failures)))
                filled = self._filled_so_far(slot)

    @staticmethod
    def _filled_so_far(slot: RangeSlot) -> int:
        """Bytes already handed over (pieces queued + consumed) survive a retry."""
        return slot.consumed + sum(len(p) for p in slot.pieces)

    async def _read_into(self, slot: RangeSlot, view: memoryview, filled: int) -> int:
        src = slot.entry.source
        first, last = slot.start + filled, slot.end - 1
        try:
            answer = await self._get.get(src.bucket, src.key, first, last, slot.entry.etag)
        except ClientError as err:
            why = changed_reason(str(err.response.get("Error", {}).get("Code", "")))
            if why is not None:
                raise SourceChangedError(src.bucket, src.key, why) from err
            raise
        body = answer.body
        try:
            check_get_response(slot.entry, first, last, answer.fields)
        except BaseException:
            body.close()  # not read: never back to the pool half-read
            raise
        handed_over = filled
        try:
            while filled < slot.length:
                # Released after the call: the frames below it (ours, the SDK's)
                # would otherwise keep the whole range alive in a kept error.
                with view[filled:] as target:
                    n = await body.readinto(target)
                if n == 0:
                    raise IncompleteReadError(actual_bytes=filled, expected_bytes=slot.length)
                filled += n
                if filled - handed_over >= PIECE or filled == slot.length:
                    slot.pieces.append(view[handed_over:filled])
                    handed_over = filled
                    self._on_data()
        finally:
            # A fully read body goes back to the connection pool; a broken one
            # is closed so the pool never hands out a half-read connection.
            if filled == slot.length:
                body.release()
            else:
                body.close()
            # Whatever arrived before a failure is kept; only the rest is re-read.
            if handed_over < filled:
                slot.pieces.append(view[handed_over:filled])
                self._on_data()
        slot.done = True
        self._on_data()
        return filled
