"""Sizes decided before the first byte moves: ranges, parts, budget shares.

Pure arithmetic, so it is unit-tested exhaustively and the I/O modules only
follow the numbers. The archive length is exact (sized zip stream), so the
part size is chosen once and the 10,000-part limit can never be hit mid-job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..units import MiB
from .models import ArchiveTooLargeError, BudgetTooSmallError

S3_MIN_PART = 5 * MiB
S3_MAX_PART = 5 * 1024 * MiB
S3_MAX_PARTS = 10_000
S3_MAX_OBJECT = 5 * 1024 * 1024 * MiB  # 5 TiB
# Aim below the hard limit so a plan that is off by a little still fits.
TARGET_MAX_PARTS = 9_000


def part_size_for(archive_bytes: int, min_part_size: int = 8 * MiB) -> int:
    """max(min_part_size, ceil(archive / 9,000)), rounded up to a whole MiB.

    Whole MiB keeps part buffers a few distinct sizes, which the allocator
    reuses better than odd sizes.
    """
    if archive_bytes > S3_MAX_OBJECT:
        raise ArchiveTooLargeError(
            f"archive of {archive_bytes} bytes is over S3's 5 TiB object limit; split the job"
        )
    need = math.ceil(archive_bytes / TARGET_MAX_PARTS)
    size = max(min_part_size, S3_MIN_PART, need)
    size = math.ceil(size / MiB) * MiB
    return min(size, S3_MAX_PART)


def byte_ranges(size: int, range_size: int) -> list[tuple[int, int]]:
    """Split ``size`` bytes into ``[start, end)`` ranges; an empty object has none."""
    return [(start, min(start + range_size, size)) for start in range(0, size, range_size)]


# What one S3 request round trip is worth in bytes: about 20 ms at the
# ~80 MB/s one connection gets. A buffer is held for its transfer time plus
# one round trip, so this is the fixed cost of every range and part
# (docs/performance.md, "The budget split").
ROUND_TRIP_BYTES = 1_600_000


@dataclass(frozen=True, slots=True)
class BudgetShares:
    """How one job splits its byte budget between stages.

    ``part_buffers`` buffers of ``part_size`` bytes (one filling, the rest
    uploading); everything else is read-ahead. Both are fixed at start, so
    the reader can never starve the uploader of a buffer (or the reverse):
    that split is what makes the pipeline deadlock-free.
    """

    part_size: int
    part_buffers: int
    read_window: int

    @property
    def total(self) -> int:
        return self.part_size * self.part_buffers + self.read_window


def split_budget(
    budget_bytes: int,
    part_size: int,
    range_size: int,
    upload_concurrency: int,
    single_put: bool = False,
) -> BudgetShares:
    """Split the budget so neither stage waits for the other (Little's law).

    At a steady throughput T, a stage holds T x (how long each of its bytes
    stays in a buffer). A read range is held for its transfer plus a round
    trip; a part buffer for its fill (one part, whatever T is: the filling
    buffer) plus its transfer plus a round trip. So after the one filling
    buffer, the budget is shared in proportion ``part + RT : range + RT``.
    With 64 MiB, 8 MiB parts and 4 MiB ranges that is 5 part buffers (4
    uploading while one fills, as many as ``upload_concurrency`` allows) and
    24 MiB of read-ahead; the old "uploads get half" gave 4 buffers, so only
    3 uploads were ever in flight (docs/performance.md).

    The minimum that works is one part buffer plus one read range; below
    that the job fails at start with a message that says how much it needs.
    A single-PutObject archive needs one buffer of exactly its size.
    """
    minimum = part_size + range_size
    if budget_bytes < minimum:
        raise BudgetTooSmallError(
            f"budget of {budget_bytes / MiB:.1f} MiB is too small: this archive needs at least "
            f"{math.ceil(minimum / MiB)} MiB (one {part_size // MiB} MiB upload part plus one "
            f"{range_size // MiB} MiB read range)"
        )
    if single_put:
        return BudgetShares(part_size, 1, budget_bytes - part_size)
    wanted = upload_concurrency + 1  # the one being filled plus those in flight
    up_weight = part_size + ROUND_TRIP_BYTES
    read_weight = range_size + ROUND_TRIP_BYTES
    uploading = (budget_bytes - part_size) * up_weight / (up_weight + read_weight)
    buffers = max(1, min(wanted, 1 + round(uploading / part_size)))
    # The read window must hold at least one whole range, or a range could
    # never be granted.
    while buffers > 1 and budget_bytes - buffers * part_size < range_size:
        buffers -= 1
    return BudgetShares(part_size, buffers, budget_bytes - buffers * part_size)
