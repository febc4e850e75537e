"""The heartbeat stops the build whenever the lease can no longer be known to be held.

A build that runs on without a lease races the worker that takes the job
over (two writers on one archive key). Fakes only: what is under test is
the runner's decision, not DynamoDB.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from service.engine import Progress
from service.jobs.runner import _heartbeat, _Tracker


@dataclass
class _Settings:
    lease_seconds: int = 3


class _Store:
    """``heartbeat`` answers ``beat`` (or raises it); ``get`` raises ``get_error`` if set."""

    def __init__(self, beat: bool | Exception, get_error: Exception | None = None) -> None:
        self.beat = beat
        self.get_error = get_error

    async def heartbeat(self, *args: Any) -> bool:
        if isinstance(self.beat, Exception):
            raise self.beat
        return self.beat

    async def get(self, job_id: str) -> Any:
        if self.get_error is not None:
            raise self.get_error
        return None


class _Svc:
    def __init__(self, store: _Store) -> None:
        self.store = store
        self.settings = _Settings()


class _Record:
    progress = Progress()


async def _run(store: _Store) -> tuple[asyncio.Task[None], _Tracker, float]:
    build: asyncio.Task[None] = asyncio.create_task(asyncio.sleep(30))
    tracker = _Tracker(_Record())  # type: ignore[arg-type]
    start = time.monotonic()
    beat = asyncio.create_task(_heartbeat(_Svc(store), "j", "me", tracker, build))  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(build, 10)
    await beat
    return build, tracker, time.monotonic() - start


async def test_a_refused_heartbeat_whose_record_cannot_be_read_stops_the_build() -> None:
    """Before: ``store.get`` raising killed the heartbeat task and the build ran on."""
    build, tracker, _ = await _run(_Store(False, get_error=ConnectionResetError("dynamodb down")))
    assert build.cancelled() and tracker.stop_reason == "lease lost"


async def test_renewals_failing_for_the_whole_lease_stop_the_build_before_it_expires() -> None:
    build, tracker, took = await _run(
        _Store(ConnectionResetError("dynamodb down"), get_error=ConnectionResetError("down"))
    )
    assert build.cancelled() and tracker.stop_reason == "lease lost"
    assert took < _Settings.lease_seconds + 0.5  # stopped while the lease still held


async def test_a_refused_heartbeat_on_a_cancelled_job_says_cancelled() -> None:
    class _Cancelled(_Store):
        async def get(self, job_id: str) -> Any:
            from service.jobs import JobStatus

            return type("R", (), {"status": JobStatus.CANCELLED})()

    build, tracker, _ = await _run(_Cancelled(False))
    assert build.cancelled() and tracker.stop_reason == "cancelled"


class _HalfDone:
    progress = Progress(bytes_done=700, bytes_total=1000, files_done=7, files_total=10)


def test_a_resumed_attempt_never_shows_less_progress_than_the_record_had() -> None:
    """The resume restarts at its checkpoint, behind the last reported bytes: held, then passed."""
    tracker = _Tracker(_HalfDone())  # type: ignore[arg-type]
    tracker.update(Progress(bytes_done=640, bytes_total=1000, files_done=6, files_total=10))
    assert (tracker.progress.bytes_done, tracker.progress.files_done) == (700, 7)
    tracker.update(Progress(bytes_done=820, bytes_total=1000, files_done=8, files_total=10))
    assert (tracker.progress.bytes_done, tracker.progress.files_done) == (820, 8)
    # Another plan (a different total) is not compared with the old one.
    tracker.update(Progress(bytes_done=5, bytes_total=2000, files_done=1, files_total=20))
    assert tracker.progress.bytes_done == 5
