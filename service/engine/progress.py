"""Progress: turn the pump's counters into throttled callbacks.

Counting is free (the pump already knows bytes pulled and entries finished);
what costs is the callback, which in a worker is a DynamoDB write. So the
callback fires when ``interval_s`` has passed since it last fired, and once
when the last file completes (``finish()`` sends that one if the last update
did not); a file completing in between does not fire it by itself.
"""

from __future__ import annotations

import time

from .models import Plan, Progress, ProgressCallback


class ProgressReporter:
    def __init__(self, plan: Plan, callback: ProgressCallback | None, interval_s: float) -> None:
        self._callback = callback
        self._interval = interval_s
        self._bytes_total = plan.total_source_bytes
        self._files_total = len(plan.entries)
        self._last_sent = 0.0
        self._last_files = -1
        self.latest = Progress(0, self._bytes_total, 0, self._files_total)
        self._sent: Progress | None = None

    def update(self, bytes_done: int, files_done: int) -> None:
        self.latest = Progress(bytes_done, self._bytes_total, files_done, self._files_total)
        if self._callback is None:
            return
        now = time.monotonic()
        if now - self._last_sent >= self._interval or (
            files_done != self._last_files and files_done == self._files_total
        ):
            self._send(now)

    def finish(self) -> None:
        """Send the latest counters unless they were the last sent (the final
        callback always says where the build ended)."""
        if self._callback is not None and self.latest != self._sent:
            self._send(time.monotonic())

    def _send(self, now: float) -> None:
        assert self._callback is not None
        self._last_sent = now
        self._last_files = self.latest.files_done
        self._sent = self.latest
        self._callback(self.latest)
