"""The benchmark endpoint's reorder buffer: parts out of order, held within a memory cap."""

from __future__ import annotations

import random

from loadtest.bench_endpoint.zipcheck import Reorder


def _parts(count: int, size: int) -> dict[int, bytes]:
    rng = random.Random(count * 7 + size)
    return {n: rng.randbytes(size) for n in range(1, count + 1)}


def test_parts_come_out_in_order_whatever_order_they_arrive_in() -> None:
    parts = _parts(40, 1000)
    order = list(parts)
    random.Random(3).shuffle(order)
    reorder = Reorder(memory_bytes=5_000)
    out: list[bytes] = []
    most_in_memory = 0
    for n in order:
        out += [b"".join(chunks) for chunks in reorder.add(n, [parts[n][:10], parts[n][10:]], 1000)]
        most_in_memory = max(most_in_memory, reorder.in_memory)
    assert out == [parts[n] for n in sorted(parts)]
    # At most the cap in memory (plus the one part that is next, never spilled)...
    assert most_in_memory <= 5_000 + 1000
    # ...the rest went through files, and nothing is held at the end.
    assert reorder.spilled_bytes > 0 and reorder.held_bytes == reorder.in_memory == 0


def test_a_fanned_out_upload_far_ahead_is_spilled_then_flushed_in_the_final_order() -> None:
    """Two ranges: the second sends all its parts first (as a faster worker would)."""
    parts = _parts(20, 2000)
    reorder = Reorder(memory_bytes=4_000)
    assert all(reorder.add(n, [parts[n]], 2000) == [] for n in range(11, 21))
    assert reorder.in_memory <= 4_000 and reorder.held_bytes == 10 * 2000
    spill_dir = reorder._dir
    assert spill_dir is not None
    got = [b"".join(c) for n in range(1, 10) for c in reorder.add(n, [parts[n]], 2000)]
    assert got == [parts[n] for n in range(1, 10)]
    # Part 10 never arrives as a part of its own: Complete's list decides.
    tail = [b"".join(c) for c in reorder.flush([*range(1, 10), *range(11, 21)])]
    assert tail == [parts[n] for n in range(11, 21)]
    assert reorder._dir is None and reorder.held == {}
