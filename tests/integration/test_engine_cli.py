"""``zipjobs zip`` as a user runs it: a separate process, a keys file, one line on failure.

Each run is a real subprocess against the session's endpoint (or the fault
proxy in front of it), so what is asserted is what a terminal would show.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.archive_check import verify_archive
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.s3_objects import body, download, object_exists, open_uploads

pytestmark = pytest.mark.integration

OUT = "out/cli.zip"


async def zipjobs_zip(endpoint_url: str, *args: str) -> tuple[int, str, str]:
    """Run ``python -m service.cli zip ARGS --endpoint-url URL``; (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        "zip",
        *args,
        "--endpoint-url",
        endpoint_url,
        "--no-progress",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_keys_file_keeps_spaces_and_leading_hash(
    s3: Any, bucket: str, put_objects: Any, aws_endpoint: Any, tmp_path: Path
) -> None:
    """Before: ' lead.pdf' was trimmed (then reported missing) and '#hash.pdf' silently dropped."""
    objects = {k: body(1000 + i, i) for i, k in enumerate([" lead.pdf", "trail.pdf ", "#hash.pdf"])}
    await put_objects(objects)
    keys = tmp_path / "keys.txt"
    keys.write_bytes(("\n".join(objects) + "\n").encode())
    code, out, err = await zipjobs_zip(
        aws_endpoint.endpoint_url, "--bucket", bucket, "--keys-file", str(keys),
        "--dest", f"s3://{bucket}/{OUT}",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["files"] == 3 and json.loads(out)["skipped"] == []
    await download(s3, bucket, OUT, tmp_path / "a.zip")
    verify_archive(tmp_path / "a.zip", objects)


async def test_nul_separated_keys_file(
    s3: Any, bucket: str, put_objects: Any, aws_endpoint: Any, tmp_path: Path
) -> None:
    """A key with a line break inside (``\r``; moto's server cannot store ``\n``)
    survives a NUL-separated keys file (as ``find -print0`` writes)."""
    objects = {"two\rparts.pdf": body(500, 1), " plain.pdf": body(600, 2)}
    await put_objects(objects)
    keys = tmp_path / "keys.nul"
    keys.write_bytes(b"\0".join(k.encode() for k in objects) + b"\0")
    code, out, err = await zipjobs_zip(
        aws_endpoint.endpoint_url, "--bucket", bucket, "--keys-file", str(keys),
        "--keys-format", "nul", "--dest", f"s3://{bucket}/{OUT}",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["files"] == 2


async def test_one_line_on_failure_even_when_the_abort_fails(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Every UploadPart and the AbortMultipartUpload are refused (403, as for a role
    without those permissions): the user sees one line that says the job failed AND
    that an upload was left for the lifecycle rule. Before: an 11-line traceback
    from the uploader's log.exception. Deflate: a STORED archive keeps its upload
    on such a failure, to resume (test_cli_resume). A 403 is not retried, so this
    takes seconds; 500s retried until botocore gives up are test_engine_failures'."""
    objects = {f"p/{i}.pdf": body(3 * 1024 * 1024, i) for i in range(3)}  # 9 MiB: multipart
    await put_objects(objects)
    for method, query in (("PUT", "partNumber="), ("DELETE", "uploadId=")):
        proxy.add(Fault(method, query_contains=query, status=403, code="AccessDenied", times=10**6))
    code, out, err = await zipjobs_zip(
        proxy.url, "--bucket", bucket, "--prefix", "p/", "--dest", f"s3://{bucket}/{OUT}",
        "--budget-mb", "24", "--compression", "deflate",
    )  # fmt: skip
    lines = err.strip("\n").split("\n")
    assert code == 1 and out == ""
    assert len(lines) == 1, err
    assert lines[0].startswith("zipjobs zip: ") and "could not be aborted" in lines[0], err
    assert "Traceback" not in err
    # The test cleans up what the failed abort left (the bucket must be deletable).
    uploads = await open_uploads(s3, bucket)
    assert [u["Key"] for u in uploads] == [OUT]
    for u in uploads:
        await s3.abort_multipart_upload(Bucket=bucket, Key=OUT, UploadId=u["UploadId"])
    assert not await object_exists(s3, bucket, OUT)
