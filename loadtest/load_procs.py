"""Child processes of a load run: started apart, killed on every way out.

Each service runs in its own process (and its own session) so that psutil can
attribute memory to it alone: moto keeps every object in memory and builds a
multipart object whole at completion, which must never be counted against the
worker. A child also gets PR_SET_PDEATHSIG, so even a SIGKILLed orchestrator
leaves nothing running behind it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
LOOPBACK = "127.0.0.1"


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it when the orchestrator dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A port nobody listens on right now (bound and released; a small race we accept)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """One started service: its name (as it appears in the report), process and log."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the child's whole process group, then SIGKILL what is left after ``grace``."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=grace)
        self._log.close()


class Children:
    """Every child of the run, stopped in reverse start order however the run ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.items: list[Child] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("wb")
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop them in order
            preexec_fn=_die_with_parent,
        )
        child = Child(name, popen, log_path, log)
        self.items.append(child)
        return child

    def stop(self, name: str) -> None:
        for child in [c for c in self.items if c.name == name]:
            child.stop()
            self.items.remove(child)

    def stop_all(self) -> None:
        while self.items:
            self.items.pop().stop()

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, child: Child | None = None
) -> None:
    """Poll ``check`` (bounded) until true; fail early if ``child`` died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited while {what}:\n{child.log_tail()}")
        if check():
            return
        time.sleep(0.1)
    tail = f":\n{child.log_tail()}" if child is not None else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s {what}{tail}")


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: ``url`` (loopback only) answers any HTTP status below 500."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError("load runs only talk to 127.0.0.1")

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return int(resp.status) < 500
        except urllib.error.HTTPError as err:
            return err.code < 500
        except OSError:
            return False

    return check
