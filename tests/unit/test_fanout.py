"""Fan-out's pure logic: part ranges, worker counts, CRC segments, and whole
fan-out builds through the real writer with in-memory feeds.

``_fan_out`` below does what ``fanout_build`` does minus the I/O: N blind
range writes (their deferred parts dropped), each result serialised and read
back, then the finisher's regeneration from ``finished_state``. Its output
must equal zipstream-ng's bytes for the same plan for every split, and the
full-object CRC combined from the parts must equal zlib's over the whole.
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine import fanout as fo
from service.engine.fanout import RangeResult, Segment
from service.engine.stored_zip import ZIP64_LIMIT, StoredArchive, StoredLayout, ZipState
from service.engine.uploader import UploadedPart, full_object_crc32
from service.units import GiB, MiB
from tests.support.archive_check import verify_archive
from tests.support.sources import RepeatedContent, planned_entry, repeated
from tests.unit.test_stored_zip import _content, _entries, _zipstream_bytes

Pieces = Callable[[int, int, int], Iterable[memoryview]]


@given(parts=st.integers(1, 10_000), workers=st.integers(1, 64))
def test_split_parts_covers_every_part_once_in_balanced_ranges(parts: int, workers: int) -> None:
    ranges = fo.split_parts(parts, workers)
    assert len(ranges) == min(parts, workers)
    assert ranges[0][0] == 1 and ranges[-1][1] == parts
    for (_, last), (first, _) in itertools.pairwise(ranges):
        assert first == last + 1
    sizes = [last - first + 1 for first, last in ranges]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_split_parts_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        fo.split_parts(0, 2)
    with pytest.raises(ValueError):
        fo.split_parts(3, 0)


@pytest.mark.parametrize(
    ("length", "kwargs", "want"),
    [
        (100 * MiB, {}, 1),  # small archives stay single
        (8 * GiB, {}, 1),
        (8 * GiB + 1, {}, 2),
        (32 * GiB, {}, 4),
        (500 * GiB, {}, 8),  # the per-job cap
        (500 * GiB, {"max_workers": 3}, 3),
        (20 * MiB, {"min_bytes_per_worker": 1}, 3),  # never more workers than parts
        (64 * GiB, {"budget_bytes": 64 * MiB, "min_worker_budget": 12 * MiB}, 5),
        (64 * GiB, {"budget_bytes": 10 * MiB, "min_worker_budget": 12 * MiB}, 1),
    ],
)
def test_workers_for(length: int, kwargs: dict[str, int], want: int) -> None:
    args = {"max_workers": 8, "min_bytes_per_worker": 8 * GiB, **kwargs}
    assert fo.workers_for(length, 8 * MiB, **args) == want


@given(
    length=st.integers(1, 6 * 2**40),
    part=st.integers(5 * MiB, 5 * GiB),
    cap=st.integers(1, 64),
    per=st.integers(1, 64 * GiB),
    budget=st.integers(1, 4 * GiB),
)
def test_workers_for_respects_every_cap(
    length: int, part: int, cap: int, per: int, budget: int
) -> None:
    n = fo.workers_for(
        length,
        part,
        max_workers=cap,
        min_bytes_per_worker=per,
        budget_bytes=budget,
        min_worker_budget=part + 4 * MiB,
    )
    assert 1 <= n <= cap
    assert n == 1 or (n <= -(-length // part) and n * (part + 4 * MiB) <= budget)
    assert n == 1 or length > per * (n - 1)  # one more worker only for a whole share more
    bigger = fo.workers_for(
        length * 2, part, max_workers=cap, min_bytes_per_worker=per, budget_bytes=budget,
        min_worker_budget=part + 4 * MiB,
    )  # fmt: skip
    assert bigger >= n  # never fewer workers for a larger archive


@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=8))
def test_segments_combine_to_the_crc_of_the_whole(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    segments = [
        Segment(0, lo, hi - lo, zlib.crc32(data[lo:hi])) for lo, hi in itertools.pairwise(bounds)
    ]
    random.Random(len(data)).shuffle(segments)  # order of arrival does not matter
    assert fo.combine(segments) == (zlib.crc32(data), len(data))


def test_segments_with_a_gap_or_overlap_are_refused() -> None:
    with pytest.raises(ValueError, match="gap or overlap"):
        fo.combine([Segment(0, 0, 10, 1), Segment(0, 11, 5, 2)])
    with pytest.raises(ValueError, match="gap or overlap"):
        fo.combine([Segment(0, 0, 10, 1), Segment(0, 9, 5, 2)])


def test_a_range_result_stays_small_at_the_limits() -> None:
    """10,000 parts (S3's limit) with S3-style ETags and 200,000 entries: about
    70 bytes per part and 4 per entry, so it can live next to the checkpoint."""
    parts = tuple(
        UploadedPart(n, f'"{n:032x}"', 0xFFFFFFFF, 5 * 1024 * MiB) for n in range(1, 10_001)
    )
    result = fo.RangeResult(
        "x" * 128,
        1,
        10_000,
        parts,
        0,
        bytes(4 * 200_000),
        (Segment(200_000, 1 << 40, 1 << 40, 0xFFFFFFFF),) * 2,
        tuple(fo.DeferredPart(n, Segment(n, 1 << 40, 1 << 40, 0xFFFFFFFF)) for n in (1, 10_000)),
    )
    data = fo.encode(result)
    assert len(data) <= 75 * 10_000 + 4 * 200_000 + 1_000
    assert fo.decode(data) == result


def test_runs_group_contiguous_parts() -> None:
    assert fo.runs([7, 3, 4, 9, 8, 1]) == [(1, 1), (3, 4), (7, 9)]
    assert fo.runs([]) == []


@dataclass
class _Parts:
    """Archive bytes cut into parts: CRC and length of each, bytes when kept."""

    part_size: int
    keep: bool
    keep_from: int = 1
    crcs: dict[int, int] = field(default_factory=dict)
    lengths: dict[int, int] = field(default_factory=dict)
    data: dict[int, bytearray] = field(default_factory=dict)

    def write(self, stream: Iterable[bytes | memoryview], at: int, drop: frozenset[int]) -> None:
        for chunk in stream:
            view = memoryview(chunk).cast("B")
            while view:
                number = at // self.part_size + 1
                n = min(len(view), number * self.part_size - at)
                if number not in drop:
                    self.crcs[number] = zlib.crc32(view[:n], self.crcs.get(number, 0))
                    self.lengths[number] = self.lengths.get(number, 0) + n
                    if self.keep and number >= self.keep_from:
                        self.data.setdefault(number, bytearray()).extend(view[:n])
                at += n
                view = view[n:]

    def uploaded(self, first: int, last: int) -> list[UploadedPart]:
        return [
            UploadedPart(n, f'"etag-{n}"', self.crcs[n], self.lengths[n])
            for n in range(first, last + 1)
            if n in self.crcs
        ]


def _range(
    layout: StoredLayout,
    pieces: Pieces,
    part_size: int,
    first: int,
    last: int,
    start: ZipState,
    drop: frozenset[int],
    out: _Parts,
) -> RangeResult:
    """One range build (what ``fanout_build.build_range`` does, over in-memory feeds)."""
    begin, end = fo.range_span(first, last, part_size, layout.length)
    feeds = [
        pieces(i, layout.data_before(i, begin), layout.data_before(i, end))
        for i in range(len(layout.entries))
    ]
    archive = StoredArchive(layout, feeds, boundary=part_size, start=start, end=end)
    out.write(archive, begin, drop)
    return fo.range_result(
        layout,
        part_size,
        first,
        last,
        upload_id="u",
        parts=out.uploaded(first, last),
        crcs=archive.crcs,
        snapshots=archive.snapshots,
        deferred=drop,
    )


def _fan_out(
    layout: StoredLayout, pieces: Pieces, part_size: int, workers: int, keep_from: int = 1
) -> tuple[_Parts, list[RangeResult]]:
    parts = -(-layout.length // part_size)
    out = _Parts(part_size, True, keep_from)
    results = []
    for first, last in fo.split_parts(parts, workers):
        begin = fo.range_span(first, last, part_size, layout.length)[0]
        drop = frozenset(fo.deferred_parts(layout, part_size, first, last))
        result = _range(
            layout, pieces, part_size, first, last, fo.blind_state(layout, begin), drop, out
        )
        results.append(fo.decode(fo.encode(result)))  # only what a stored result holds
        assert results[-1] == result
    crcs = fo.entry_crcs(layout, results)
    for first, last in fo.runs(d.number for r in results for d in r.deferred):
        state = fo.finished_state(layout, crcs, results, first, part_size)
        _range(layout, pieces, part_size, first, last, state, frozenset(), out)
    assert sorted(out.crcs) == list(range(1, parts + 1))
    return out, results


def _from(data: list[bytes], piece: int) -> Pieces:
    def pieces(i: int, lo: int, hi: int) -> list[memoryview]:
        view = memoryview(data[i])
        return [view[p : min(p + piece, hi)] for p in range(lo, hi, piece)]

    return pieces


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=10),
    part_size=st.integers(40, 2000),
    workers=st.integers(1, 9),
    piece=st.integers(1, 700),
)
def test_any_split_builds_zipstreams_bytes(
    sizes: list[int], part_size: int, workers: int, piece: int
) -> None:
    entries = _entries(sizes)
    data = [_content(i, s) for i, s in enumerate(sizes)]
    want = _zipstream_bytes(entries, data)
    out, _ = _fan_out(StoredLayout(entries), _from(data, piece), part_size, workers)
    got = b"".join(bytes(out.data[n]) for n in sorted(out.data))
    assert got == want
    parts = out.uploaded(1, len(out.crcs))
    assert full_object_crc32(parts) == zlib.crc32(want)


def test_a_file_straddling_workers_and_empty_files(tmp_path: Path) -> None:
    """1, 2, 3, 4 and 7 workers; the big entry spans workers 2 and 3 (of 4), and
    the empty ones sit on range edges; every build is the same, and readable."""
    sizes = [3000, 0, 25_000, 0, 0, 700, 9000, 0]
    entries = _entries(sizes)
    data = [_content(i, s) for i, s in enumerate(sizes)]
    want = _zipstream_bytes(entries, data)
    layout = StoredLayout(entries)
    part_size = 2048
    for workers in (1, 2, 3, 4, 7):
        out, results = _fan_out(layout, _from(data, 500), part_size, workers)
        got = b"".join(bytes(out.data[n]) for n in sorted(out.data))
        assert got == want, workers
        if workers == 4:
            spanning = {s.entry for r in results[1:3] for s in r.segments}
            assert 2 in spanning
            assert any(r.deferred for r in results[1:])
        if workers == 1:
            assert not results[0].deferred  # one worker knows every CRC
    path = tmp_path / "fanned.zip"
    path.write_bytes(got)
    verify_archive(path, {e.arcname: d for e, d in zip(entries, data, strict=True)})


def test_uploading_deferred_parts_blind_would_corrupt_the_archive() -> None:
    """The deferral is needed: a blind worker's bytes for those parts are wrong."""
    sizes = [5000, 7000, 3000]
    entries = _entries(sizes)
    data = [_content(i, s) for i, s in enumerate(sizes)]
    want = _zipstream_bytes(entries, data)
    layout = StoredLayout(entries)
    part_size = 1024
    blind = _Parts(part_size, keep=True)
    for first, last in fo.split_parts(-(-layout.length // part_size), 3):
        begin = fo.range_span(first, last, part_size, layout.length)[0]
        _range(
            layout,
            _from(data, 300),
            part_size,
            first,
            last,
            fo.blind_state(layout, begin),
            frozenset(),
            blind,
        )
    deferred = {
        n
        for first, last in fo.split_parts(-(-layout.length // part_size), 3)
        for n in fo.deferred_parts(layout, part_size, first, last)
    }
    assert deferred
    wrong = {
        n
        for n, got in blind.data.items()
        if bytes(got) != want[(n - 1) * part_size : n * part_size]
    }
    # Every wrong part is deferred; a deferred part may still come out right
    # when it holds no CRC byte (say, only the end record).
    assert wrong and wrong <= deferred
    descriptor_parts = {
        (layout.data_offset(i) + e.size + 4) // part_size + 1 for i, e in enumerate(entries)
    }
    straddled = {n for n in descriptor_parts if n in deferred}
    assert straddled and straddled <= wrong


def test_entry_crcs_refuses_results_that_miss_an_entry() -> None:
    sizes = [3000, 4000, 5000]
    entries = _entries(sizes)
    data = [_content(i, s) for i, s in enumerate(sizes)]
    layout = StoredLayout(entries)
    _, results = _fan_out(layout, _from(data, 999), 1024, 3)
    with pytest.raises(ValueError):
        fo.entry_crcs(layout, results[:1] + results[2:])


def _synthetic(contents: list[RepeatedContent]) -> Pieces:
    def pieces(i: int, lo: int, hi: int) -> list[memoryview]:
        return contents[i].pieces(lo, hi, 16 * MiB)

    return pieces


def test_zip64_layout_fanned_out_matches_one_writer() -> None:
    """Past 4 GiB (ZIP64 sizes, descriptors and offsets), 3 workers against one
    writer, part by part.

    The bytes are never held: each part is compared by CRC-32 and length, and
    the last part (central directory with the combined CRCs, ZIP64 end
    records) byte for byte. The records themselves are checked against
    zipstream-ng's in test_stored_zip.py.
    """
    sizes = [ZIP64_LIMIT + 5, 10, ZIP64_LIMIT + 1000, 0, 77]
    entries = [planned_entry(f"big/{i}.bin", s) for i, s in enumerate(sizes)]
    contents = [repeated(s, seed=i) for i, s in enumerate(sizes)]
    layout = StoredLayout(entries)
    assert layout.offsets[-1] > 1 << 32
    part_size = 1 * GiB
    last = -(-layout.length // part_size)
    one = _Parts(part_size, True, last)
    feeds = [contents[i].pieces(0, s, 16 * MiB) for i, s in enumerate(sizes)]
    one.write(StoredArchive(layout, feeds, boundary=part_size), 0, frozenset())
    fanned, results = _fan_out(layout, _synthetic(contents), part_size, 3, keep_from=last)
    assert [d.number for r in results for d in r.deferred] == [3, last]
    assert any(s.entry == 2 for r in results for s in r.segments)
    assert fanned.crcs == one.crcs and fanned.lengths == one.lengths
    assert fanned.data[last] == one.data[last]
    assert b"PK\x06\x06" in fanned.data[last]  # the ZIP64 end record
