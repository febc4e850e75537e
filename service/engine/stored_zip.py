"""A STORED ZIP writer that can start at any byte of the archive.

Why our own writer (zipstream-ng still writes deflate archives): resuming an
archive means producing bytes ``[offset, end)`` without the bytes before
``offset``, and the rest of the stream depends on them only through the
CRC-32s of the entries already written. zipstream-ng always starts at byte 0
and computes every CRC itself. A STORED archive with data descriptors makes
that dependency small and explicit (docs/resume.md):

* local headers carry no CRC and no sizes (general purpose bit 3, APPNOTE
  4.4.4), so every header, and so every offset, is known from the plan;
* an entry's CRC appears only in its data descriptor (APPNOTE 4.3.9) and its
  central directory record (4.3.12);
* the end records (4.3.14-4.3.16) depend only on counts and offsets.

So the writer needs, at a resume offset, the CRCs of the entries before it
and the running CRC of the entry it is in. It records both as it goes
(``crcs`` and ``snapshots``). Its output is byte-identical to zipstream-ng's
sized STORED stream (tests/unit/test_stored_zip.py compares them), so
resumed, uninterrupted and pre-existing archives are the same bytes.
"""

from __future__ import annotations

import itertools
import struct
import sys
from array import array
from bisect import bisect_right
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass

from .crc import crc32, crc32_combine, fast_combine
from .models import PlannedEntry
from .zip_stream import FILE_MODE, Cursor, EntryFeed, dos_date_time

ZIP64_LIMIT = (1 << 31) - 1  # zipfile's (and zipstream-ng's) switch-over point
ENTRY_COUNT_LIMIT = 0xFFFF
# zipstream-ng gives an entry a ZIP64 local header when size * 1.05 could
# pass ZIP64_LIMIT (it overestimates for compression); we match it exactly.
_ZIP64_ESTIMATE = 1.05
_VERSION = 20  # 2.0: STORED, folders (APPNOTE 4.4.3.2)
_VERSION_ZIP64 = 45  # 4.5: ZIP64 format extensions
_MADE_BY_UNIX = 3  # APPNOTE 4.4.2.2: upper byte of "version made by"
_FLAG_DESCRIPTOR = 1 << 3  # APPNOTE 4.4.4 bit 3: CRC and sizes in the data descriptor
_FLAG_UTF8 = 1 << 11  # APPNOTE 4.4.4 bit 11 / appendix D: name is UTF-8

_LOCAL = struct.Struct("<4s2B4HL2L2H")  # APPNOTE 4.3.7 local file header
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # APPNOTE 4.3.12 central directory header
_DESCRIPTOR = struct.Struct("<4sLLL")  # APPNOTE 4.3.9.1 data descriptor
_DESCRIPTOR64 = struct.Struct("<4sLQQ")  # 4.3.9.2: 8-byte sizes when the entry is ZIP64
_LOCAL_ZIP64_EXTRA = struct.Struct("<HHQQ")  # APPNOTE 4.5.3 ZIP64 extended information
_END64 = struct.Struct("<4sQ2H2L4Q")  # APPNOTE 4.3.14 zip64 end of central directory
_LOCATOR64 = struct.Struct("<4sLQL")  # APPNOTE 4.3.15 zip64 end of central dir locator
_END = struct.Struct("<4s4H2LH")  # APPNOTE 4.3.16 end of central directory record


def _name(entry: PlannedEntry) -> tuple[bytes, int]:
    """Encoded name and its flag: ASCII when it can be, else UTF-8 with bit 11."""
    try:
        return entry.arcname.encode("ascii"), _FLAG_DESCRIPTOR
    except UnicodeEncodeError:
        return entry.arcname.encode("utf-8"), _FLAG_DESCRIPTOR | _FLAG_UTF8


def _dos(entry: PlannedEntry) -> tuple[int, int]:
    """(date, time) in MS-DOS form (APPNOTE 4.4.6), clamped to 1980-2107."""
    y, mo, d, h, mi, s = min(
        max(dos_date_time(entry.last_modified), (1980, 1, 1, 0, 0, 0)), (2107, 12, 31, 23, 59, 59)
    )
    return (y - 1980) << 9 | mo << 5 | d, h << 11 | mi << 5 | s // 2


def local_zip64(size: int) -> bool:
    """Does this entry get a ZIP64 local header and an 8-byte-size descriptor?"""
    return size * _ZIP64_ESTIMATE > ZIP64_LIMIT


def local_header(entry: PlannedEntry) -> bytes:
    """The local file header: CRC and sizes zero, they follow in the descriptor.

    With bit 3 set the header's CRC and sizes are zero (APPNOTE 4.4.4); a
    ZIP64 entry still sets both sizes to 0xFFFFFFFF and carries a ZIP64 extra
    field with zero sizes (4.5.3), which every reader we test accepts.
    """
    name, flags = _name(entry)
    date, time = _dos(entry)
    zip64 = local_zip64(entry.size)
    extra = _LOCAL_ZIP64_EXTRA.pack(1, 16, 0, 0) if zip64 else b""
    size_field = 0xFFFFFFFF if zip64 else 0
    version = _VERSION_ZIP64 if zip64 else _VERSION
    head = _LOCAL.pack(
        b"PK\x03\x04", version, 0, flags, 0, time, date, 0, size_field, size_field,
        len(name), len(extra),
    )  # fmt: skip
    return head + name + extra


def data_descriptor(crc: int, size: int, zip64: bool) -> bytes:
    """APPNOTE 4.3.9: signature, CRC, compressed and uncompressed size (equal: STORED)."""
    if zip64:
        return _DESCRIPTOR64.pack(b"PK\x07\x08", crc, size, size)
    return _DESCRIPTOR.pack(b"PK\x07\x08", crc, size, size)


def descriptor_length(size: int) -> int:
    return _DESCRIPTOR64.size if local_zip64(size) else _DESCRIPTOR.size


def central_record(entry: PlannedEntry, crc: int, offset: int) -> bytes:
    """APPNOTE 4.3.12; sizes and offset move to a ZIP64 extra when they do not fit (4.5.3)."""
    name, flags = _name(entry)
    date, time = _dos(entry)
    values: list[int] = []
    size = entry.size
    if size > ZIP64_LIMIT:
        values += [size, size]
        size = 0xFFFFFFFF
    if offset > ZIP64_LIMIT:
        values.append(offset)
        offset = 0xFFFFFFFF
    extra = struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values) if values else b""
    version = _VERSION_ZIP64 if values or local_zip64(entry.size) else _VERSION
    head = _CENTRAL.pack(
        b"PK\x01\x02", version, _MADE_BY_UNIX, version, 0, flags, 0, time, date, crc, size,
        size, len(name), len(extra), 0, 0, 0, FILE_MODE << 16, offset,
    )  # fmt: skip
    return head + name + extra


def central_record_length(entry: PlannedEntry, offset: int) -> int:
    extras = (2 if entry.size > ZIP64_LIMIT else 0) + (1 if offset > ZIP64_LIMIT else 0)
    return _CENTRAL.size + len(_name(entry)[0]) + (4 + 8 * extras if extras else 0)


def end_records(count: int, cd_offset: int, cd_size: int) -> bytes:
    """End of central directory, preceded by the ZIP64 pair when a field overflows.

    APPNOTE 4.4.1.4: a value that does not fit its 2- or 4-byte field is
    written as all ones and the real value goes in the zip64 record; like
    zipstream-ng (and zipfile) the pair is written from 65,535 entries on.
    """
    out = b""
    if count >= ENTRY_COUNT_LIMIT or cd_offset > ZIP64_LIMIT or cd_size > ZIP64_LIMIT:
        end64_at = cd_offset + cd_size
        out = _END64.pack(
            b"PK\x06\x06", 44, _VERSION_ZIP64, _VERSION_ZIP64, 0, 0, count, count, cd_size,
            cd_offset,
        ) + _LOCATOR64.pack(b"PK\x06\x07", 0, end64_at, 1)  # fmt: skip
        count = min(count, 0xFFFF)
        cd_size = min(cd_size, 0xFFFFFFFF)
        cd_offset = min(cd_offset, 0xFFFFFFFF)
    return out + _END.pack(b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0)


class StoredLayout:
    """Every offset of a STORED archive, from the plan alone.

    One 8-byte offset per entry (``array``, not objects: 200,000 entries
    cost 1.6 MB), from which headers and records are rebuilt on demand.
    """

    def __init__(self, entries: Sequence[PlannedEntry]) -> None:
        self.entries = entries
        self.offsets = array("Q")
        pos = 0
        for entry in entries:
            self.offsets.append(pos)
            pos += self.header_length(entry) + entry.size + descriptor_length(entry.size)
        self.cd_offset = pos
        self.cd_size = sum(
            central_record_length(e, o) for e, o in zip(entries, self.offsets, strict=True)
        )
        self.length = pos + self.cd_size + len(end_records(len(entries), pos, self.cd_size))

    @staticmethod
    def header_length(entry: PlannedEntry) -> int:
        extra = _LOCAL_ZIP64_EXTRA.size if local_zip64(entry.size) else 0
        return _LOCAL.size + len(_name(entry)[0]) + extra

    def data_offset(self, index: int) -> int:
        return self.offsets[index] + self.header_length(self.entries[index])

    def entry_at(self, offset: int) -> int:
        """The entry whose header, data or descriptor holds ``offset`` (len(entries) past them)."""
        if offset >= self.cd_offset:
            return len(self.entries)
        return bisect_right(self.offsets, offset) - 1

    def source_before(self, offset: int) -> int:
        """Source (data) bytes of every entry that lie before archive ``offset``."""
        index = self.entry_at(offset)
        done = sum(e.size for e in itertools.islice(self.entries, index))
        return done + self.data_before(index, offset)

    def data_before(self, index: int, offset: int) -> int:
        """How many of entry ``index``'s data bytes lie before archive ``offset``."""
        if index >= len(self.entries):
            return 0
        return min(max(offset - self.data_offset(index), 0), self.entries[index].size)


@dataclass(frozen=True, slots=True)
class ZipState:
    """What the stream after ``offset`` needs from the bytes before it.

    ``crcs`` holds the CRC-32 of entries ``[0, entry)`` packed as
    little-endian 4-byte words; ``running_crc`` is the CRC of entry
    ``entry``'s data bytes that lie before ``offset``.
    """

    offset: int
    entry: int
    running_crc: int
    crcs: bytes


def pack_crcs(crcs: array[int]) -> bytes:
    """CRC-32s as little-endian 4-byte words (the checkpoint's format on any machine)."""
    if sys.byteorder == "big":  # pragma: no cover - no big-endian CI
        crcs = array("I", crcs)
        crcs.byteswap()
    return crcs.tobytes()


def unpack_crcs(data: bytes) -> array[int]:
    crcs = array("I")
    if len(data) % 4:
        raise ValueError("checkpoint CRCs are not whole 4-byte words")
    crcs.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover
        crcs.byteswap()
    return crcs


def _window(chunk: bytes, at: int, start: int, end: int) -> Iterator[bytes]:
    """The part of ``chunk`` (which begins at archive byte ``at``) inside ``[start, end)``."""
    if at + len(chunk) > start and at < end:
        yield chunk[max(start - at, 0) : end - at]


class StoredArchive:
    """The archive's bytes from ``state.offset`` to ``end`` (default: the end), from entry feeds.

    ``feeds[i]`` yields entry i's data from ``layout.data_before(i, offset)``
    to ``layout.data_before(i, end)``. While streaming it keeps what a
    checkpoint needs: every finished entry's CRC, and the running CRC at each
    multiple of ``boundary`` that falls inside an entry's data (``state_at``).

    A fan-out worker (docs/resume.md, "Fan-out") starts from a *blind* state:
    the CRCs of earlier entries given as zeros and the running CRC of the
    entry in progress as 0, so ``crcs[i]`` ends up as the CRC of entry i's
    bytes inside ``[offset, end)`` (a partial CRC where the entry straddles
    either edge), and the bytes that carry an earlier CRC are wrong and must
    not be uploaded (``fanout.deferred_parts`` names the parts holding them).
    """

    def __init__(
        self,
        layout: StoredLayout,
        feeds: Sequence[Iterable[bytes | memoryview]],
        *,
        boundary: int,
        start: ZipState | None = None,
        end: int | None = None,
    ) -> None:
        n = len(layout.entries)
        self.layout = layout
        self._feeds = feeds
        self._boundary = boundary
        self._start = start or ZipState(0, 0, 0, b"")
        self.end = layout.length if end is None else end
        self.crcs = array("I", bytes(4 * n))
        known = unpack_crcs(self._start.crcs)
        if len(known) != self._start.entry:
            raise ValueError("checkpoint CRCs do not match its entry index")
        self.crcs[: len(known)] = known
        # Running CRCs at part boundaries inside entry data; popped by checkpoints.
        self.snapshots: dict[int, int] = {}
        # The CRC-32 of the data piece just yielded (None for headers, descriptors,
        # the central directory, or when unknown): the part writer combines it
        # instead of reading the piece's bytes again (docs/performance.md).
        self.yielded_crc: int | None = None
        self._fast_combine = fast_combine()

    def __len__(self) -> int:
        """Bytes this stream yields: the archive's length when it runs from 0 to the end."""
        return self.end - self._start.offset

    def state_at(self, offset: int) -> ZipState:
        """The ZIP state at ``offset``, which the stream must already have passed."""
        index = self.layout.entry_at(offset)
        before = self.layout.data_before(index, offset)
        if before == 0:
            running = 0
        elif before == self.layout.entries[index].size:
            running = self.crcs[index]
        elif offset == self._start.offset:
            running = self._start.running_crc
        else:
            running = self.snapshots[offset]
        return ZipState(offset, index, running, pack_crcs(self.crcs[:index]))

    def forget_before(self, offset: int, keep: Container[int] = ()) -> None:
        """Drop the running CRCs before ``offset`` but those at ``keep`` (a fan-out
        range still needs the ones at its deferred parts' starts)."""
        for key in [k for k in self.snapshots if k < offset and k not in keep]:
            del self.snapshots[key]

    def __iter__(self) -> Iterator[bytes | memoryview]:
        start, end = self._start, self.end
        layout = self.layout
        for index in range(start.entry, len(layout.entries)):
            entry = layout.entries[index]
            at = layout.offsets[index]
            if at >= end:
                return
            header = local_header(entry)
            yield from _window(header, at, start.offset, end)
            at += len(header)
            first = start.entry == index
            crc = start.running_crc if first else 0
            done = layout.data_before(index, start.offset) if first else 0
            want = layout.data_before(index, end)
            for piece in self._feeds[index]:
                before = crc
                crc = self._crc(piece, crc, at + done, at + entry.size)
                done += len(piece)
                self.yielded_crc = self._piece_crc(before, crc, len(piece))
                # Current before the yield: a checkpoint taken while the stream
                # rests on an entry's last piece, at a part boundary that is its
                # data's end, reads this entry's CRC from here (``state_at``).
                self.crcs[index] = crc
                yield piece
                self.yielded_crc = None
            if done != want:
                raise RuntimeError(
                    f"{entry.arcname}: read {done} bytes, planned {want}; archive aborted"
                )
            self.crcs[index] = crc
            if want < entry.size:
                return  # the range ends inside this entry's data
            at += entry.size
            descriptor = data_descriptor(crc, entry.size, local_zip64(entry.size))
            yield from _window(descriptor, at, start.offset, end)
        yield from self._footer(start.offset, end)

    def _piece_crc(self, before: int, after: int, length: int) -> int | None:
        """The CRC-32 of one piece alone, from the entry's running CRC before and after it.

        crc(A+B) = shift(crc(A), len(B)) ^ crc(B), so crc(B) is
        ``crc32_combine(crc(A), crc(A+B), len(B))``: free for an entry's first
        piece (crc(A) is 0, as for every small object), one C call otherwise,
        and None where combining is slow Python (the writer then reads the bytes).
        """
        if length == 0:
            return 0
        if before == 0:
            return after
        return crc32_combine(before, after, length) if self._fast_combine else None

    def _crc(self, piece: bytes | memoryview, crc: int, pos: int, data_end: int) -> int:
        """CRC over ``piece`` at archive ``pos``, noting it at each boundary it crosses."""
        view = memoryview(piece).cast("B")
        while view:
            room = self._boundary - pos % self._boundary
            crc = crc32(view[:room], crc)
            pos += min(room, len(view))
            view = view[room:]
            if pos % self._boundary == 0 and pos < data_end:
                self.snapshots[pos] = crc
        return crc

    def _footer(self, start: int, end: int) -> Iterator[bytes]:
        layout = self.layout
        at = layout.cd_offset
        batch: list[bytes] = []
        for index, entry in enumerate(layout.entries):
            if at >= end:
                break
            record = central_record(entry, self.crcs[index], layout.offsets[index])
            batch.extend(_window(record, at, start, end))
            at += len(record)
            if len(batch) >= 256:  # a few KiB per write, not one write per record
                yield b"".join(batch)
                batch = []
        end_record = end_records(len(layout.entries), layout.cd_offset, layout.cd_size)
        batch.extend(_window(end_record, at, start, end))
        if batch:
            yield b"".join(batch)


def build_stored_stream(
    layout: StoredLayout,
    range_size: int,
    boundary: int,
    start: ZipState | None,
    end: int | None = None,
) -> tuple[StoredArchive, list[EntryFeed], Cursor]:
    """The STORED archive from ``start`` (or byte 0) to ``end`` (or the end),
    with empty feeds for the reader.

    Entries before the start are never read: their feeds expect no ranges,
    and the feed of the entry holding the start expects only the ranges
    from its first unwritten byte (the reader's ``start``); likewise nothing
    at or after ``end`` (the reader's ``end``).
    """
    cursor = Cursor()
    offset = start.offset if start is not None else 0
    stop = layout.length if end is None else end
    cursor.entry = start.entry if start is not None else 0
    feeds = [
        EntryFeed(
            len(range(layout.data_before(i, offset), layout.data_before(i, stop), range_size)),
            cursor,
        )
        for i in range(len(layout.entries))
    ]
    archive = StoredArchive(layout, feeds, boundary=boundary, start=start, end=end)
    return archive, feeds, cursor
