"""The built Lambda package, imported and run on its target: arm64, CPython 3.13.

The last gap between the tests and a deploy: every other test imports the
source tree on this machine's x86_64 Python. Here the exact zip that
``tools/build_lambda.py`` produces (or ``ZIPJOBS_LAMBDA_PACKAGE``, e.g.
build/lambda.zip) is unzipped and imported by Debian's arm64 python3.13 under
qemu-user, and its handlers take a job from the API event to a downloadable
archive against moto (which runs natively, reached over HTTP as AWS would be).
A package whose C extensions do not load on that interpreter fails here.

Slow (qemu emulates every arm64 instruction), so it is its own tox env:
``tox -e lambda-arm64`` (docs/packaging.md). Nothing here skips: in this env a
missing tool is a failure, not a pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3
import pytest

from service.local.samples import make_pdf
from service.local.stack import Provisioned, StackNames, provision
from tests.lambda_.events import http_event, sqs_event
from tests.support.archive_check import verify_archive_bytes
from tests.support.aws_backend import AwsEndpoint
from tests.terraform.tfrun import REPO, load_build_tool

pytestmark = pytest.mark.integration

TARGET = {"runtime": "python3.13", "architecture": "arm64"}
DRIVER = Path(__file__).with_name("driver.py")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package under test, unzipped."""
    tmp = tmp_path_factory.mktemp("arm64-package")
    given = os.environ.get("ZIPJOBS_LAMBDA_PACKAGE")
    zip_path = Path(given) if given else load_build_tool().build(tmp / "lambda.zip").path
    root = tmp / "site"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root)
    return root


@pytest.fixture(scope="module")
def sysroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's arm64 python3.13 and the libraries it loads (tools/arm64_sysroot.sh)."""
    cache = Path(os.environ.get("ZIPJOBS_ARM64_DIR") or tmp_path_factory.mktemp("arm64"))
    out = subprocess.run(
        ["bash", str(REPO / "tools/arm64_sysroot.sh"), str(cache)],
        capture_output=True, text=True, timeout=900, check=True,
    )  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stack(aws_endpoint: AwsEndpoint) -> Provisioned:
    names = StackNames(f"arm64-{uuid.uuid4().hex[:8]}")
    return asyncio.run(provision(aws_endpoint.endpoint_url, names))


@dataclass
class Driver:
    """The arm64 interpreter running tests/arm64/driver.py, one request per line."""

    proc: subprocess.Popen[str]
    log: Path

    def call(self, request: dict[str, Any]) -> Any:
        stdin: IO[str] | None = self.proc.stdin
        stdout: IO[str] | None = self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        line = stdout.readline()
        assert line, f"the arm64 driver died; its log:\n{self.log.read_text()[-4000:]}"
        reply = json.loads(line)
        assert "error" not in reply, f"{reply['error']}\n{self.log.read_text()[-4000:]}"
        return reply["ok"]

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        return records


@pytest.fixture(scope="module")
def driver(
    package: Path, sysroot: Path, stack: Provisioned, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Driver]:
    python = sysroot / "usr/bin/python3.13"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(package),  # the package, and nothing of this checkout
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "POWERTOOLS_SERVICE_NAME": "zipjobs-arm64",
        **stack.env(ZIPJOBS_WORKER_CONCURRENCY="1"),
    }
    log = tmp_path_factory.mktemp("arm64-log") / "driver.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            ["qemu-aarch64-static", "-L", str(sysroot), str(python), str(DRIVER)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            env=env, text=True, cwd=package,
        )  # fmt: skip
        try:
            yield Driver(proc, log)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=60)


def test_the_package_was_built_for_this_target(package: Path) -> None:
    manifest = json.loads((package / "lambda_manifest.json").read_text())
    assert {k: manifest[k] for k in TARGET} == TARGET
    assert manifest["python_abi"] == "cp313"


def test_every_c_extension_loads_on_arm64_python313(driver: Driver) -> None:
    """The handlers' cold-start log says what the interpreter loaded; all must be native."""
    report = driver.call({"report": True})
    assert report["running"] == TARGET
    assert report["built_for"] == TARGET
    assert report["fallbacks"] == [], report
    assert report["native_extensions"] and all(report["native_extensions"].values())
    logged = [r for r in driver.log_records() if str(r.get("message", "")).startswith("cold start")]
    assert len(logged) == 1, driver.log.read_text()[-2000:]
    assert logged[0]["message"] == "cold start: package matches the runtime"
    assert logged[0]["native_extensions"] == report["native_extensions"]


def test_handlers_run_a_job_to_a_verified_archive_on_arm64(
    driver: Driver, stack: Provisioned
) -> None:
    kw: dict[str, Any] = {"endpoint_url": stack.endpoint_url, "region_name": "us-east-1"}
    s3, sqs = boto3.client("s3", **kw), boto3.client("sqs", **kw)
    docs = {f"arm64/doc-{i}.pdf": make_pdf(f"arm64 {i}", 30_000 + 7_000 * i, i) for i in range(5)}
    for key, body in docs.items():
        s3.put_object(Bucket=stack.names.src_bucket, Key=key, Body=body)

    out = driver.call(
        {"handler": "enqueue", "event": http_event("POST", "/zip-jobs", body={"prefix": "arm64/"})}
    )
    assert out["statusCode"] == 202, out
    job_id = json.loads(out["body"])["jobId"]

    messages = sqs.receive_message(
        QueueUrl=stack.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=5
    ).get("Messages", [])
    assert len(messages) == 1
    arn = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])
    batch = driver.call(
        {
            "handler": "zipper",
            "event": sqs_event(messages, arn["Attributes"]["QueueArn"]),
            "seconds": 600,
        }
    )
    assert batch == {"batchItemFailures": []}

    out = driver.call({"handler": "status", "event": http_event("GET", f"/zip-jobs/{job_id}")})
    assert out["statusCode"] == 200, out
    job = json.loads(out["body"])
    assert job["status"] == "READY", job
    url = job["downloadUrl"]
    assert url.startswith("http://127.0.0.1")  # the local emulator only
    with urllib.request.urlopen(url, timeout=60) as resp:
        data = resp.read()
    # A prefix job names entries relative to the prefix.
    verify_archive_bytes(data, {key.removeprefix("arm64/"): body for key, body in docs.items()})
    assert s3.list_multipart_uploads(Bucket=stack.names.dst_bucket).get("Uploads", []) == []


def test_a_package_for_python312_is_caught_on_python313(
    sysroot: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The failure this env exists for: cp312 wheels on 3.13 import, minus every C extension.

    Proves the check can fail: the same report that passes above names each
    fallback and the runtime mismatch for a package built for the wrong Python.
    """
    tmp = tmp_path_factory.mktemp("arm64-cp312")
    built = load_build_tool().build(tmp / "lambda.zip", python_version="3.12")
    root = tmp / "site"
    with zipfile.ZipFile(built.path) as zf:
        zf.extractall(root)
    code = (
        "import json; from lambda_adapter.integrity import cold_start_report; "
        "print(json.dumps(cold_start_report().as_log()))"
    )
    python = sysroot / "usr/bin/python3.13"
    out = subprocess.run(
        ["qemu-aarch64-static", "-L", str(sysroot), str(python), "-c", code],
        env={"PYTHONPATH": str(root), "PYTHONNOUSERSITE": "1", "PATH": os.environ["PATH"]},
        capture_output=True, text=True, timeout=1200, check=True, cwd=root,
    )  # fmt: skip
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["fallbacks"] == sorted(report["native_extensions"]), report
    assert report["mismatches"] == ["runtime: built python3.12, running python3.13"]
