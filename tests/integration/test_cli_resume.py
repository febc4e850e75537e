"""``zipjobs zip`` killed with SIGKILL resumes: same upload, same bytes.

The command runs as a real process against the local S3 endpoint. It is
killed (no handler runs) once its first checkpoint is in S3, then run again
with the same arguments: it must continue the same multipart upload from
the checkpoint and produce exactly the bytes of an uninterrupted run.
``--restart`` starts over instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from service.engine import Destination, MiB
from service.engine.checkpoint import SUFFIX, CheckpointStore
from tests.support.archive_check import verify_archive
from tests.support.aws_backend import AwsEndpoint
from tests.support.s3_objects import download, object_exists, open_uploads

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _argv(aws: AwsEndpoint, bucket: str, keys: Path, dest: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "service.cli", "zip", "--bucket", bucket, "--keys-file", str(keys),
        "--dest", f"s3://{bucket}/{dest}", "--endpoint-url", aws.endpoint_url,
        "--region", aws.region, "--budget-mb", "16", "--concurrency", "2",
        "--upload-concurrency", "1", "--no-progress", "--checkpoint-seconds", "0", *extra,
    ]  # fmt: skip


def _env(aws: AwsEndpoint) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": aws.access_key_id,
        "AWS_SECRET_ACCESS_KEY": aws.secret_access_key,
    }


def _run(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


async def _kill_after_checkpoint(
    s3: Any, argv: list[str], env: dict[str, str], dest: Destination, parts: int
) -> int:
    """Start the command, SIGKILL it once a checkpoint holds ``parts`` parts."""
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = CheckpointStore(s3, dest)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            cp = await store.load()
            if cp is not None and len(cp.parts) >= parts:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return cp.state.offset
            assert proc.poll() is None, "finished before it could be killed"
            await asyncio.sleep(0.05)
        pytest.fail("no checkpoint appeared")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


async def test_sigkilled_zip_resumes_to_the_same_bytes(
    s3: Any, bucket: str, put_objects: Any, aws_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    rng = random.Random(5)
    objects = {f"docs/{i}.pdf": rng.randbytes(s) for i, s in enumerate([9 * MiB, 7, 20 * MiB])}
    objects["docs/last.pdf"] = rng.randbytes(11 * MiB + 1)
    await put_objects(objects)
    keys = tmp_path / "keys.txt"
    keys.write_text("\n".join(objects))
    env = _env(aws_endpoint)

    reference = _run(_argv(aws_endpoint, bucket, keys, "ref.zip"), env)
    want_path = tmp_path / "ref.zip"
    await download(s3, bucket, "ref.zip", want_path)

    dest = Destination(bucket, "out/all.zip")
    argv = _argv(aws_endpoint, bucket, keys, dest.key)
    offset = await _kill_after_checkpoint(s3, argv, env, dest, parts=2)
    uploads = await open_uploads(s3, bucket)
    assert len(uploads) == 1  # the killed run's upload is still there

    summary = _run(argv, env)
    assert summary["resumed_from_bytes"] >= offset >= 2 * 8 * MiB
    assert summary["archive_bytes"] == reference["archive_bytes"]
    got = tmp_path / "all.zip"
    await download(s3, bucket, dest.key, got)
    assert got.read_bytes() == want_path.read_bytes()
    verify_archive(got, objects)
    assert await open_uploads(s3, bucket) == []
    assert not await object_exists(s3, bucket, dest.key + SUFFIX)


async def test_restart_discards_the_checkpoint_and_its_upload(
    s3: Any, bucket: str, put_objects: Any, aws_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    rng = random.Random(6)
    objects = {f"d/{i}.pdf": rng.randbytes(12 * MiB) for i in range(3)}
    await put_objects(objects)
    keys = tmp_path / "keys.txt"
    keys.write_text("\n".join(objects))
    env = _env(aws_endpoint)
    dest = Destination(bucket, "out/again.zip")
    argv = _argv(aws_endpoint, bucket, keys, dest.key)
    await _kill_after_checkpoint(s3, argv, env, dest, parts=1)
    old = (await open_uploads(s3, bucket))[0]["UploadId"]

    summary = _run([*argv, "--restart"], env)
    assert summary["resumed_from_bytes"] == 0
    with pytest.raises(Exception, match="NoSuchUpload"):
        await s3.list_parts(Bucket=bucket, Key=dest.key, UploadId=old)
    got = tmp_path / "again.zip"
    await download(s3, bucket, dest.key, got)
    verify_archive(got, objects)
    assert await open_uploads(s3, bucket) == []
