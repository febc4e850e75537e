"""The byte budget: FIFO in bytes, no lost bytes on cancellation, honest peaks.

Why these matter (budget.py): read-ahead must be granted in archive order or
a later range can hold the budget an earlier one waits for (deadlock), and
every byte a cancelled waiter was granted must come back, or a long-running
worker slowly loses its whole budget.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.engine import Compression, Destination, MiB, ZipOptions, build_zip
from service.engine.budget import Budget, ByteSemaphore, Lease
from tests.support.archive_check import ExpectedEntry, verify_archive
from tests.support.sources import SyntheticS3, repeated


async def _settle() -> None:
    """Let every ready callback and task step run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_grants_immediately_within_capacity() -> None:
    sem = ByteSemaphore(100)
    await sem.acquire(60)
    await sem.acquire(40)
    assert sem.in_use == 100 and sem.peak == 100
    sem.release(100)
    assert sem.in_use == 0 and sem.peak == 100


async def test_unequal_requests_are_granted_in_fifo_order() -> None:
    """A small request that would fit must not overtake a big one queued before it."""
    sem = ByteSemaphore(100)
    await sem.acquire(90)
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await sem.acquire(n)
        order.append(name)

    big = asyncio.create_task(take("big", 60))
    await _settle()
    small = asyncio.create_task(take("small", 10))  # 90 + 10 fits, but big is first
    await _settle()
    assert order == []

    sem.release(60)  # 30 in use: big (60) fits now, and small after it
    await asyncio.wait_for(asyncio.gather(big, small), timeout=1)
    assert order == ["big", "small"]
    assert sem.in_use == 30 + 60 + 10


async def test_release_wakes_as_many_queued_waiters_as_fit() -> None:
    sem = ByteSemaphore(100)
    await sem.acquire(100)
    tasks = [asyncio.create_task(sem.acquire(30)) for _ in range(4)]
    await _settle()
    sem.release(100)
    await _settle()
    assert [t.done() for t in tasks] == [True, True, True, False]
    assert sem.in_use == 90
    sem.release(30)
    await tasks[3]
    assert sem.in_use == 90


async def test_request_larger_than_capacity_raises_at_once() -> None:
    sem = ByteSemaphore(100)
    with pytest.raises(ValueError, match="exceeds capacity"):
        await sem.acquire(101)
    assert sem.in_use == 0
    await sem.acquire(100)  # exactly the capacity is fine


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ByteSemaphore(0)


async def test_release_of_more_than_in_use_is_a_bug() -> None:
    sem = ByteSemaphore(100)
    await sem.acquire(10)
    with pytest.raises(RuntimeError):
        sem.release(11)


async def test_cancelled_waiter_unblocks_the_ones_behind_it() -> None:
    """The head of the queue blocks smaller requests; cancelling it must wake them."""
    sem = ByteSemaphore(100)
    await sem.acquire(50)
    head = asyncio.create_task(sem.acquire(80))
    await _settle()
    behind = asyncio.create_task(sem.acquire(20))
    await _settle()
    assert not behind.done()

    head.cancel()
    await asyncio.wait_for(behind, timeout=1)
    with pytest.raises(asyncio.CancelledError):
        await head
    assert sem.in_use == 70


async def test_waiter_cancelled_right_after_grant_gives_its_bytes_back() -> None:
    """Granted (future resolved) but cancelled before it resumed: nobody holds those bytes."""
    sem = ByteSemaphore(100)
    await sem.acquire(100)
    waiter = asyncio.create_task(sem.acquire(60))
    await _settle()
    sem.release(100)  # grants 60 to the waiter: in_use 60, its future is done
    assert sem.in_use == 60
    waiter.cancel()  # before the waiter task ran again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert sem.in_use == 0
    await asyncio.wait_for(sem.acquire(100), timeout=1)  # the full capacity is usable again


async def test_cancel_after_grant_passes_the_bytes_to_the_next_waiter() -> None:
    sem = ByteSemaphore(100)
    await sem.acquire(100)
    first = asyncio.create_task(sem.acquire(70))
    await _settle()
    second = asyncio.create_task(sem.acquire(70))
    await _settle()
    sem.release(100)
    first.cancel()
    await asyncio.wait_for(second, timeout=1)
    assert sem.in_use == 70
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_hold_releases_on_error() -> None:
    sem = ByteSemaphore(10)
    with pytest.raises(KeyError):
        async with sem.hold(7):
            assert sem.in_use == 7
            raise KeyError("boom")
    assert sem.in_use == 0


async def test_peak_is_the_highest_simultaneous_use() -> None:
    sem = ByteSemaphore(100)
    await sem.acquire(30)
    await sem.acquire(40)
    sem.release(30)
    await sem.acquire(20)
    sem.release(60)
    assert (sem.in_use, sem.peak) == (0, 70)


def test_lease_carve_over_its_size_raises() -> None:
    lease = Lease(100)
    lease.carve(60)
    lease.carve(40)
    with pytest.raises(ValueError, match="cannot carve"):
        lease.carve(1)


async def test_lease_counts_every_carved_semaphore_in_its_peak() -> None:
    lease = Lease(100)
    reads = lease.carve(60)
    parts = lease.carve(40)
    await reads.acquire(50)
    await parts.acquire(40)
    reads.release(50)
    await reads.acquire(10)
    assert (lease.in_use, lease.peak) == (50, 90)


async def test_budget_leases_are_fifo_and_bounded() -> None:
    """Concurrent jobs share one budget: the sum held never exceeds it."""
    budget = Budget(100)
    order: list[str] = []
    held = 0
    max_held = 0

    async def job(name: str, size: int) -> None:
        nonlocal held, max_held
        async with budget.lease(size) as lease:
            assert lease.size == size
            held += size
            max_held = max(max_held, held)
            order.append(name)
            await asyncio.sleep(0.01)
            held -= size

    await asyncio.gather(job("a", 70), job("b", 60), job("c", 30), job("d", 10))
    # c (30) would fit beside a, but queues behind b (60), which waits for a.
    assert order == ["a", "b", "c", "d"]
    assert max_held <= 100
    assert budget.in_use == 0


async def test_cancelled_lease_waiter_leaves_the_budget_whole() -> None:
    budget = Budget(100)
    async with budget.lease(100):
        waiter = asyncio.create_task(budget.lease(50).__aenter__())
        await _settle()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert budget.in_use == 0
    async with budget.lease(100):
        assert budget.in_use == 100


# ------------------------------------------------------------ the whole engine, any budget


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 2 * MiB + 5), min_size=1, max_size=7),
    big=st.one_of(st.none(), st.integers(5 * MiB, 13 * MiB)),  # several parts
    big_at=st.integers(0, 7),
    range_size=st.integers(1024, 2 * MiB).map(lambda n: n | 1),  # odd: nothing aligns
    extra=st.integers(0, 6 * MiB),
    upload_concurrency=st.integers(1, 4),
    read_concurrency=st.integers(1, 8),
    compression=st.sampled_from(list(Compression)),
)
async def test_engine_never_deadlocks_and_stays_within_any_budget_it_accepts(
    sizes: list[int],
    big: int | None,
    big_at: int,
    range_size: int,
    extra: int,
    upload_concurrency: int,
    read_concurrency: int,
    compression: Compression,
) -> None:
    """From the smallest budget the engine accepts (one part + one range) upwards,
    with any range size and concurrency, the job ends, gives back every byte of
    its budget, and the archive is right. A deadlock shows as a timeout. (Memory
    bounds are measured, not taken from the accounting: test_memory_bounds.py.)"""
    if big is not None:
        sizes = [*sizes[:big_at], big, *sizes[big_at:]]
    budget_bytes = 5 * MiB + range_size + extra
    options = ZipOptions(
        budget_bytes=budget_bytes,
        range_size=range_size,
        min_part_size=5 * MiB,
        upload_concurrency=upload_concurrency,
        read_concurrency=read_concurrency,
        compression=compression,
    )
    with tempfile.TemporaryDirectory(prefix="zj-budget-") as tmp:
        path = Path(tmp) / "archive.zip"
        s3 = SyntheticS3(path)
        contents = [repeated(size, seed=i) for i, size in enumerate(sizes)]
        sources = [s3.add("src", f"f{i}.bin", c) for i, c in enumerate(contents)]
        budget = Budget(budget_bytes)
        result = await asyncio.wait_for(
            build_zip(sources, Destination("dst", "a.zip"), s3=s3, options=options, budget=budget),
            timeout=120,
        )
        assert budget.in_use == 0
        assert result.parts == max(1, len(s3.parts))
        assert result.archive_bytes == path.stat().st_size
        verify_archive(
            path, {f"f{i}.bin": ExpectedEntry(c.size, c.crc32()) for i, c in enumerate(contents)}
        )
