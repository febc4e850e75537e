"""``zipjobs dev`` as a second process, driven with plain HTTP like any client would.

The dev command brings its own embedded AWS, so this test needs nothing from
the session fixture; it uploads through the S3 endpoint the command prints.
"""

from __future__ import annotations

import io
import json
import re
import signal
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from service.local.samples import make_pdf
from tests.support.archive_check import verify_archive_bytes
from tests.support.dev_process import DevProcess, clean_env, running_dev

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev(clean_env(), ready_seconds=60) as process:
        yield process


def http(method: str, url: str, doc: Any = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # our own 127.0.0.1
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def test_dev_prints_where_everything_is(dev: DevProcess) -> None:
    api = dev.value("zipjobs dev: ready at ")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", api)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", dev.value("local AWS (moto)  "))
    assert dev.value("source bucket     ").startswith("s3://")
    assert dev.value("job queue         ").startswith("http://127.0.0.1:")
    assert http("GET", api + "/healthz")[0] == 200


def test_full_flow_over_plain_http(dev: DevProcess, tmp_path: Path) -> None:
    api = dev.value("zipjobs dev: ready at ")
    endpoint = dev.value("local AWS (moto)  ")
    bucket = dev.value("source bucket     ").removeprefix("s3://")
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}),
    )
    files = {
        f"inbox/letter-{i}.pdf": make_pdf(f"Letter {i}", 40_000 * (i + 1), i) for i in range(5)
    }
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    status, headers, accepted = http(
        "POST", api + "/zip-jobs", {"prefix": "inbox/", "name": "letters.zip"}
    )
    assert status == 202 and headers["Location"] == accepted["statusUrl"]
    deadline = time.monotonic() + 60
    while True:
        status, _, job = http("GET", api + accepted["statusUrl"])
        assert status == 200
        if job["status"] in ("READY", "FAILED", "CANCELLED"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "READY", job
    with urllib.request.urlopen(job["downloadUrl"], timeout=30) as resp:  # presigned, local
        data = resp.read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == sorted(k.removeprefix("inbox/") for k in files)
    verify_archive_bytes(
        data, {k.removeprefix("inbox/"): v for k, v in files.items()}, tmp_dir=tmp_path
    )
    status, _, problem = http("GET", api + "/zip-jobs/" + "0" * 32)
    assert status == 404 and problem["status"] == 404


def test_sigterm_stops_dev_cleanly(dev: DevProcess) -> None:
    """Runs last in this module: the fixture's teardown would do the same."""
    dev.proc.send_signal(signal.SIGTERM)
    assert dev.proc.wait(timeout=30) == 0
