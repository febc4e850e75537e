"""The job API seen from a client: submit, poll until final, download and check.

Plain ``urllib`` (synchronous): a command line tool making one request every
second or two gains nothing from asyncio, and the standard library keeps
the client usable from any environment that has the package.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .auth import Auth

FINAL = frozenset({"READY", "FAILED", "CANCELLED"})
_CHUNK = 1 << 20


class ApiError(Exception):
    """The API answered an error (problem+json when it could); permanent for the client."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") or problem.get("message") or ""
        super().__init__(f"HTTP {status}: {detail}".rstrip(": "))


class WaitTimeout(Exception):
    """The job did not end in time; it keeps running on the service."""


@dataclass(frozen=True)
class ZipJobsApi:
    base_url: str
    auth: Auth
    timeout: float = 30.0

    def call(self, method: str, path: str, doc: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.base_url.rstrip("/") + path
        body = b"" if doc is None else json.dumps(doc).encode()
        headers = {"Accept": "application/json"}
        if doc is not None:
            headers["Content-Type"] = "application/json"
        signed = self.auth.headers(method, url, body, headers)
        request = urllib.request.Request(  # noqa: S310 - the URL is the user's API
            url, data=body if doc is not None else None, method=method, headers=signed
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310
                answer: dict[str, Any] = json.loads(resp.read() or b"{}")
                return answer
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = {"detail": raw[:200].decode("utf-8", "replace")}
            raise ApiError(err.code, problem if isinstance(problem, dict) else {}) from None

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/zip-jobs", request)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/zip-jobs/{job_id}")

    def wait(
        self,
        job_id: str,
        *,
        timeout: float,
        poll_seconds: float = 1.0,
        on_update: Callable[[dict[str, Any]], None] = lambda job: None,
    ) -> dict[str, Any]:
        """Poll until READY, FAILED or CANCELLED; ``on_update`` sees every answer."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            on_update(job)
            if job.get("status") in FINAL:
                return job
            if time.monotonic() > deadline:
                raise WaitTimeout(f"job {job_id} still {job.get('status')} after {timeout:.0f} s")
            time.sleep(poll_seconds)


def download(url: str, dest: Path, timeout: float = 60.0) -> str:
    """Stream the archive to ``dest`` (via a temporary name); return its SHA-256."""
    digest = hashlib.sha256()
    partial = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as resp, partial.open("wb") as out:  # noqa: S310
        while chunk := resp.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    partial.replace(dest)
    return digest.hexdigest()


def archive_problems(path: Path, job: dict[str, Any]) -> list[str]:
    """What is wrong with a downloaded archive, against what the job says it holds."""
    problems = []
    size = path.stat().st_size
    if job.get("archiveBytes") is not None and size != job["archiveBytes"]:
        problems.append(f"{size} bytes downloaded, the job says {job['archiveBytes']}")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # reads every entry and checks its CRC-32
            entries = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as err:
        return [*problems, f"not a readable zip: {err}"]
    if bad is not None:
        problems.append(f"entry {bad!r} fails its CRC-32 check")
    expected = (job.get("progress") or {}).get("filesTotal")
    if expected is not None and len(entries) != expected:
        problems.append(f"{len(entries)} entries, the job says {expected} files")
    return problems
