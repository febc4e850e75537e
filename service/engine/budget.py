"""One byte budget for every buffer, shared by every job in a process.

Why our own code: asyncio.Semaphore counts permits, not bytes, and grants
them in no guaranteed order for unequal requests. We need both: bytes, and
strict FIFO, because read-ahead must be granted in archive order (a later
range holding budget while an earlier one waits is a deadlock; docs/DESIGN.md,
"The engine, stage by stage").

Two levels:
- ``Budget`` is process-wide. A job takes one ``Lease`` of a fixed size at
  start and gives it back at the end, so N concurrent jobs never hold more
  than the budget between them.
- Inside a lease, ``carve`` makes FIFO byte semaphores for each stage
  (read-ahead, part buffers). Their capacities add up to at most the lease,
  and every acquisition is counted, so ``Lease.peak`` is the engine's own
  accounting that tests check against the budget.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class ByteSemaphore:
    """An async FIFO semaphore counted in bytes.

    A request larger than the capacity can never be granted, so it raises at
    once instead of waiting forever.
    """

    def __init__(self, capacity: int, on_change: Callable[[int], None] | None = None) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.in_use = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._on_change = on_change

    async def acquire(self, n: int) -> None:
        if n > self.capacity:
            raise ValueError(f"request of {n} bytes exceeds capacity {self.capacity}")
        if not self._waiters and self.in_use + n <= self.capacity:
            self._grant(n)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just before we were cancelled
            else:
                self._waiters.remove(entry)
                self._wake()  # we may have been blocking smaller requests behind us
            raise

    def release(self, n: int) -> None:
        if n > self.in_use:
            raise RuntimeError(f"release of {n} bytes but only {self.in_use} in use")
        self.in_use -= n
        self._changed(-n)
        self._wake()

    @asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        await self.acquire(n)
        try:
            yield
        finally:
            self.release(n)

    def _grant(self, n: int) -> None:
        self.in_use += n
        self.peak = max(self.peak, self.in_use)
        self._changed(n)

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.cancelled():
                self._waiters.popleft()
                continue
            if self.in_use + n > self.capacity:
                return
            self._waiters.popleft()
            self._grant(n)
            fut.set_result(None)

    def _changed(self, delta: int) -> None:
        if self._on_change is not None:
            self._on_change(delta)


class Lease:
    """A job's share of the process budget, split into stage semaphores."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.carved = 0
        self.in_use = 0
        self.peak = 0

    def carve(self, capacity: int) -> ByteSemaphore:
        """A stage semaphore whose usage counts against this lease."""
        if self.carved + capacity > self.size:
            raise ValueError(f"cannot carve {capacity} bytes: {self.size - self.carved} left")
        self.carved += capacity
        return ByteSemaphore(capacity, on_change=self._count)

    def _count(self, delta: int) -> None:
        self.in_use += delta
        self.peak = max(self.peak, self.in_use)


class Budget:
    """The process-wide budget. Share one instance between concurrent jobs."""

    def __init__(self, capacity: int) -> None:
        self._sem = ByteSemaphore(capacity)

    @property
    def capacity(self) -> int:
        return self._sem.capacity

    @property
    def in_use(self) -> int:
        return self._sem.in_use

    @property
    def peak(self) -> int:
        return self._sem.peak

    @asynccontextmanager
    async def lease(self, size: int) -> AsyncIterator[Lease]:
        """Wait (FIFO) until ``size`` bytes are free, hold them for the block."""
        async with self._sem.hold(size):
            yield Lease(size)
