"""PENDING -> READY through the HTTP API with a worker running, against local AWS.

Every archive is downloaded through the presigned URL the API hands out and
checked by independent readers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.api import make_app
from service.jobs import JobService
from service.local.samples import Sample, make_pdf, sample_pdfs
from service.local.stack import Provisioned, StackNames, provision
from service.worker import Worker
from tests.support.archive_check import verify_archive_bytes
from tests.support.aws_backend import AwsEndpoint

pytestmark = pytest.mark.integration

FINAL = ("READY", "FAILED", "CANCELLED")


@pytest.fixture(scope="module")
def endpoint_url(aws_endpoint: AwsEndpoint) -> str:
    return aws_endpoint.endpoint_url


@pytest.fixture(scope="module")
async def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    return await provision(aws_endpoint.settings(), StackNames(f"flow-{uuid.uuid4().hex[:8]}"))


@pytest.fixture(scope="module")
async def svc(stack: Provisioned) -> AsyncIterator[JobService]:
    settings = stack.settings(ZIPJOBS_LEASE_SECONDS="5", ZIPJOBS_PRESIGN_TTL_SECONDS="900")
    async with JobService.open(settings) as service:
        yield service


@pytest.fixture(scope="module")
async def worker(svc: JobService) -> AsyncIterator[Worker]:
    w = Worker(svc, poll_seconds=1, grace_seconds=5)
    task = asyncio.create_task(w.run())
    yield w
    w.stop()
    await task


@pytest.fixture(scope="module")
async def client(svc: JobService, worker: Worker) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_app(svc))) as c:
        yield c


@pytest.fixture(scope="module")
async def samples(svc: JobService) -> list[Sample]:
    """A dozen real PDFs, 20 MB in all: the archive needs a multipart upload."""
    docs = sample_pdfs(12, 20 * 1024 * 1024, prefix="docs/")
    await asyncio.gather(
        *(
            svc.s3.put_object(Bucket=svc.settings.default_bucket, Key=s.key, Body=s.data)
            for s in docs
        )
    )
    return docs


def check_archive(data: bytes, expected: dict[str, bytes], tmp: Path) -> None:
    """Every installed independent reader must agree on names, sizes, CRCs and bytes."""
    ran = verify_archive_bytes(data, expected, tmp_dir=tmp)
    assert "zipfile" in ran


async def submit(client: TestClient[Any, Any], doc: dict[str, Any]) -> str:
    resp = await client.post("/zip-jobs", json=doc)
    assert resp.status == 202, await resp.text()
    job_id: str = (await resp.json())["jobId"]
    return job_id


async def wait_for(
    client: TestClient[Any, Any],
    job_id: str,
    statuses: tuple[str, ...] = FINAL,
    timeout: float = 60,
) -> tuple[dict[str, Any], list[str]]:
    """Poll until the job reaches one of ``statuses``; returns it and the statuses seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = await (await client.get(f"/zip-jobs/{job_id}")).json()
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if job["status"] in statuses:
            return job, seen
        assert time.monotonic() < deadline, f"job stuck in {job['status']}: {job}"
        await asyncio.sleep(0.1)


async def download(url: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        return await resp.read()


async def test_pending_to_ready_and_download_through_the_presigned_url(
    client: TestClient[Any, Any], svc: JobService, samples: list[Sample], tmp_path: Path
) -> None:
    job_id = await submit(client, {"keys": [s.key for s in samples], "name": "docs.zip"})
    job, seen = await wait_for(client, job_id)
    assert job["status"] == "READY", job
    assert seen[0] in ("PENDING", "RUNNING") and seen[-1] == "READY"
    total = sum(len(s.data) for s in samples)
    assert job["progress"] == {
        "bytesDone": total,
        "bytesTotal": total,
        "filesDone": 12,
        "filesTotal": 12,
    }
    assert job["startedAt"] <= job["finishedAt"] and job["attempts"] == 1
    expires = dt.datetime.fromisoformat(job["expiresAt"].replace("Z", "+00:00"))
    ttl = (expires - dt.datetime.now(dt.UTC)).total_seconds()
    assert 890 < ttl <= 900
    assert "X-Amz-Signature=" in job["downloadUrl"] and "X-Amz-Expires=900" in job["downloadUrl"]

    data = await download(job["downloadUrl"])
    assert len(data) == job["archiveBytes"]
    check_archive(data, {s.key: s.data for s in samples}, tmp_path)

    # The URL is signed at read time and never stored.
    item = await svc.dynamodb.get_item(TableName=svc.settings.table, Key={"jobId": {"S": job_id}})
    assert "Signature" not in json.dumps(item["Item"])
    # No multipart upload left behind.
    uploads = await svc.s3.list_multipart_uploads(Bucket=svc.settings.dst_bucket)
    assert not [u for u in uploads.get("Uploads", []) if job_id in u["Key"]]


async def test_missing_keys_fail_the_job_naming_every_one(
    client: TestClient[Any, Any], samples: list[Sample]
) -> None:
    keys = [samples[0].key, "docs/nope-1.pdf", samples[1].key, "docs/nope-2.pdf"]
    job, _ = await wait_for(client, await submit(client, {"keys": keys}))
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "MissingSources"
    assert sorted(job["error"]["missingKeys"]) == ["docs/nope-1.pdf", "docs/nope-2.pdf"]
    assert "downloadUrl" not in job


async def test_missing_skip_leaves_them_out_and_lists_them(
    client: TestClient[Any, Any], samples: list[Sample], tmp_path: Path
) -> None:
    keys = [samples[2].key, "docs/gone.pdf", samples[3].key]
    job, _ = await wait_for(client, await submit(client, {"keys": keys, "missing": "skip"}))
    assert job["status"] == "READY", job
    assert job["skippedKeys"] == ["docs/gone.pdf"]
    check_archive(
        await download(job["downloadUrl"]),
        {samples[2].key: samples[2].data, samples[3].key: samples[3].data},
        tmp_path,
    )


async def test_prefix_job_names_entries_relative_to_the_prefix(
    client: TestClient[Any, Any], svc: JobService, tmp_path: Path
) -> None:
    files = {f"scans/2024/{n}.pdf": make_pdf(n, 3000, i) for i, n in enumerate("abc")}
    for key, body in files.items():
        await svc.s3.put_object(Bucket=svc.settings.default_bucket, Key=key, Body=body)
    job, _ = await wait_for(
        client, await submit(client, {"prefix": "scans/2024/", "compression": "deflate"})
    )
    assert job["status"] == "READY", job
    check_archive(
        await download(job["downloadUrl"]),
        {k.rsplit("/", 1)[1]: v for k, v in files.items()},
        tmp_path,
    )


async def test_job_with_a_keys_manifest_runs(
    client: TestClient[Any, Any], svc: JobService, tmp_path: Path
) -> None:
    # 300 keys of ~1000 bytes: too many bytes for one DynamoDB item.
    files = {f"long/{i:04d}-{'n' * 990}.pdf": make_pdf(str(i), 1000, i) for i in range(300)}
    await asyncio.gather(
        *(
            svc.s3.put_object(Bucket=svc.settings.default_bucket, Key=k, Body=v)
            for k, v in files.items()
        )
    )
    job_id = await submit(client, {"keys": list(files)})
    record = await svc.store.get(job_id)
    assert record is not None and record.manifest is not None
    job, _ = await wait_for(client, job_id)
    assert job["status"] == "READY", job
    check_archive(await download(job["downloadUrl"]), files, tmp_path)


async def test_cancel_a_running_job_stops_it_and_aborts_its_upload(
    client: TestClient[Any, Any], svc: JobService, samples: list[Sample]
) -> None:
    # Deflate over incompressible PDFs, many times over: slow enough to catch running.
    keys = [s.key for s in samples] * 6
    job_id = await submit(client, {"keys": keys, "compression": "deflate"})
    job, _ = await wait_for(client, job_id, ("RUNNING", *FINAL))
    assert job["status"] == "RUNNING"
    dst = svc.settings.dst_bucket
    deadline = time.monotonic() + 30
    while True:  # cancel only once its multipart upload exists
        uploads = await svc.s3.list_multipart_uploads(Bucket=dst, Prefix=f"archives/{job_id}/")
        if uploads.get("Uploads"):
            break
        job, _ = await wait_for(client, job_id, ("RUNNING", *FINAL))
        assert job["status"] == "RUNNING" and time.monotonic() < deadline
        await asyncio.sleep(0.1)
    resp = await client.delete(f"/zip-jobs/{job_id}")
    assert resp.status == 202 and (await resp.json())["status"] == "CANCELLED"
    cancelled_at = time.monotonic()
    while True:
        uploads = await svc.s3.list_multipart_uploads(Bucket=dst, Prefix=f"archives/{job_id}/")
        if not uploads.get("Uploads"):
            break
        assert time.monotonic() - cancelled_at < 10, "upload not aborted within 10 s"
        await asyncio.sleep(0.2)
    listed = await svc.s3.list_objects_v2(Bucket=dst, Prefix=f"archives/{job_id}/")
    assert listed.get("KeyCount", 0) == 0
    job, _ = await wait_for(client, job_id)
    assert job["status"] == "CANCELLED" and "downloadUrl" not in job
