"""The resumable STORED writer against zipstream-ng, byte for byte.

Two implementations of one format: the engine's ``StoredArchive`` (which can
start mid-archive) must produce exactly what zipstream-ng's sized stream
produces for the same plan, and a stream started from any offset X with the
state recorded at X must equal the uninterrupted bytes from X on. Records
that only matter past 4 GiB (ZIP64 headers, extras, end records) are
compared against zipstream-ng's own record builders without moving GiBs.
"""

from __future__ import annotations

import datetime as dt
import random
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zipstream import ZipStream
from zipstream.ng import ZipStreamInfo

from service.engine.models import PlannedEntry
from service.engine.stored_zip import (
    ZIP64_LIMIT,
    StoredArchive,
    StoredLayout,
    ZipState,
    central_record,
    data_descriptor,
    end_records,
    local_header,
    local_zip64,
)
from service.engine.zip_stream import FILE_MODE, ArchiveStream, dos_date_time
from tests.support.archive_check import verify_archive
from tests.support.sources import FIXED_DATE, planned_entry

NAMES = ["a.pdf", "dir/b.txt", "ünïcødé/ß.pdf", "日本語.pdf", "x" * 300, "sp ace/ok"]


def _content(i: int, size: int) -> bytes:
    return random.Random(i).randbytes(size)


def _zipstream_bytes(entries: list[PlannedEntry], data: list[bytes]) -> bytes:
    stream = ArchiveStream(sized=True)
    for entry, body in zip(entries, data, strict=True):
        pieces = [memoryview(body[i : i + 1000]) for i in range(0, len(body), 1000)]
        stream.add_entry(iter(pieces), entry.arcname, entry.size, entry.last_modified)
    out = b"".join(bytes(c) for c in stream)
    assert len(out) == len(stream)
    return out


def _feeds(
    layout: StoredLayout, data: list[bytes], offset: int, piece: int
) -> list[list[memoryview]]:
    out = []
    for i, body in enumerate(data):
        start = layout.data_before(i, offset) if i == layout.entry_at(offset) else 0
        if i < layout.entry_at(offset):
            start = len(body)
        view = memoryview(body)
        out.append([view[p : p + piece] for p in range(start, len(body), piece)])
    return out


def _ours(
    entries: list[PlannedEntry], data: list[bytes], boundary: int, piece: int = 777
) -> tuple[bytes, StoredArchive]:
    layout = StoredLayout(entries)
    archive = StoredArchive(layout, _feeds(layout, data, 0, piece), boundary=boundary)
    out = b"".join(bytes(c) for c in archive)
    assert len(out) == len(archive) == layout.length
    return out, archive


def _entries(sizes: list[int], dates: list[dt.datetime] | None = None) -> list[PlannedEntry]:
    return [
        planned_entry(
            f"{i}-{NAMES[i % len(NAMES)]}", size, modified=(dates or [FIXED_DATE] * len(sizes))[i]
        )
        for i, size in enumerate(sizes)
    ]


# Archives of a few small entries, cut into parts of ``boundary`` bytes and fed
# in pieces of ``piece`` bytes; ``cut`` picks an offset to resume from.
ARCHIVE_CASES = {
    "sizes": st.lists(st.integers(0, 5000), min_size=1, max_size=12),
    "boundary": st.integers(64, 4096),
    "piece": st.integers(1, 3000),
    "cut": st.integers(0, 10**9),
}


@settings(max_examples=40, deadline=None)
@given(**ARCHIVE_CASES)
def test_same_bytes_as_zipstream_and_resumable_anywhere(
    sizes: list[int], boundary: int, piece: int, cut: int
) -> None:
    entries = _entries(sizes)
    data = [_content(i, s) for i, s in enumerate(sizes)]
    want = _zipstream_bytes(entries, data)
    got, archive = _ours(entries, data, boundary, piece)
    assert got == want
    # Resume at every part boundary the stream recorded, and at one random offset
    # that is a boundary of its own run.
    offsets = list(range(0, len(want) + 1, boundary))
    for offset in [*offsets, cut % (len(want) + 1)]:
        if offset % boundary:
            _, archive = _ours(entries, data, offset or 1, piece)
            step = offset or 1
        else:
            step = boundary
        state = archive.state_at(offset)
        resumed = StoredArchive(
            archive.layout,
            _feeds(archive.layout, data, offset, piece),
            boundary=step,
            start=state,
        )
        assert b"".join(bytes(c) for c in resumed) == want[offset:], offset


def test_dates_names_and_empty_entries_match_and_read(tmp_path: Path) -> None:
    dates = [
        dt.datetime(1975, 1, 1, tzinfo=dt.UTC),  # before DOS time: clamped to 1980
        dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2031, 7, 4, 1, 2, 3, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    ]
    entries = _entries([0, 10, 123_456], dates)
    data = [_content(i, e.size) for i, e in enumerate(entries)]
    got, _ = _ours(entries, data, 4096)
    assert got == _zipstream_bytes(entries, data)
    path = tmp_path / "a.zip"
    path.write_bytes(got)
    verify_archive(path, {e.arcname: d for e, d in zip(entries, data, strict=True)})


def _zinfo(entry: PlannedEntry, crc: int, offset: int) -> ZipStreamInfo:
    zinfo = ZipStreamInfo(entry.arcname, date_time=dos_date_time(entry.last_modified))
    zinfo.external_attr = FILE_MODE << 16
    zinfo.file_size = zinfo.compress_size = entry.size
    zinfo.CRC = crc
    zinfo.header_offset = offset
    zinfo.flag_bits |= 1 << 3
    return zinfo


@pytest.mark.parametrize(
    ("size", "offset"),
    [
        (0, 0),
        (int(ZIP64_LIMIT / 1.05), 5),  # just under the local ZIP64 switch
        (int(ZIP64_LIMIT / 1.05) + 1, 5),  # ZIP64 local header, no central extra
        (ZIP64_LIMIT + 1, 0),  # sizes in the central extra
        (10, ZIP64_LIMIT + 1),  # offset in the central extra
        (5 * 2**30, 6 * 2**30),  # both
    ],
)
def test_records_past_4gib_match_zipstream(size: int, offset: int) -> None:
    entry = planned_entry("big/ß.bin", size)
    crc = 0xDEADBEEF
    zinfo = _zinfo(entry, crc, offset)
    zip64 = local_zip64(size)
    assert local_header(entry) == zinfo.FileHeader(zip64)
    assert data_descriptor(crc, size, zip64) == zinfo.DataDescriptor(zip64)
    assert central_record(entry, crc, offset) == zinfo._central_directory_header_data()


@pytest.mark.parametrize(
    ("count", "cd_offset", "cd_size"),
    [
        (1, 0, 46),
        (65_534, 10, 100),
        (65_535, 10, 100),
        (3, ZIP64_LIMIT + 1, 100),
        (3, 10, ZIP64_LIMIT + 1),
    ],
)
def test_end_records_match_zipstream(count: int, cd_offset: int, cd_size: int) -> None:
    class Record:
        def _central_directory_header_data(self) -> bytes:
            return b"R"

    class Footer(ZipStream):  # type: ignore[misc]
        """Counts each marker record as cd_size / count bytes, without making them."""

        def _track(self, data: bytes) -> bytes:
            self._pos += share if data == b"R" else len(data)
            return data

    share, rest = divmod(cd_size, count)
    stream = Footer(sized=True)
    stream._filelist = [Record() for _ in range(count)]
    stream._pos = cd_offset - rest  # the remainder rides on the offset, not the records
    stream._pos += rest
    want = b"".join(stream._gen_archive_footer())[count:]
    assert end_records(count, cd_offset, share * count) == want


def test_state_refuses_crcs_of_the_wrong_length() -> None:
    layout = StoredLayout(_entries([1, 2]))
    with pytest.raises(ValueError, match="CRCs"):
        StoredArchive(layout, [[], []], boundary=64, start=ZipState(80, 1, 0, b""))


def test_snapshot_crc_is_the_crc_of_the_data_before_the_boundary() -> None:
    entries = _entries([10_000])
    data = [_content(0, 10_000)]
    _, archive = _ours(entries, data, 1024)
    start = archive.layout.data_offset(0)
    for boundary, crc in archive.snapshots.items():
        assert crc == zlib.crc32(data[0][: boundary - start])
    assert len(archive.snapshots) == len(range(1024, start + 10_000, 1024))


@settings(max_examples=30, deadline=None)
@given(**ARCHIVE_CASES)
def test_every_data_piece_comes_with_its_own_crc(
    sizes: list[int], boundary: int, piece: int, cut: int
) -> None:
    """``yielded_crc`` is the CRC-32 of the piece just yielded (the part writer
    uses it instead of reading the bytes again), for first and later pieces of
    an entry, from the start and from a resumed state, and None for the bytes
    the stream makes itself (headers, descriptors, central directory)."""
    entries = _entries(sizes)
    data = [_content(i, s) for i, s in enumerate(sizes)]
    full, archive = _ours(entries, data, boundary, piece)
    offset = cut % (len(full) + 1) // boundary * boundary
    state = archive.state_at(offset)
    for start, feeds in ((None, _feeds(archive.layout, data, 0, piece)),
                         (state, _feeds(archive.layout, data, offset, piece))):  # fmt: skip
        stream = StoredArchive(archive.layout, feeds, boundary=boundary, start=start)
        data_pieces = {id(p) for f in feeds for p in f}
        known = 0
        for chunk in stream:
            if id(chunk) in data_pieces:
                assert stream.yielded_crc == zlib.crc32(chunk)
                known += len(chunk)
            else:
                assert stream.yielded_crc is None
        assert known == sum(len(p) for f in feeds for p in f)
