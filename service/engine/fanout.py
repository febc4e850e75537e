"""Fan-out: one STORED archive built by N workers on one multipart upload (pure logic).

The plan and the ``StoredLayout`` fix every byte, so the part size P and the
part count M follow from the exact length, and parts 1..M split into N
contiguous ranges. Worker k produces archive bytes ``[start_k, end_k)`` of its
parts from a *blind* state (``blind_state``): it reads only the source bytes
in its range and knows no CRC-32 from before it. So it can upload every part
except those whose bytes carry a CRC it cannot know (``deferred_parts``):
the data descriptor of the entry it started inside, and the central
directory if any entry's data began before its start. It returns a small
``RangeResult``; the finisher combines the results (``entry_crcs``, with
zlib's ``crc32_combine``), regenerates each deferred part from a complete
``ZipState`` (``finished_state``) with the same range builder, and completes
the upload. docs/resume.md, "Fan-out", has the why; the I/O is in
``fanout_build.py``.
"""

from __future__ import annotations

import json
import math
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .checkpoint import split_record
from .crc import crc32_combine
from .stored_zip import StoredLayout, ZipState, descriptor_length, pack_crcs, unpack_crcs
from .uploader import UploadedPart

FORMAT = 1


def split_parts(parts: int, workers: int) -> list[tuple[int, int]]:
    """Parts 1..``parts`` as ``workers`` contiguous ranges ``(first, last)``, inclusive.

    Sizes differ by at most one part, larger ranges first; never an empty
    range (fewer ranges when there are fewer parts than workers).
    """
    if parts < 1 or workers < 1:
        raise ValueError("parts and workers must be positive")
    workers = min(workers, parts)
    base, extra = divmod(parts, workers)
    out = []
    first = 1
    for k in range(workers):
        count = base + (1 if k < extra else 0)
        out.append((first, first + count - 1))
        first += count
    return out


def workers_for(
    length: int,
    part_size: int,
    *,
    max_workers: int,
    min_bytes_per_worker: int,
    budget_bytes: int | None = None,
    min_worker_budget: int = 1,
) -> int:
    """How many workers build an archive of ``length`` bytes.

    One per ``min_bytes_per_worker`` (rounded up), at most ``max_workers``
    (the per-job cap), at most one per part, and at most as many as the job
    budget can give each one ``min_worker_budget`` (one part plus one read
    range). An archive that fits one part is one PutObject: always 1. The
    defaults (``ZipOptions.workers``, ``worker_min_bytes``: 1 and 8 GiB) and
    why are in docs/resume.md, "Fan-out".
    """
    parts = max(1, math.ceil(length / part_size))
    wanted = math.ceil(length / max(1, min_bytes_per_worker))
    by_budget = parts if budget_bytes is None else budget_bytes // max(1, min_worker_budget)
    return max(1, min(wanted, max_workers, parts, by_budget))


def part_span(number: int, part_size: int, length: int) -> tuple[int, int]:
    """Archive bytes ``[start, end)`` of part ``number`` (the last one may be short)."""
    return (number - 1) * part_size, min(number * part_size, length)


def range_span(first: int, last: int, part_size: int, length: int) -> tuple[int, int]:
    return part_span(first, part_size, length)[0], part_span(last, part_size, length)[1]


def blind_state(layout: StoredLayout, offset: int) -> ZipState:
    """A worker's start at ``offset``: no CRC of any earlier byte known.

    Earlier entries' CRCs are zeros and the running CRC is 0, so the CRC the
    writer keeps for the entry in progress is that of its bytes from
    ``offset`` on (a partial CRC, combined by the finisher).
    """
    entry = layout.entry_at(offset)
    return ZipState(offset, entry, 0, bytes(4 * entry))


def _parts_over(lo: int, hi: int, part_size: int) -> range:
    """Part numbers holding any of the bytes ``[lo, hi)``."""
    if hi <= lo:
        return range(0)
    return range(lo // part_size + 1, (hi - 1) // part_size + 2)


def deferred_parts(layout: StoredLayout, part_size: int, first: int, last: int) -> tuple[int, ...]:
    """The parts in ``first..last`` whose bytes a blind worker gets wrong.

    Only two kinds of bytes carry a CRC-32 (docs/resume.md): data
    descriptors and central directory records. Inside a worker's range the
    only descriptor with an unknown CRC is that of the entry whose data began
    before the range (every other entry's data is wholly inside, so its CRC
    is complete). The central directory names every entry's CRC, so it is
    deferred as soon as any data byte lies before the range.
    """
    start, end = range_span(first, last, part_size, layout.length)
    index = layout.entry_at(start)
    unknown: list[tuple[int, int]] = []
    if index < len(layout.entries) and layout.data_before(index, start) > 0:
        size = layout.entries[index].size
        at = layout.data_offset(index) + size
        unknown.append((at, at + descriptor_length(size)))
    if _data_before(layout, start):
        unknown.append((layout.cd_offset, layout.length))
    found: set[int] = set()
    for lo, hi in unknown:
        found.update(_parts_over(max(lo, start), min(hi, end), part_size))
    return tuple(sorted(found))


def _data_before(layout: StoredLayout, offset: int) -> bool:
    """Does any entry's data begin before ``offset``?"""
    for index, entry in enumerate(layout.entries):
        if layout.offsets[index] >= offset:
            return False
        if entry.size and layout.data_offset(index) < offset:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Segment:
    """The CRC-32 of entry ``entry``'s data bytes ``[begin, begin + length)``."""

    entry: int
    begin: int
    length: int
    crc: int


@dataclass(frozen=True, slots=True)
class DeferredPart:
    """A part a worker did not upload; ``running`` is its CRC of the entry in
    progress at the part's start, from the worker's first byte of that entry
    (None when the part starts outside entry data)."""

    number: int
    running: Segment | None


@dataclass(frozen=True, slots=True)
class RangeResult:
    """What one worker hands the finisher; small and serialisable (``encode``).

    ``crcs`` holds the full CRC-32 of entries ``full_first`` onwards whose
    data lies wholly in the range (packed like a checkpoint's); ``segments``
    the partial CRCs of the (at most two) entries that straddle its edges.
    Bounded: about 70 bytes per part plus 4 per entry, like a checkpoint, so
    a job-level fan-out can keep one next to the checkpoint in S3.
    """

    upload_id: str
    first_part: int
    last_part: int
    parts: tuple[UploadedPart, ...]
    full_first: int
    crcs: bytes
    segments: tuple[Segment, ...]
    deferred: tuple[DeferredPart, ...]


def range_result(
    layout: StoredLayout,
    part_size: int,
    first: int,
    last: int,
    *,
    upload_id: str,
    parts: Iterable[UploadedPart],
    crcs: Sequence[int],
    snapshots: Mapping[int, int],
    deferred: Iterable[int],
) -> RangeResult:
    """A worker's result from what its writer kept.

    ``crcs[i]`` is the CRC of entry i's bytes inside the range (the writer
    started from ``blind_state``); ``snapshots`` the running CRC at each part
    boundary inside entry data.
    """
    start, end = range_span(first, last, part_size, layout.length)
    n = len(layout.entries)
    lo = layout.entry_at(start)
    hi = min(layout.entry_at(end - 1) if end > start else lo, n - 1)
    full: list[int] = []
    segments: list[Segment] = []
    for index in range(lo, hi + 1):
        begin = layout.data_before(index, start)
        stop = layout.data_before(index, end)
        whole = begin == 0 and stop == layout.entries[index].size
        if whole and (not full or full[-1] == index - 1):
            full.append(index)
            continue
        if stop > begin:
            segments.append(Segment(index, begin, stop - begin, crcs[index]))
    full_first = full[0] if full else lo
    packed = pack_crcs(array("I", [crcs[i] for i in full]))
    held = tuple(_deferred(layout, part_size, start, number, snapshots) for number in deferred)
    return RangeResult(
        upload_id,
        first,
        last,
        tuple(sorted(parts, key=lambda p: p.number)),
        full_first,
        packed,
        tuple(segments),
        held,
    )


def _deferred(
    layout: StoredLayout, part_size: int, start: int, number: int, snapshots: Mapping[int, int]
) -> DeferredPart:
    at = part_span(number, part_size, layout.length)[0]
    index = layout.entry_at(at)
    done = layout.data_before(index, at)
    if done == 0 or index >= len(layout.entries) or done == layout.entries[index].size:
        return DeferredPart(number, None)
    begin = layout.data_before(index, start)
    crc = 0 if at == start else snapshots[at]
    return DeferredPart(number, Segment(index, begin, done - begin, crc))


def combine(segments: Iterable[Segment]) -> tuple[int, int]:
    """(CRC, length) of the bytes the segments cover, which must tile ``[0, length)``."""
    crc = 0
    covered = 0
    for seg in sorted(segments, key=lambda s: s.begin):
        if seg.begin != covered:
            raise ValueError(
                f"entry {seg.entry}: CRC segments leave a gap or overlap at byte {covered}"
            )
        crc = crc32_combine(crc, seg.crc, seg.length)
        covered += seg.length
    return crc, covered


def entry_crcs(layout: StoredLayout, results: Iterable[RangeResult]) -> array[int]:
    """Every entry's CRC-32 from all workers' results; ValueError if any is missing."""
    n = len(layout.entries)
    crcs = array("I", bytes(4 * n))
    known = bytearray(1 if e.size == 0 else 0 for e in layout.entries)
    pieces: dict[int, list[Segment]] = defaultdict(list)
    for result in results:
        full = unpack_crcs(result.crcs)
        crcs[result.full_first : result.full_first + len(full)] = full
        known[result.full_first : result.full_first + len(full)] = b"\x01" * len(full)
        for seg in result.segments:
            pieces[seg.entry].append(seg)
    for index, segments in pieces.items():
        crc, covered = combine(segments)
        if covered != layout.entries[index].size:
            raise ValueError(f"entry {index}: CRC segments cover {covered} bytes")
        crcs[index] = crc
        known[index] = 1
    missing = known.find(0)
    if missing >= 0:
        raise ValueError(f"no worker reported the CRC of entry {missing}")
    return crcs


def finished_state(
    layout: StoredLayout,
    crcs: array[int],
    results: Iterable[RangeResult],
    number: int,
    part_size: int,
) -> ZipState:
    """The complete ZIP state at the start of deferred part ``number``.

    The running CRC of the entry in progress there is the owner's snapshot
    segment, prefixed by the other workers' segments of that entry.
    """
    at = part_span(number, part_size, layout.length)[0]
    index = layout.entry_at(at)
    done = layout.data_before(index, at)
    running = 0
    if index < len(layout.entries) and done == layout.entries[index].size:
        running = crcs[index]  # inside its descriptor: its data is all before
    elif 0 < done < layout.entries[index].size:
        everything = list(results)
        own = [d.running for r in everything for d in r.deferred if d.number == number]
        if len(own) != 1 or own[0] is None:
            raise ValueError(f"no running CRC was kept for deferred part {number}")
        mine = own[0]
        earlier = [
            s
            for r in everything
            for s in r.segments
            if s.entry == index and s.begin + s.length <= mine.begin
        ]
        running, covered = combine([*earlier, mine])
        if covered != done:
            raise ValueError(f"part {number}: running CRC covers {covered} of {done} bytes")
    return ZipState(at, index, running, pack_crcs(crcs[:index]))


def runs(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted part numbers as contiguous ``(first, last)`` runs: each is regenerated
    in one pass, so an entry shared by two adjacent deferred parts is read once."""
    out: list[tuple[int, int]] = []
    for n in sorted(set(numbers)):
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def encode(result: RangeResult) -> bytes:
    """One JSON line, a newline, the packed full CRCs (the checkpoint's layout)."""

    def seg(s: Segment | None) -> list[int] | None:
        return None if s is None else [s.entry, s.begin, s.length, s.crc]

    head = {
        "format": FORMAT,
        "upload_id": result.upload_id,
        "first_part": result.first_part,
        "last_part": result.last_part,
        "parts": [[p.number, p.etag, p.crc32, p.length] for p in result.parts],
        "full_first": result.full_first,
        "segments": [seg(s) for s in result.segments],
        "deferred": [[d.number, seg(d.running)] for d in result.deferred],
    }
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + result.crcs


def decode(data: bytes) -> RangeResult:
    """The result ``encode`` wrote; ValueError when it is not one."""
    head, crcs = split_record(data, "range result", FORMAT)

    def seg(v: list[int] | None) -> Segment | None:
        return None if v is None else Segment(*(int(x) for x in v))

    segments = tuple(s for s in (seg(v) for v in head["segments"]) if s is not None)
    return RangeResult(
        str(head["upload_id"]),
        int(head["first_part"]),
        int(head["last_part"]),
        tuple(UploadedPart(int(n), str(e), int(c), int(ln)) for n, e, c, ln in head["parts"]),
        int(head["full_first"]),
        crcs,
        segments,
        tuple(DeferredPart(int(n), seg(r)) for n, r in head["deferred"]),
    )
