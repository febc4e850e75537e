"""Sizes fixed before the first byte moves: part size, ranges, budget shares.

The S3 limits are the oracle here (docs/DESIGN.md, "AWS limits"): parts 5 MiB..5 GiB, at most
10,000 parts, objects up to 5 TiB.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from service.engine.layout import (
    S3_MAX_PART,
    S3_MAX_PARTS,
    S3_MIN_PART,
    byte_ranges,
    part_size_for,
    split_budget,
)
from service.engine.models import BudgetTooSmallError
from service.units import MiB

GiB = 1024 * MiB
TiB = 1024 * GiB
S3_MAX_OBJECT = 5 * TiB


@pytest.mark.parametrize(
    ("archive", "min_part", "part"),
    [
        (0, 8 * MiB, 8 * MiB),
        (1, 8 * MiB, 8 * MiB),
        (10 * GiB, 8 * MiB, 8 * MiB),
        (1, 1, S3_MIN_PART),  # never below S3's minimum
        (1, 5 * MiB + 1, 6 * MiB),  # whole MiB
        (100 * GiB, 5 * MiB, 12 * MiB),  # ceil(100 GiB / 9,000) = 11.4 MiB
        (S3_MAX_OBJECT, 8 * MiB, 583 * MiB),
    ],
)
def test_part_size_table(archive: int, min_part: int, part: int) -> None:
    assert part_size_for(archive, min_part) == part


def test_part_size_refuses_archives_over_the_5_tib_object_limit() -> None:
    from service.engine.models import ArchiveTooLargeError

    with pytest.raises(ArchiveTooLargeError, match="5 TiB"):
        part_size_for(50 * TiB)


@given(
    archive=st.integers(min_value=0, max_value=S3_MAX_OBJECT),
    min_part=st.integers(min_value=1, max_value=256 * MiB),
)
@example(archive=S3_MAX_OBJECT, min_part=1)
@example(archive=S3_MAX_PARTS * S3_MIN_PART + 1, min_part=S3_MIN_PART)
@example(archive=9_000 * 8 * MiB + 1, min_part=8 * MiB)
def test_part_size_fits_s3_limits_for_any_archive_up_to_5_tib(archive: int, min_part: int) -> None:
    part = part_size_for(archive, min_part)
    assert S3_MIN_PART <= part <= S3_MAX_PART
    assert part >= min_part
    assert part % MiB == 0
    assert math.ceil(archive / part) <= S3_MAX_PARTS


@given(archive=st.integers(min_value=0, max_value=S3_MAX_OBJECT - 64 * MiB))
def test_part_size_grows_with_the_archive(archive: int) -> None:
    assert part_size_for(archive) <= part_size_for(archive + 64 * MiB)


# ------------------------------------------------------------------ byte_ranges


@pytest.mark.parametrize(
    ("size", "range_size", "ranges"),
    [
        (0, 4, []),
        (1, 4, [(0, 1)]),
        (4, 4, [(0, 4)]),
        (9, 4, [(0, 4), (4, 8), (8, 9)]),
    ],
)
def test_byte_ranges_table(size: int, range_size: int, ranges: list[tuple[int, int]]) -> None:
    assert byte_ranges(size, range_size) == ranges


@given(
    st.integers(min_value=1, max_value=10**6).flatmap(
        lambda r: st.tuples(st.integers(min_value=0, max_value=r * 2_000), st.just(r))
    )
)
def test_byte_ranges_cover_the_object_exactly(size_and_range: tuple[int, int]) -> None:
    size, range_size = size_and_range
    ranges = byte_ranges(size, range_size)
    assert len(ranges) == math.ceil(size / range_size)
    pos = 0
    for start, end in ranges:
        assert start == pos
        assert 0 < end - start <= range_size
        pos = end
    assert pos == size


# ------------------------------------------------------------------ split_budget


def test_split_budget_minimum_message_names_what_is_needed() -> None:
    with pytest.raises(BudgetTooSmallError, match=r"at least 12 MiB"):
        split_budget(11 * MiB, part_size=8 * MiB, range_size=4 * MiB, upload_concurrency=4)


@pytest.mark.parametrize(
    ("budget", "concurrency", "buffers", "window"),
    [
        (12 * MiB, 4, 1, 4 * MiB),  # the bare minimum: one part, one range
        # The default: 4 uploading while one fills (the old "half" gave 4
        # buffers, so only 3 parts were ever in flight), 6 ranges ahead.
        (64 * MiB, 4, 5, 24 * MiB),
        (32 * MiB, 4, 3, 8 * MiB),  # 8 + 24 x (9.6 / 15.2) = 23 MiB of parts
        (256 * MiB, 4, 5, 216 * MiB),  # capped at concurrency + 1
        (20 * MiB, 0, 1, 12 * MiB),
    ],
)
def test_split_budget_table(budget: int, concurrency: int, buffers: int, window: int) -> None:
    shares = split_budget(budget, 8 * MiB, 4 * MiB, concurrency)
    assert (shares.part_buffers, shares.read_window) == (buffers, window)


budgets = st.integers(min_value=0, max_value=8 * GiB)
part_sizes = st.integers(min_value=5, max_value=512).map(lambda n: n * MiB)
range_sizes = st.integers(min_value=64 * 1024, max_value=64 * MiB)
concurrencies = st.integers(min_value=0, max_value=64)


@given(budgets, part_sizes, range_sizes, concurrencies, st.booleans())
@example(budget=12 * MiB - 1, part=8 * MiB, rng=4 * MiB, conc=4, single=False)
@example(budget=12 * MiB, part=8 * MiB, rng=4 * MiB, conc=4, single=True)
def test_split_budget_properties(budget: int, part: int, rng: int, conc: int, single: bool) -> None:
    if budget < part + rng:
        with pytest.raises(BudgetTooSmallError):
            split_budget(budget, part, rng, conc, single_put=single)
        return
    shares = split_budget(budget, part, rng, conc, single_put=single)
    assert shares.part_size == part
    assert shares.total <= budget
    assert shares.read_window >= rng, "a whole read range must always fit"
    assert 1 <= shares.part_buffers <= max(1, conc + 1)
    if single:
        assert shares.part_buffers == 1


@given(budgets, part_sizes, range_sizes, concurrencies)
def test_split_budget_more_budget_never_means_fewer_uploads(
    budget: int, part: int, rng: int, conc: int
) -> None:
    if budget < part + rng:
        return
    less = split_budget(budget, part, rng, conc)
    more = split_budget(budget + part, part, rng, conc)
    assert more.part_buffers >= less.part_buffers
    assert more.read_window >= rng


def test_archives_over_five_tib_are_refused_before_any_upload() -> None:
    from service.engine.models import ArchiveTooLargeError

    five_tib = 5 * 1024**4
    assert part_size_for(five_tib) * 10_000 >= five_tib
    with pytest.raises(ArchiveTooLargeError, match="5 TiB"):
        part_size_for(five_tib + 1)
