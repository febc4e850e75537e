"""A worker killed mid-job (SIGKILL, no chance to clean up) does not lose the job.

Its lease expires, its message reappears, another worker takes the job over,
aborts the multipart upload the dead one left, and writes a valid archive.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.jobs import JobService, JobStatus
from service.jobs.validation import parse_job_request
from service.local.samples import sample_pdfs
from service.local.stack import Provisioned, StackNames, provision
from service.worker import Worker
from tests.support.archive_check import verify_archive_bytes
from tests.support.aws_backend import AwsEndpoint
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


async def test_a_killed_worker_s_job_is_finished_by_another(
    svc: JobService, stack: Provisioned, tmp_path: Path
) -> None:
    samples = sample_pdfs(6, 12 * 1024 * 1024, prefix="docs/", seed=11)
    await asyncio.gather(
        *(
            svc.s3.put_object(Bucket=svc.settings.default_bucket, Key=s.key, Body=s.data)
            for s in samples
        )
    )
    keys = [s.key for s in samples] * 8  # deflate over ~100 MB: seconds of work
    request = parse_job_request(
        json.dumps({"keys": keys, "compression": "deflate"}).encode(), svc.settings
    )
    submitted = await svc.submit(request)
    job_id = submitted.job_id

    env = {**os.environ, **stack.env(ZIPJOBS_LEASE_SECONDS=LEASE_SECONDS)}
    victim = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker", "--poll-seconds", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not await uploads_for(svc, job_id):  # mid-job: its upload has begun
            assert victim.poll() is None, victim.stderr.read().decode() if victim.stderr else ""
            assert time.monotonic() < deadline, "the worker never started the upload"
            await asyncio.sleep(0.1)
        running = await svc.store.get(job_id)
        assert running is not None and running.status is JobStatus.RUNNING
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        if victim.stderr:
            victim.stderr.close()
    assert victim.returncode == -signal.SIGKILL
    orphaned = await uploads_for(svc, job_id)
    assert len(orphaned) == 1  # the dead worker could not abort it

    rescuer = Worker(svc, poll_seconds=1, owner="rescuer")
    task = asyncio.create_task(rescuer.run())
    try:
        deadline = time.monotonic() + 90
        while True:
            record = await svc.store.get(job_id)
            assert record is not None
            if record.status.final:
                break
            assert time.monotonic() < deadline, f"job stuck in {record.status}"
            await asyncio.sleep(0.2)
    finally:
        rescuer.stop()
        await task
    assert record.status is JobStatus.READY, record.error
    assert record.attempts == 2 and running.lease_owner != "rescuer"
    assert await uploads_for(svc, job_id) == []  # the orphan was aborted, ours completed

    by_key = {s.key: s.data for s in samples}
    data = await get_bytes(svc.s3, record.dst_bucket, record.dst_key)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
    assert len(names) == len(keys)
    expected = {n: by_key[re.sub(r" \(\d+\)(\.pdf)$", r"\1", n)] for n in names}
    verify_archive_bytes(data, expected, tmp_dir=tmp_path)
