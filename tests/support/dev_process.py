"""``zipjobs dev`` (or any service command) as a second process, for tests that act as clients."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY = "zipjobs dev: ready at "


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any ZIPJOBS_/AWS_ variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZIPJOBS_", "AWS_"))}
    return {**env, **extra}


def stop_process(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, 30 s to stop cleanly, then SIGKILL."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class DevProcess:
    def __init__(self, proc: subprocess.Popen[str], lines: list[str]) -> None:
        self.proc = proc
        self.lines = lines

    def value(self, label: str) -> str:
        """The first word after ``label`` in the lines ``zipjobs dev`` printed."""
        for line in self.lines:
            if line.startswith(label):
                return line[len(label) :].split()[0]
        raise AssertionError(f"{label!r} not in the dev output:\n" + "\n".join(self.lines))


@contextmanager
def running_dev(env: dict[str, str], ready_seconds: float = 90) -> Iterator[DevProcess]:
    """``zipjobs dev`` on free ports until the block ends; yields once it printed READY."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "dev", "--port", "0", "--poll-seconds", "1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + ready_seconds
        while not any(line.startswith(READY) for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "zipjobs dev exited:\n" + "".join(lines)
            lines.append(line.rstrip("\n"))
            assert time.monotonic() < deadline, f"zipjobs dev not ready in {ready_seconds} s"
        yield DevProcess(proc, lines)
    finally:
        stop_process(proc)
