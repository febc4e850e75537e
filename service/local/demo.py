"""``zipjobs demo``: the whole path a real client takes, on an embedded local AWS.

Upload generated PDFs, submit a job over HTTP, watch its progress, download
the archive through the presigned URL and check it: every entry's bytes
equal the uploaded object's, Python's zipfile tests every CRC, and
``unzip -t`` (when installed) agrees.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ..api import run_server
from ..jobs import JobService
from ..process import setup_logging
from ..settings import Settings
from ..worker import Worker
from .samples import Sample, pdf_problems, sample_pdfs
from .stack import EmbeddedAws, StackNames, describe, provision

POLL_SECONDS = 0.25


@dataclass
class Check:
    entries: int = 0
    bytes_equal: bool = False
    crc_ok: bool = False
    pdfs_valid: bool = False
    unzip: str = "not installed"
    problems: list[str] | None = None

    @property
    def ok(self) -> bool:
        return self.bytes_equal and self.crc_ok and self.pdfs_valid and self.unzip != "failed"


def check_archive(data: bytes, samples: list[Sample]) -> Check:
    """Independent checks of the downloaded archive against what was uploaded."""
    check = Check(problems=[])
    assert check.problems is not None
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        check.entries = len(zf.infolist())
        bad = zf.testzip()
        check.crc_ok = bad is None
        if bad is not None:
            check.problems.append(f"CRC mismatch in {bad}")
        want = {s.key: hashlib.sha256(s.data).hexdigest() for s in samples}
        got = {i.filename: hashlib.sha256(zf.read(i)).hexdigest() for i in zf.infolist()}
        check.bytes_equal = want == got
        if not check.bytes_equal:
            check.problems.append("archive entries differ from the uploaded objects")
        check.pdfs_valid = all(not pdf_problems(zf.read(name)) for name in zf.namelist())
    unzip = shutil.which("unzip")
    if unzip:
        with tempfile.NamedTemporaryFile(suffix=".zip") as tmp:
            Path(tmp.name).write_bytes(data)
            proc = subprocess.run(  # noqa: S603 - fixed argv, our own temp file
                [unzip, "-tq", tmp.name], capture_output=True, text=True, check=False
            )
        check.unzip = "ok" if proc.returncode == 0 else "failed"
        if proc.returncode != 0:
            check.problems.append(f"unzip -t: {proc.stdout.strip()[-300:]}")
    return check


async def _upload(svc: JobService, bucket: str, samples: list[Sample]) -> None:
    sem = asyncio.Semaphore(8)

    async def put(sample: Sample) -> None:
        async with sem:
            await svc.s3.put_object(
                Bucket=bucket, Key=sample.key, Body=sample.data, ContentType="application/pdf"
            )

    await asyncio.gather(*(put(s) for s in samples))


def _bar(progress: dict[str, int], status: str) -> str:
    total = progress["bytesTotal"] or 1
    frac = progress["bytesDone"] / total if progress["bytesTotal"] else 0.0
    filled = int(30 * frac)
    return (
        f"  {status:<9} [{'#' * filled}{'.' * (30 - filled)}] {frac:6.1%}  "
        f"{progress['filesDone']}/{progress['filesTotal']} files"
    )


async def _follow(http: aiohttp.ClientSession, status_url: str) -> dict[str, Any]:
    """Poll the job until it ends, drawing its progress."""
    tty = sys.stdout.isatty()
    last = ""
    while True:
        async with http.get(status_url) as resp:
            job: dict[str, Any] = await resp.json()
        line = _bar(job["progress"], job["status"])
        if line != last:
            print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
            last = line
        if job["status"] in ("READY", "FAILED", "CANCELLED"):
            if tty:
                print()
            return job
        await asyncio.sleep(POLL_SECONDS)


async def _client_flow(api_url: str, keys: list[str], samples: list[Sample]) -> dict[str, Any]:
    timing: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        t0 = time.monotonic()
        async with http.post(
            f"{api_url}/zip-jobs", json={"keys": keys, "name": "demo-documents.zip"}
        ) as resp:
            accepted = await resp.json()
            if resp.status != 202:
                raise RuntimeError(f"submit failed: {resp.status} {accepted}")
        print(f"submitted job {accepted['jobId']} ({len(keys)} PDFs)", flush=True)
        job = await _follow(http, api_url + accepted["statusUrl"])
        timing["job_seconds"] = time.monotonic() - t0
        if job["status"] != "READY":
            raise RuntimeError(f"job ended {job['status']}: {json.dumps(job.get('error'))}")
        t1 = time.monotonic()
        # The URL is a credential: used, never printed.
        async with http.get(job["downloadUrl"]) as resp:
            resp.raise_for_status()
            data = await resp.read()
        timing["download_seconds"] = time.monotonic() - t1
    timing["archive"] = data
    timing["job"] = job
    return timing


async def run_demo(files: int = 64, total_mb: int = 40) -> int:
    setup_logging()
    started = time.monotonic()
    samples = sample_pdfs(files, total_mb * 1024 * 1024)
    source_bytes = sum(len(s.data) for s in samples)
    with EmbeddedAws() as aws:
        stack = await provision(aws.endpoint_url, StackNames("demo"))
        settings: Settings = stack.settings(ZIPJOBS_LEASE_SECONDS="10")
        async with JobService.open(settings) as svc:
            await _upload(svc, settings.default_bucket, samples)
            print(f"uploaded {files} sample PDFs, {source_bytes / 1e6:.1f} MB", flush=True)
            stop = asyncio.Event()
            ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            server = asyncio.create_task(
                run_server(
                    svc,
                    "127.0.0.1",
                    0,
                    stop=stop,
                    worker=Worker(svc, poll_seconds=1),
                    on_ready=ready.set_result,
                    access_log=False,
                )
            )
            api_url = await ready
            print(describe(stack, api_url), flush=True)
            try:
                result = await _client_flow(api_url, [s.key for s in samples], samples)
            finally:
                stop.set()
                await server
    check = check_archive(result["archive"], samples)
    job = result["job"]
    print(
        "\nsummary\n"
        f"  files          {check.entries} of {files}\n"
        f"  source bytes   {source_bytes:,}\n"
        f"  archive bytes  {len(result['archive']):,}\n"
        f"  job            {result['job_seconds']:.1f} s from submit to READY\n"
        f"  download       {result['download_seconds']:.1f} s via the presigned URL "
        f"(expires {job['expiresAt']})\n"
        f"  verified       zipfile CRCs {'ok' if check.crc_ok else 'FAILED'}, "
        f"bytes equal {'yes' if check.bytes_equal else 'NO'}, "
        f"PDFs valid {'yes' if check.pdfs_valid else 'NO'}, unzip -t {check.unzip}\n"
        f"  total          {time.monotonic() - started:.1f} s",
        flush=True,
    )
    for problem in check.problems or []:
        print(f"  problem: {problem}", flush=True)
    print("demo: OK" if check.ok else "demo: FAILED", flush=True)
    return 0 if check.ok else 1
