"""A fan-out range's own checkpoint (docs/resume.md, "A range resumes from its own
checkpoint"): its format and size, the checks before it is used, and, through
the real writer over in-memory feeds, that a range stopped after any part and
resumed from its checkpoint, again and again, gives the uninterrupted range's
bytes and result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine import fanout as fo
from service.engine.checkpoint import PartRecord, RecordStore
from service.engine.range_checkpoint import (
    RangeCheckpoint,
    RangeCheckpointer,
    RangeSpec,
    decode,
    encode,
    mismatch,
)
from service.engine.stored_zip import StoredArchive, StoredLayout, ZipState
from service.engine.uploader import PartWriter, UploadedPart
from tests.unit.test_fanout import _from, _Parts, _range
from tests.unit.test_stored_zip import _content, _entries


def _checkpoint(entries: int, crc_from: int, parts: int) -> RangeCheckpoint:
    crcs = bytes(4 * crc_from) + os.urandom(4 * (entries - crc_from))
    records = tuple(
        PartRecord(n, f'"{n:032x}"', 5 * 1024**3, 0xFFFFFFFF) for n in range(1, parts + 1)
    )
    return RangeCheckpoint(
        "f" * 64, "u" * 128, 1, parts + 2, records, ZipState(1 << 40, entries, 7, crcs), crc_from,
        ((1 << 39, 0xFFFFFFFF), (1 << 40, 1)),
    )  # fmt: skip


def test_a_range_checkpoint_round_trips() -> None:
    cp = _checkpoint(50, 20, 7)
    assert decode(encode(cp)) == cp


def test_it_holds_only_the_range_s_own_entry_crcs() -> None:
    """One of 32 ranges of a 200,000-entry job at S3's 10,000-part limit: the CRCs of
    the entries before the range are zeros in its state and are not stored, so it is
    about 4 bytes per entry of the range (25 KB here) plus ~60 per part, not the
    800 KB the whole job's CRCs would take."""
    per_range = 200_000 // 32
    cp = _checkpoint(200_000, 200_000 - per_range, 10_000 // 32)
    data = encode(cp)
    assert len(data) <= 4 * per_range + 70 * (10_000 // 32) + 1_000
    assert decode(data) == cp


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.replace(b'"format":1', b'"format":2'),
        lambda d: d[:-1],  # CRCs not whole words
        lambda d: d[:-4],  # one CRC short of its entries
        lambda d: d.replace(b'"crc_from":20', b'"crc_from":60'),
        lambda d: d.partition(b"\n")[0],
    ],
)
def test_a_damaged_range_checkpoint_is_refused(damage: Callable[[bytes], bytes]) -> None:
    data = encode(_checkpoint(50, 20, 3))
    with pytest.raises(ValueError):
        decode(damage(data))


# A small archive: 1000-byte parts, entries straddling them, empty ones.
SIZES = [2500, 0, 1700, 40, 3100, 0, 900]
PART = 1000


def _layout() -> StoredLayout:
    return StoredLayout(_entries(SIZES))


def _spec(layout: StoredLayout, k: int, workers: int = 3) -> RangeSpec:
    parts = -(-layout.length // PART)
    first, last = fo.split_parts(parts, workers)[k]
    drop = frozenset(fo.deferred_parts(layout, PART, first, last))
    return RangeSpec(layout, PART, first, last, drop, "fp", "up")


class _Store:
    """A checkpoint store that keeps what is saved (as bytes, as S3 would)."""

    def __init__(self) -> None:
        self.saved: list[bytes] = []

    async def save(self, record: RangeCheckpoint) -> None:
        self.saved.append(encode(record))


@dataclasses.dataclass
class _Writer:
    """What the checkpointer reads of a part writer."""

    uploaded_parts: list[UploadedPart]
    bytes_written: int


def _upto(stream: Iterable[bytes | memoryview], at: int, until: int) -> Iterator[bytes]:
    """The stream's chunks until it has passed archive byte ``until``."""
    for chunk in stream:
        yield bytes(chunk)
        at += len(chunk)
        if at >= until:
            return


def _attempt(
    layout: StoredLayout,
    data: list[bytes],
    piece: int,
    spec: RangeSpec,
    prior: RangeCheckpoint | None,
    out: _Parts,
    further: int = 1,
) -> tuple[RangeCheckpoint | None, fo.RangeResult | None]:
    """One attempt of the range, as ``fanout_build.build_range`` runs it: from
    ``prior`` (or the range's start) it streams past the end of ``further`` more
    parts, checkpointing after each part, then stops. Its last checkpoint (read
    back from bytes), and its result if it reached the range's end."""
    begin, end = spec.span
    start = prior.state if prior is not None else fo.blind_state(layout, begin)
    pieces = _from(data, piece)
    feeds = [
        pieces(i, layout.data_before(i, start.offset), layout.data_before(i, end))
        for i in range(len(layout.entries))
    ]
    archive = StoredArchive(layout, feeds, boundary=spec.part_size, start=start, end=end)
    if prior is not None:
        archive.snapshots.update(prior.snapshots)
    target = min(end, spec.part_end(spec.next_part(start.offset) + further - 1))
    store = _Store()
    checkpointer = RangeCheckpointer(
        cast("RecordStore[RangeCheckpoint]", store), spec, archive, 0.0, prior
    )
    writer = _Writer([], 0)
    checkpointer.attach(cast("PartWriter", writer))
    mine = _Parts(spec.part_size, True)
    at = start.offset
    for chunk in _upto(archive, at, target):
        mine.write([chunk], at, spec.drop)
        at += len(chunk)
        done = [p for p in mine.uploaded(spec.first, spec.last) if spec.part_end(p.number) <= at]
        if len(done) > len(writer.uploaded_parts) or at >= target:
            writer.uploaded_parts, writer.bytes_written = done, at - start.offset
            asyncio.run(checkpointer.save())  # after each part, as the writer calls it
    for p in writer.uploaded_parts:
        out.crcs[p.number], out.lengths[p.number] = p.crc32, p.length
        out.data[p.number] = mine.data[p.number]
    cp = decode(store.saved[-1]) if store.saved else prior
    if at < end:
        return cp, None
    parts = (prior.uploaded() if prior is not None else []) + writer.uploaded_parts
    result = fo.range_result(
        layout, spec.part_size, spec.first, spec.last, upload_id="u", parts=parts,
        crcs=archive.crcs, snapshots=archive.snapshots, deferred=spec.drop,
    )  # fmt: skip
    return cp, result


SPLITS = st.tuples(
    st.lists(st.integers(0, 3000), min_size=1, max_size=9),  # entry sizes
    st.integers(150, 1500),  # part size
    st.integers(1, 6),  # ranges
    st.integers(1, 700),  # the reader's piece size
    st.integers(1, 3),  # parts per attempt
)


@settings(max_examples=150, deadline=None)
@given(SPLITS)
def test_a_range_stopped_after_every_part_resumes_to_the_uninterrupted_range(
    split: tuple[list[int], int, int, int, int],
) -> None:
    """Every range of every split: attempts that each go one to three parts further
    (a checkpoint after each part) and stop, each resuming from the last one's
    checkpoint (decoded from its bytes, checked by ``mismatch``), produce the
    uninterrupted range's parts byte for byte and the same ``RangeResult`` (so
    the finisher's CRCs and deferred parts are right: the running CRC at a
    deferred part's start, which a resumed stream never sees, comes from the
    checkpoint)."""
    sizes, part_size, workers, piece, further = split
    layout = StoredLayout(_entries(sizes))
    data = [_content(i, s) for i, s in enumerate(sizes)]
    parts = -(-layout.length // part_size)
    for first, last in fo.split_parts(parts, workers):
        drop = frozenset(fo.deferred_parts(layout, part_size, first, last))
        spec = RangeSpec(layout, part_size, first, last, drop, "fp", "up")
        whole = _Parts(part_size, True)
        want = _range(
            layout, _from(data, piece), part_size, first, last,
            fo.blind_state(layout, spec.span[0]), drop, whole,
        )  # fmt: skip
        got = _Parts(part_size, True)
        cp, result = None, None
        for _ in range(last - first + 1):
            cp, result = _attempt(layout, data, piece, spec, cp, got, further)
            assert cp is not None and mismatch(cp, spec) is None
            if result is not None:
                break
        assert result == want
        assert {n: bytes(b) for n, b in got.data.items()} == {
            n: bytes(b) for n, b in whole.data.items()
        }


def _number(p: PartRecord) -> int:
    return p.number


def _valid(spec: RangeSpec) -> RangeCheckpoint:
    """A checkpoint of ``spec`` after its first two parts (from two real attempts)."""
    layout = spec.layout
    data = [_content(i, s) for i, s in enumerate(SIZES)]
    cp, _ = _attempt(layout, data, 300, spec, None, _Parts(PART, True))
    assert cp is not None
    again, _ = _attempt(layout, data, 300, spec, cp, _Parts(PART, True))
    assert again is not None and again.state.offset > cp.state.offset
    return again


def test_only_a_checkpoint_of_this_very_range_is_used() -> None:
    layout = _layout()
    spec = _spec(layout, 1)
    assert spec.drop, "range 1 should start inside an entry"
    cp = _valid(spec)
    assert mismatch(cp, spec) is None
    other = _spec(layout, 2)
    wrong = {
        "another plan": dataclasses.replace(spec, fingerprint="other"),
        "another upload": dataclasses.replace(spec, upload_id="other"),
        "another range": other,
    }
    for why, spec2 in wrong.items():
        assert mismatch(cp, spec2) is not None, why
    parts = cp.parts
    odd = ZipState(cp.state.offset - 1, cp.state.entry, 0, cp.state.crcs)
    damaged = {
        "offset not on a part boundary": dataclasses.replace(cp, state=odd),
        "a part missing": dataclasses.replace(cp, parts=parts[1:]),
        "a deferred part named": dataclasses.replace(
            cp, parts=tuple(sorted([*parts, PartRecord(min(spec.drop), "e", PART)], key=_number))
        ),
        "a part of another size": dataclasses.replace(
            cp, parts=(dataclasses.replace(parts[0], size=PART - 1), *parts[1:])
        ),
        "the wrong first entry": dataclasses.replace(cp, crc_from=cp.crc_from + 1),
    }
    for why, bad in damaged.items():
        assert mismatch(bad, spec) is not None, why


def test_a_deferred_part_counts_as_done_only_once_the_stream_has_passed_it() -> None:
    """The writer drops a deferred part when its bytes are through, never uploads it;
    until then a checkpoint must not claim it (its state would be ahead of the stream)."""
    layout = _layout()
    spec = _spec(layout, 1)
    d = min(spec.drop)
    begin, end = spec.span
    archive = StoredArchive(
        layout, [[] for _ in layout.entries], boundary=PART, start=fo.blind_state(layout, begin),
        end=end,
    )  # fmt: skip
    checkpointer = RangeCheckpointer(
        cast("RecordStore[RangeCheckpoint]", _Store()), spec, archive, 0.0, None
    )
    covered = checkpointer._covered  # the rule under test
    before = [UploadedPart(n, "e", 0, PART) for n in range(spec.first, d)]
    short = covered(cast("PartWriter", _Writer(before, spec.part_end(d) - begin - 1)))
    assert short == ((d - spec.first, spec.part_end(d - 1)) if before else None)
    through = covered(cast("PartWriter", _Writer(before, spec.part_end(d) - begin)))
    assert through == (d - spec.first + 1, spec.part_end(d))


@given(st.lists(st.integers(0, 3000), min_size=1, max_size=9), st.data())
def test_source_bytes_before_an_offset(sizes: list[int], data: st.DataObject) -> None:
    """What a resumed build's progress starts from (``StoredLayout.source_before``):
    the data bytes of every entry before the archive offset, counted byte by byte."""
    layout = StoredLayout(_entries(sizes))
    offset = data.draw(st.integers(0, layout.length))
    starts = [layout.data_offset(i) for i in range(len(sizes))]
    want = sum(max(0, min(offset, lo + n) - lo) for lo, n in zip(starts, sizes, strict=True))
    assert layout.source_before(offset) == want
