"""The ZIP layer on its own: ``build_stream`` + ``ZipPump`` fed with ranges we fill ourselves.

No S3 here: slots are filled the way ``RangeReader`` fills them (archive
order, under a read budget, pieces arriving while the pump runs), so what is
tested is the stream format, the exact length, dates and modes, determinism,
deflate, and the pump's promise never to step before data is there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import zipfile
from pathlib import Path

import pytest

from service.engine.budget import ByteSemaphore
from service.engine.models import Compression, LengthMismatchError, PlannedEntry
from service.engine.reader import RangeSlot
from service.engine.zip_stream import FILE_MODE, ZipPump, build_stream, dos_date_time
from service.units import MiB
from tests.support.archive_check import verify_archive
from tests.support.sources import (
    FIXED_DATE,
    CountingSink,
    RepeatedContent,
    feed_ranges,
    planned_entry,
    pump_synthetic,
    repeated,
)

RANGE = 256 * 1024

# Sizes around every boundary the reader and the pump care about.
MIXED: list[tuple[str, RepeatedContent]] = [
    ("empty.pdf", repeated(0)),
    ("one byte.txt", repeated(1, 1)),
    ("exactly one range.bin", repeated(RANGE, 2)),
    ("one range plus one.bin", repeated(RANGE + 1, 3)),
    ("dir/many ranges.bin", repeated(5 * RANGE + 123, 4)),
    ("dir/sub/Ünïcödé 文件 📄.pdf", repeated(10_000, 5)),
    ("second empty", repeated(0)),
    ("last piece is partial.bin", repeated(3 * MiB + 17, 6, block_size=MiB)),
]


def _entries(
    items: list[tuple[str, RepeatedContent]], modified: dt.datetime = FIXED_DATE
) -> list[PlannedEntry]:
    return [planned_entry(name, c.size, modified=modified) for name, c in items]


async def _build(
    path: Path,
    items: list[tuple[str, RepeatedContent]],
    *,
    compression: Compression = Compression.STORED,
    modified: dt.datetime = FIXED_DATE,
    prefeed: bool = False,
) -> bytes:
    sink = CountingSink(path)
    try:
        run = await pump_synthetic(
            _entries(items, modified),
            [c for _, c in items],
            sink,
            compression=compression,
            range_size=RANGE,
            read_window=64 * MiB if prefeed else 2 * RANGE,
            prefeed=prefeed,
        )
    finally:
        sink.close()
    data = path.read_bytes()
    assert run.archive_bytes == sink.bytes == len(data)
    if run.predicted_length is not None:
        assert run.predicted_length == len(data)
    return data


def _expected(items: list[tuple[str, RepeatedContent]]) -> dict[str, bytes]:
    return {name: c.materialize() for name, c in items}


async def test_stored_archive_round_trips_with_exact_length(tmp_path: Path) -> None:
    path = tmp_path / "mixed.zip"
    await _build(path, MIXED)
    verify_archive(path, _expected(MIXED))
    with zipfile.ZipFile(path) as zf:
        assert [i.filename for i in zf.infolist()] == [n for n, _ in MIXED]
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


async def test_arrival_timing_does_not_change_a_byte(tmp_path: Path) -> None:
    """Same entries, all data up front vs trickling in under a two-range window."""
    upfront = await _build(tmp_path / "a.zip", MIXED, prefeed=True)
    trickled = await _build(tmp_path / "b.zip", MIXED)
    assert upfront == trickled


async def test_two_runs_give_identical_archives(tmp_path: Path) -> None:
    """Reproducible: no generation-time stamps, no per-run state in the bytes."""
    first = await _build(tmp_path / "a.zip", MIXED)
    second = await _build(tmp_path / "b.zip", MIXED)
    assert first == second


async def test_entry_dates_are_the_sources_utc_last_modified(tmp_path: Path) -> None:
    # 23:30 at UTC-05:00 is 04:30 the next day in UTC: date and hour both move.
    local = dt.datetime(2023, 12, 31, 23, 30, 44, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    path = tmp_path / "dates.zip"
    await _build(path, MIXED[:3], modified=local)
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            # DOS time has 2-second resolution.
            assert info.date_time == (2024, 1, 1, 4, 30, 44), info.filename
            assert info.external_attr >> 16 == FILE_MODE == 0o100644
    verify_archive(path, _expected(MIXED[:3]))


def test_dos_date_time_is_utc_whatever_the_zone() -> None:
    when = dt.datetime(2024, 6, 1, 2, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    assert dos_date_time(when) == (2024, 5, 31, 23, 0, 1)
    assert dos_date_time(when.astimezone(dt.UTC)) == (2024, 5, 31, 23, 0, 1)


async def test_deflate_round_trips(tmp_path: Path) -> None:
    items = [
        ("text.txt", RepeatedContent(3 * MiB + 5, b"all work and no play " * 50)),
        ("random.bin", repeated(2 * MiB + 3, 7)),
        ("empty", repeated(0)),
        ("Ünïcödé.txt", RepeatedContent(1000, b"abc")),
    ]
    path = tmp_path / "deflate.zip"
    data = await _build(path, items, compression=Compression.DEFLATE)
    verify_archive(path, _expected(items))
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    assert infos["text.txt"].compress_type == zipfile.ZIP_DEFLATED
    assert infos["text.txt"].compress_size < infos["text.txt"].file_size // 100
    assert len(data) < sum(c.size for _, c in items)


async def test_progress_steps_are_monotone_and_end_at_the_totals(tmp_path: Path) -> None:
    sink = CountingSink()
    run = await pump_synthetic(
        _entries(MIXED), [c for _, c in MIXED], sink, range_size=RANGE, read_window=2 * RANGE
    )
    assert run.steps, "the pump reports progress"
    done_bytes = [b for b, _ in run.steps]
    done_files = [f for _, f in run.steps]
    assert done_bytes == sorted(done_bytes) and done_files == sorted(done_files)
    assert run.steps[-1] == (sum(c.size for _, c in MIXED), len(MIXED))


async def test_read_budget_is_returned_and_never_exceeded() -> None:
    window = 2 * RANGE
    stream, feeds, cursor = build_stream(_entries(MIXED), Compression.STORED, RANGE)
    budget = ByteSemaphore(window)
    pump = ZipPump(
        stream, feeds, cursor, budget, CountingSink(), on_step=lambda b, f: None, threaded=False
    )
    async with asyncio.TaskGroup() as tg:
        contents = [c for _, c in MIXED]
        tg.create_task(feed_ranges(_entries(MIXED), contents, feeds, budget, RANGE, pump.notify))
        tg.create_task(pump.run())
    assert budget.in_use == 0
    assert budget.peak >= RANGE


# ------------------------------------------------------------ the pump never blocks


async def test_pump_waits_for_data_instead_of_stepping() -> None:
    """Until the current entry's first piece lands the pump writes nothing (no
    local header either) and does not raise; then it finishes the archive."""
    entry = planned_entry("late.bin", 1000)
    stream, feeds, cursor = build_stream([entry], Compression.STORED, RANGE)
    budget = ByteSemaphore(RANGE)
    sink = CountingSink()
    pump = ZipPump(stream, feeds, cursor, budget, sink, on_step=lambda b, f: None, threaded=False)
    task = asyncio.create_task(pump.run())
    for _ in range(20):
        await asyncio.sleep(0)
    assert sink.bytes == 0 and not task.done()

    await budget.acquire(1000)
    slot = RangeSlot(entry, 0, 1000)
    feeds[0].add(slot)
    pump.notify()
    for _ in range(20):
        await asyncio.sleep(0)
    assert sink.bytes == 0 and not task.done()  # a slot with no piece is not data

    slot.pieces.append(memoryview(b"x" * 1000))
    slot.done = True
    pump.notify()
    await asyncio.wait_for(task, timeout=5)
    assert sink.bytes == len(stream)
    assert budget.in_use == 0


@pytest.mark.parametrize("delta", [1, -1])
async def test_an_entry_of_the_wrong_size_aborts_the_stream(delta: int) -> None:
    """The planned size is in the headers already; a source that grew or shrank
    (which If-Match should have caught) must never give a silently wrong archive."""
    entry = planned_entry("changed.pdf", 1000)
    stream, feeds, cursor = build_stream([entry], Compression.STORED, RANGE)
    budget = ByteSemaphore(RANGE)
    await budget.acquire(1000)
    slot = RangeSlot(entry, 0, 1000)
    slot.pieces.append(memoryview(b"y" * (1000 + delta)))
    slot.done = True
    feeds[0].add(slot)
    pump = ZipPump(
        stream, feeds, cursor, budget, CountingSink(), on_step=lambda b, f: None, threaded=False
    )
    with pytest.raises(LengthMismatchError, match=r"changed\.pdf"):
        await asyncio.wait_for(pump.run(), timeout=5)
