"""RSS of every service process, a few times a second, from a thread.

A thread rather than a process because it only calls psutil (which releases
the GIL in its syscalls) and must share the orchestrator's clock with the
phases it marks. Each sample is the RSS of the process plus its descendants,
so a service that forks helpers is still measured whole.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the sampler started
    name: str
    rss: int  # bytes
    cpu: float  # percent of one core since the previous sample


def tree_rss(proc: psutil.Process) -> int:
    """RSS of ``proc`` and its live descendants (a child gone mid-read counts 0)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def peak_rss(pid: int) -> int | None:
    """The kernel's high-water mark of the process's RSS (VmHWM), in bytes.

    Exact where sampling is not: a spike shorter than the sampling interval
    still shows here. Linux only; None elsewhere or once the process is gone.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


@dataclass
class RssSampler:
    """Samples ``pids`` every ``interval`` seconds until stopped; watch more with ``add``."""

    interval: float = 0.2
    samples: list[Sample] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    _procs: dict[str, psutil.Process] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = field(default_factory=time.monotonic)

    def add(self, name: str, pid: int) -> None:
        proc = psutil.Process(pid)
        proc.cpu_percent(None)  # prime: the first call always answers 0.0
        with self._lock:
            self._procs[name] = proc

    def remove(self, name: str) -> None:
        with self._lock:
            self._procs.pop(name, None)

    def now(self) -> float:
        return time.monotonic() - self._t0

    def mark(self, label: str) -> None:
        """A named instant (e.g. "locust start") drawn on the chart."""
        self.marks.append((self.now(), label))

    def sample_once(self) -> None:
        with self._lock:
            procs: Mapping[str, psutil.Process] = dict(self._procs)
        t = self.now()
        for name, proc in procs.items():
            try:
                self.samples.append(Sample(t, name, tree_rss(proc), proc.cpu_percent(None)))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def window(self, name: str, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if s.name == name and start <= s.t <= end]
