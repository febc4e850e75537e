"""``zipjobs submit`` and ``zipjobs upload-samples`` as a person runs them, against ``zipjobs dev``.

``zipjobs dev`` runs with an API token (bearer auth, as a JWT authorizer
would want); the client processes get only the URLs the dev command prints.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from service.local.samples import pdf_problems
from tests.support.archive_check import verify_archive
from tests.support.dev_process import DevProcess, clean_env, running_dev

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-for-the-client-test"


class Dev(DevProcess):
    @property
    def api(self) -> str:
        return self.value("zipjobs dev: ready at ")

    @property
    def endpoint(self) -> str:
        return self.value("local AWS (moto)")

    @property
    def src_bucket(self) -> str:
        return self.value("source bucket").removeprefix("s3://")


@pytest.fixture(scope="module")
def dev() -> Iterator[Dev]:
    with running_dev(clean_env(ZIPJOBS_API_TOKEN=TOKEN)) as process:
        yield Dev(process.proc, process.lines)


def zipjobs(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _aws_env(dev: Dev) -> dict[str, str]:
    return clean_env(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )


def test_upload_samples_then_submit_downloads_a_checked_archive(dev: Dev, tmp_path: Path) -> None:
    up = zipjobs(
        "upload-samples", "--bucket", dev.src_bucket, "--prefix", "client/", "--count", "7",
        "--total-mb", "3", "--endpoint-url", dev.endpoint, env=_aws_env(dev), cwd=tmp_path,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    s3 = boto3.client(
        "s3", endpoint_url=dev.endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    listed = s3.list_objects_v2(Bucket=dev.src_bucket, Prefix="client/")["Contents"]
    sources = {o["Key"]: s3.get_object(Bucket=dev.src_bucket, Key=o["Key"])["Body"].read()
               for o in listed}  # fmt: skip
    assert len(sources) == 7 and all(pdf_problems(b) == [] for b in sources.values())

    out = tmp_path / "mine.zip"
    run = zipjobs(
        "submit", "--api", dev.api, "--prefix", "client/", "-o", str(out), "--poll", "0.5",
        env=clean_env(ZIPJOBS_API_TOKEN=TOKEN), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "100%" in run.stderr and "READY" in run.stderr  # the progress lines
    assert run.stdout.startswith(f"{out}  ")
    assert "X-Amz-Signature" not in run.stdout + run.stderr  # the URL is never printed
    verify_archive(out, {k.removeprefix("client/"): v for k, v in sources.items()})


def test_submit_keys_file_with_the_token_flag(dev: Dev, tmp_path: Path) -> None:
    s3 = boto3.client(
        "s3", endpoint_url=dev.endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    docs = {f"kf/{i}.txt": f"file {i}\n".encode() * 100 for i in range(3)}
    for key, body in docs.items():
        s3.put_object(Bucket=dev.src_bucket, Key=key, Body=body)
    keys = tmp_path / "keys.txt"
    keys.write_text("# the job\n" + "\n".join(docs) + "\n\n")  # --comments skips line 1
    run = zipjobs(
        "submit", "--api", dev.api, "--keys-file", str(keys), "--comments", "--token", TOKEN,
        "--name", "named.zip", "-q", env=clean_env(), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "[" not in run.stderr  # -q: no progress bar
    verify_archive(tmp_path / "named.zip", docs)


def test_a_wrong_token_or_a_failed_job_exits_1_and_says_why(dev: Dev, tmp_path: Path) -> None:
    refused = zipjobs(
        "submit", "--api", dev.api, "--keys", "a.pdf", "--token", "wrong",
        env=clean_env(), cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "HTTP 401" in refused.stderr and "wrong" not in refused.stderr

    failed = zipjobs(
        "submit", "--api", dev.api, "--keys", "no/such/key.pdf", "-q",
        env=clean_env(ZIPJOBS_API_TOKEN=TOKEN), cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 1
    assert "FAILED" in failed.stderr and "no/such/key.pdf" in failed.stderr
    assert not list(tmp_path.glob("*.zip"))
