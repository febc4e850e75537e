"""``zipjobs worker``: run job messages from SQS under one shared memory budget.

- Long polling, asking only for as many messages as there are free job slots.
- One ``Budget`` for the process; each job takes its share as a lease.
- While a job runs its message's visibility is extended, so no other worker
  sees it; if this process dies, the message reappears once the extension
  runs out and another worker takes the job over after its lease expired.
- SIGTERM (``stop()``): no new jobs (a long poll in flight is let finish and
  what it brings is returned at once); running jobs get ``grace`` seconds
  to finish, then are cancelled, which releases their lease and makes their
  message visible again for another worker.
- Every ``ZIPJOBS_SWEEP_INTERVAL_SECONDS`` it also sweeps the table for stuck
  jobs and handles the dead-letter queue (``jobs/sweeper.py``), so a
  deployment of workers alone keeps the "every job ends" promise; several
  workers sweeping at once is safe (conditional writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

from .engine import Budget, MiB
from .jobs import Action, JobService, Outcome, parse_message, run_job_message
from .jobs.continuation import continue_if_progressed, kept_bytes
from .jobs.queue import settle
from .jobs.sweeper import drain_dead_letters, sweep
from .jobs.visibility import keep_invisible, visibility_window

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef


log = logging.getLogger(__name__)


def worker_id() -> str:
    """Lease owner: readable in the table, unique per process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        svc: JobService,
        *,
        concurrency: int | None = None,
        budget: Budget | None = None,
        poll_seconds: int = 20,
        grace_seconds: float = 30.0,
        owner: str | None = None,
    ) -> None:
        settings = svc.settings
        self.svc = svc
        self.concurrency = concurrency or settings.worker_concurrency
        self.budget = budget or Budget(settings.budget_mb * MiB)
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self.owner = owner or worker_id()
        # While a job runs its message stays hidden this long past each extension;
        # at least the lease, so a redelivery after a crash finds the lease expired.
        self.visibility_seconds = visibility_window(settings.lease_seconds)
        self._slots = asyncio.Semaphore(self.concurrency)
        self._jobs: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._returning: list[asyncio.Task[None]] = []
        self.completed = 0

    def stop(self) -> None:
        """Stop taking messages (SIGTERM); ``run`` then drains and returns."""
        self._stopping.set()

    async def run(self) -> None:
        log.info(
            "worker %s: %d job(s) at a time, budget %d MiB, queue %s",
            self.owner,
            self.concurrency,
            self.budget.capacity // MiB,
            self.svc.settings.queue_url,
        )
        await self.svc.max_receives()
        sweeper = asyncio.create_task(self._sweep_periodically())
        try:
            await self._receive_until_stopped()
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)

    async def _sweep_periodically(self) -> None:
        """Sweep now, then every interval, until stopped; a failed sweep is only logged."""
        interval = self.svc.settings.sweep_interval_seconds
        if interval <= 0:
            return
        while not self._stopping.is_set():
            try:
                await sweep(self.svc)
                await drain_dead_letters(self.svc)
            except Exception as err:
                log.warning("sweep failed: %s", err)
            await self._sleep_unless_stopping(interval)

    async def _receive_until_stopped(self) -> None:
        while not self._stopping.is_set():
            if not await self._acquire_slot():
                break
            try:
                messages = await self._receive()
            except Exception as err:
                self._slots.release()
                log.warning("receive failed: %s; retrying in 2 s", err)
                await self._sleep_unless_stopping(2)
                continue
            self._start(messages)
        await self._drain()

    async def _acquire_slot(self) -> bool:
        """Wait for a free job slot; False if stop came first (no slot held then)."""
        acquire = asyncio.ensure_future(self._slots.acquire())
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
        if acquire.done() and not acquire.cancelled():
            if not self._stopping.is_set():
                return True
            self._slots.release()
        return False

    async def _receive(self) -> list[MessageTypeDef]:
        """One long poll, cut short by stop; holds one slot, takes more if free."""
        extra = 0
        while extra < self.concurrency - 1 and not self._slots.locked():
            await self._slots.acquire()
            extra += 1
        poll = asyncio.ensure_future(
            self.svc.sqs.receive_message(
                QueueUrl=self.svc.settings.queue_url,
                MaxNumberOfMessages=min(10, extra + 1),
                WaitTimeSeconds=self.poll_seconds,
                VisibilityTimeout=self.visibility_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        )
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({poll, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not poll.done():
            # Never cancel a poll in flight: SQS may already have handed it a
            # message (counting a receive and hiding it for the visibility
            # timeout) that would then be lost until it reappears. Let it end
            # and give back whatever it brings.
            self._returning.append(asyncio.create_task(self._give_back(poll)))
            messages: list[MessageTypeDef] = []
        else:
            messages = poll.result().get("Messages", [])
        unused = extra + 1 - len(messages)
        for _ in range(unused):
            self._slots.release()
        return messages

    async def _give_back(self, poll: asyncio.Future[Any]) -> None:
        try:
            messages = (await poll).get("Messages", [])
        except Exception as err:
            log.warning("receive failed while stopping: %s", err)
            return
        for message in messages:
            await self._settle(message["ReceiptHandle"], Outcome(Action.RETRY, "stopping"))

    def _start(self, messages: list[MessageTypeDef]) -> None:
        for message in messages:
            task = asyncio.create_task(self._handle(message))
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)

    async def _handle(self, message: MessageTypeDef) -> None:
        """Run one message and act on the outcome; always frees its slot."""
        try:
            await self._handle_inner(message)
        except Exception:
            log.exception("message %s: unexpected error", message.get("MessageId"))
        finally:
            self._slots.release()

    async def _handle_inner(self, message: MessageTypeDef) -> None:
        receipt = message["ReceiptHandle"]
        count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        msg = parse_message(message.get("Body", ""), message["MessageId"], count)
        if msg is None:
            log.error("message %s is not a job message; deleting it", message["MessageId"])
            poison = Outcome(Action.DELETE, "not a job message")
            await settle(self.svc.sqs, self.svc.settings.queue_url, receipt, poison, delete=True)
            return
        keeper = asyncio.create_task(
            keep_invisible(
                self.svc.sqs, self.svc.settings.queue_url, receipt, self.visibility_seconds
            )
        )
        # What the upload holds now: a job released on shutdown that kept more
        # is continued afresh, so redeploys never use up its attempts
        # (service/jobs/continuation.py).
        kept_before = await kept_bytes(self.svc, msg.job_id)
        job = asyncio.create_task(
            run_job_message(self.svc, msg, owner=self.owner, budget=self.budget)
        )
        try:
            outcome = await asyncio.shield(job)
        except asyncio.CancelledError:
            # Shutdown after the grace period: the runner released the lease;
            # make the message visible now so another worker takes the job.
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            outcome = Outcome(Action.RETRY, "released on shutdown")
            if await continue_if_progressed(self.svc, msg.job_id, kept_before):
                outcome = Outcome(Action.DELETE, "released on shutdown; continued afresh")
        finally:
            keeper.cancel()
        log.info("job %s: %s (%s)", msg.job_id, outcome.action.value, outcome.reason)
        await self._settle(receipt, outcome)

    async def _settle(self, receipt: str, outcome: Outcome) -> None:
        if await settle(self.svc.sqs, self.svc.settings.queue_url, receipt, outcome, delete=True):
            self.completed += 1

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _drain(self) -> None:
        """Let running jobs finish within the grace period, then release them."""
        returning = asyncio.gather(*self._returning, return_exceptions=True)
        if self._jobs:
            log.info(
                "stopping: waiting up to %.0f s for %d job(s)", self.grace_seconds, len(self._jobs)
            )
            _, pending = await asyncio.wait(set(self._jobs), timeout=self.grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                log.info("releasing %d unfinished job(s) for another worker", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        await returning
