"""A worker killed mid-job (SIGKILL, no chance to clean up) does not lose the job.

Its lease expires, its message reappears, another worker takes the job over
and writes a valid archive: a deflate job starts over (the dead worker's
upload is aborted), a STORED job continues the dead worker's upload from its
checkpoint (docs/resume.md).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from service.engine import Destination, SourceObject, build_zip
from service.engine.checkpoint import Checkpoint, CheckpointStore
from service.jobs import JobRecord, JobService, JobStatus
from service.jobs.validation import parse_job_request
from service.local.samples import Sample, sample_pdfs
from service.local.stack import Provisioned, StackNames, provision
from service.worker import Worker
from tests.support.archive_check import verify_archive_bytes
from tests.support.aws_backend import AwsEndpoint
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.s3_objects import get_bytes

pytestmark = pytest.mark.integration

LEASE_SECONDS = "5"  # short, so the takeover comes quickly; not so short a busy box loses it
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    return await provision(aws_endpoint.settings(), StackNames(f"kill-{uuid.uuid4().hex[:8]}"))


@pytest.fixture(scope="module")
async def svc(stack: Provisioned) -> AsyncIterator[JobService]:
    async with JobService.open(stack.settings(ZIPJOBS_LEASE_SECONDS=LEASE_SECONDS)) as service:
        yield service


async def uploads_for(svc: JobService, job_id: str) -> list[dict[str, Any]]:
    resp = await svc.s3.list_multipart_uploads(
        Bucket=svc.settings.dst_bucket, Prefix=f"archives/{job_id}/"
    )
    return list(resp.get("Uploads", []))


def _start_worker(stack: Provisioned, **env: str) -> subprocess.Popen[bytes]:
    """A real worker process (SIGKILL must find no handler to run)."""
    full = {**os.environ, **stack.env(ZIPJOBS_LEASE_SECONDS=LEASE_SECONDS, **env)}
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker", "--poll-seconds", "1"],
        cwd=REPO,
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _kill_when(victim: subprocess.Popen[bytes], ready: Callable[[], Awaitable[bool]]) -> None:
    """SIGKILL the worker as soon as ``ready()`` says it is mid-job."""
    try:
        deadline = time.monotonic() + 60
        while not await ready():
            assert victim.poll() is None, victim.stderr.read().decode() if victim.stderr else ""
            assert time.monotonic() < deadline, "the worker never got far enough into the job"
            await asyncio.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        if victim.stderr:
            victim.stderr.close()
    assert victim.returncode == -signal.SIGKILL


async def _rescue(svc: JobService, job_id: str) -> JobRecord:
    """An in-process worker takes the job over once the dead one's lease expires."""
    rescuer = Worker(svc, poll_seconds=1, owner="rescuer")
    task = asyncio.create_task(rescuer.run())
    try:
        deadline = time.monotonic() + 90
        while True:
            record = await svc.store.get(job_id)
            assert record is not None
            if record.status.final:
                return record
            assert time.monotonic() < deadline, f"job stuck in {record.status}"
            await asyncio.sleep(0.2)
    finally:
        rescuer.stop()
        await task


async def _seed(svc: JobService, seed: int, total_mib: int) -> list[Sample]:
    samples = sample_pdfs(6, total_mib * 1024 * 1024, prefix=f"docs{seed}/", seed=seed)
    await asyncio.gather(
        *(
            svc.s3.put_object(Bucket=svc.settings.default_bucket, Key=s.key, Body=s.data)
            for s in samples
        )
    )
    return samples


def _expected(samples: list[Sample], names: list[str]) -> dict[str, bytes]:
    by_key = {s.key: s.data for s in samples}
    return {n: by_key[re.sub(r" \(\d+\)(\.pdf)$", r"\1", n)] for n in names}


async def test_a_killed_worker_s_job_is_finished_by_another(
    svc: JobService, stack: Provisioned, tmp_path: Path
) -> None:
    """Deflate: not resumable, so the next attempt aborts the orphan and starts over."""
    samples = await _seed(svc, 11, 12)
    keys = [s.key for s in samples] * 8  # deflate over ~100 MB: seconds of work
    request = parse_job_request(
        json.dumps({"keys": keys, "compression": "deflate"}).encode(), svc.settings
    )
    job_id = (await svc.submit(request)).job_id

    async def upload_begun() -> bool:
        return bool(await uploads_for(svc, job_id))

    await _kill_when(_start_worker(stack), upload_begun)
    running = await svc.store.get(job_id)
    assert running is not None and running.status is JobStatus.RUNNING
    orphaned = await uploads_for(svc, job_id)
    assert len(orphaned) == 1  # the dead worker could not abort it

    record = await _rescue(svc, job_id)
    assert record.status is JobStatus.READY, record.error
    assert record.attempts == 2 and running.lease_owner != "rescuer"
    assert await uploads_for(svc, job_id) == []  # the orphan was aborted, ours completed

    data = await get_bytes(svc.s3, record.dst_bucket, record.dst_key)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
    assert len(names) == len(keys)
    verify_archive_bytes(data, _expected(samples, names), tmp_dir=tmp_path)


async def test_a_killed_worker_s_stored_job_resumes_from_its_checkpoint(
    svc: JobService, stack: Provisioned, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """STORED: the next attempt continues the dead worker's upload from its checkpoint.

    The victim checkpoints after every part (ZIPJOBS_CHECKPOINT_SECONDS=0),
    has two part buffers (a 24 MiB budget) and its UploadParts are slowed by
    a proxy; it is killed once a checkpoint names two parts or more. The
    rescuer must resume that same upload at (or past) the checkpoint's
    offset, not start over, and the archive must be byte-identical to an
    uninterrupted build of the same plan and pass the five readers.
    """
    samples = await _seed(svc, 12, 18)
    keys = [s.key for s in samples] * 4  # 72 MiB STORED: 9 parts of 8 MiB
    request = parse_job_request(json.dumps({"keys": keys}).encode(), svc.settings)
    job_id = (await svc.submit(request)).job_id
    job = await svc.store.get(job_id)
    assert job is not None
    dest = Destination(job.dst_bucket, job.dst_key)
    store = CheckpointStore(svc.s3, dest)
    seen: list[Checkpoint] = []

    async def checkpointed() -> bool:
        cp = await store.load()
        if cp is not None and len(cp.parts) >= 2:
            seen.append(cp)
            return True
        return False

    s3_url = dict(stack.service_endpoints).get("s3", stack.endpoint_url)
    async with FaultProxy(s3_url) as slow:
        # Each UploadPart held half a second, so the kill lands mid-archive
        # rather than after the last part (moto takes 72 MiB in about a second).
        slow.add(Fault("PUT", query_contains="partNumber=", delay_s=0.5, times=10_000))
        victim = _start_worker(
            stack,
            AWS_ENDPOINT_URL_S3=slow.url,
            ZIPJOBS_CHECKPOINT_SECONDS="0",
            ZIPJOBS_BUDGET_MB="24",
            ZIPJOBS_WORKER_CONCURRENCY="1",
        )
        await _kill_when(victim, checkpointed)
    killed_at = seen[-1]
    orphaned = await uploads_for(svc, job_id)
    assert [u["UploadId"] for u in orphaned] == [killed_at.upload_id]

    caplog.set_level(logging.INFO, logger="service.engine")
    record = await _rescue(svc, job_id)
    assert record.status is JobStatus.READY, record.error
    assert record.attempts == 2
    resumed = [
        int(m.group(1))
        for r in caplog.records
        if (
            m := re.search(
                rf"resuming s3://\S+/{re.escape(dest.key)} at byte (\d+)", r.getMessage()
            )
        )
    ]
    assert len(resumed) == 1 and resumed[0] >= killed_at.state.offset > 0, resumed
    assert not any("not resuming" in r.getMessage() for r in caplog.records)
    assert await uploads_for(svc, job_id) == []
    assert await store.load() is None  # the checkpoint went with the completed upload

    data = await get_bytes(svc.s3, record.dst_bucket, record.dst_key)
    reference = Destination(job.dst_bucket, f"reference/{job_id}.zip")
    sources = [SourceObject(svc.settings.default_bucket, k) for k in keys]
    await build_zip(sources, reference, s3=svc.s3)
    assert data == await get_bytes(svc.s3, reference.bucket, reference.key)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
    assert len(names) == len(keys)
    verify_archive_bytes(data, _expected(samples, names), tmp_dir=tmp_path)
