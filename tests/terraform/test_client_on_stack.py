"""``zipjobs submit`` and ``zipjobs upload-samples`` against the stack Terraform applied.

The client runs as a separate process, as a person would run it, and reaches
the stack only through its API URL: ``HttpApiGateway`` (``http_api.py``)
plays API Gateway in front of the functions with the routes, authorization
types and Lambda permissions read back from moto, and a thread plays the SQS
event source mapping in front of the zipper. Callers are IAM users created in
the emulator; API Gateway's AWS_IAM check (signature, then
``execute-api:Invoke`` in the caller's policies) is done by the double.
https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-access-control-iam.html
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials

from service.client.auth import SigV4
from service.local.samples import pdf_problems
from tests.support.archive_check import verify_archive
from tests.support.dev_process import clean_env
from tests.terraform.conftest import TfStack
from tests.terraform.http_api import Caller, HttpApiGateway
from tests.terraform.stack_functions import EventSourceMapping, Functions, deliver_batch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


def _create_caller(stack: TfStack, name: str, policy: dict[str, Any] | None) -> tuple[str, Caller]:
    iam = stack.client("iam")
    user = iam.create_user(UserName=name)["User"]
    if policy is not None:
        iam.put_user_policy(UserName=name, PolicyName="invoke", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], Caller(name, user["Arn"], key["SecretAccessKey"])


@pytest.fixture(scope="module")
def callers(tf_stack: TfStack) -> dict[str, tuple[str, Caller]]:
    """``invoker`` may invoke the API's routes (as docs/aws.md tells operators to grant);
    ``outsider`` is a valid IAM user with no such grant."""
    suffix = uuid.uuid4().hex[:6]
    execution_arn = tf_stack.outputs["api_execution_arn"]
    invoke = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "execute-api:Invoke",
                "Resource": [
                    f"{execution_arn}/*/POST/zip-jobs",
                    f"{execution_arn}/*/GET/zip-jobs/*",
                    f"{execution_arn}/*/DELETE/zip-jobs/*",
                ],
            }
        ],
    }
    return {
        "invoker": _create_caller(tf_stack, f"invoker-{suffix}", invoke),
        "outsider": _create_caller(tf_stack, f"outsider-{suffix}", None),
    }


@pytest.fixture(scope="module")
def gateway(
    tf_stack: TfStack, fns: Functions, callers: dict[str, tuple[str, Caller]]
) -> Iterator[HttpApiGateway]:
    api = HttpApiGateway(tf_stack, fns, dict(callers.values()))
    api.start()
    try:
        with EventSourceMapping(fns) as esm:
            yield api
        assert esm.errors == [], "delivering to the zipper failed:\n" + "\n".join(esm.errors)
    finally:
        api.stop()
    # Leave the queue as we found it for the next module (nothing is left to run).
    assert deliver_batch(fns) is None


def zipjobs(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _wrong(secret: str) -> str:
    """The secret with its last character changed: moto's random secrets end in
    "x" one time in 64, and replacing it by "x" then changed nothing."""
    return secret[:-1] + ("y" if secret.endswith("x") else "x")


def _key_env(tf_stack: TfStack, access_key: str, secret_key: str) -> dict[str, str]:
    """Credentials from the environment, the first link of the normal chain."""
    return clean_env(
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
        AWS_DEFAULT_REGION=tf_stack.endpoint.region,
        AWS_CONFIG_FILE=str(REPO / "no-such-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(REPO / "no-such-aws-credentials"),
    )


def _profile_env(
    tf_stack: TfStack, tmp_path: Path, access_key: str, caller: Caller
) -> dict[str, str]:
    """Credentials and region from a named profile in the AWS config files."""
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[client]\naws_access_key_id = {access_key}\naws_secret_access_key = {caller.secret_key}\n"
    )
    config = tmp_path / "config"
    config.write_text(f"[profile client]\nregion = {tf_stack.endpoint.region}\n")
    return clean_env(AWS_CONFIG_FILE=str(config), AWS_SHARED_CREDENTIALS_FILE=str(credentials))


def test_upload_samples_then_submit_a_prefix_signed_with_a_profile(
    tf_stack: TfStack,
    src_bucket: str,
    gateway: HttpApiGateway,
    callers: dict[str, tuple[str, Caller]],
    tmp_path: Path,
) -> None:
    prefix = f"docs/samples-{uuid.uuid4().hex[:6]}/"
    up = zipjobs(
        "upload-samples", "--bucket", src_bucket, "--prefix", prefix, "--count", "6",
        "--total-mb", "2", "--endpoint-url", tf_stack.endpoint.endpoint_url,
        "--region", tf_stack.endpoint.region,
        env=_key_env(tf_stack, "uploader", "uploader-secret"), cwd=tmp_path,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    s3 = tf_stack.client("s3")
    listed = s3.list_objects_v2(Bucket=src_bucket, Prefix=prefix)["Contents"]
    sources = {
        o["Key"]: s3.get_object(Bucket=src_bucket, Key=o["Key"])["Body"].read() for o in listed
    }
    assert len(sources) == 6 and all(pdf_problems(b) == [] for b in sources.values())

    access_key, caller = callers["invoker"]
    out = tmp_path / "samples.zip"
    before = gateway.invocations.copy()
    run = zipjobs(
        "submit", "--api", gateway.url, "--prefix", prefix, "--profile", "client",
        "-o", str(out), "--poll", "0.5", "--wait-timeout", "300",
        env=_profile_env(tf_stack, tmp_path, access_key, caller), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "100%" in run.stderr and "READY" in run.stderr
    assert run.stdout.startswith(f"{out}  ")
    assert "X-Amz-Signature" not in run.stdout + run.stderr  # the URL is never printed
    verify_archive(out, {k.removeprefix(prefix): v for k, v in sources.items()})
    # It went through the routes: one POST to enqueue, the status reads to status.
    assert gateway.invocations["enqueue"] == before["enqueue"] + 1
    assert gateway.invocations["status"] > before["status"]


def test_submit_keys_signed_with_environment_credentials(
    src_bucket: str, gateway: HttpApiGateway, callers: dict[str, tuple[str, Caller]], tmp_path: Path
) -> None:
    tf_stack = gateway.stack
    s3 = tf_stack.client("s3")
    docs = {f"docs/client-keys/{i}.txt": f"file {i}\n".encode() * (200 + i) for i in range(4)}
    for key, body in docs.items():
        s3.put_object(Bucket=src_bucket, Key=key, Body=body)
    access_key, caller = callers["invoker"]
    run = zipjobs(
        "submit", "--api", gateway.url, "--keys", *docs, "--name", "keys.zip", "-q",
        "--poll", "0.5", "--wait-timeout", "300",
        env=_key_env(tf_stack, access_key, caller.secret_key), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    verify_archive(tmp_path / "keys.zip", docs)


def test_unsigned_wrongly_signed_or_ungranted_calls_are_refused(
    tf_stack: TfStack,
    gateway: HttpApiGateway,
    callers: dict[str, tuple[str, Caller]],
    tmp_path: Path,
) -> None:
    access_key, caller = callers["invoker"]
    outsider_key, outsider = callers["outsider"]
    before = gateway.invocations.copy()
    cases = {
        "unsigned": (("--auth", "none"), _key_env(tf_stack, access_key, caller.secret_key)),
        "wrong secret": ((), _key_env(tf_stack, access_key, _wrong(caller.secret_key))),
        "unknown key": ((), _key_env(tf_stack, "AKIANOTAKEY", caller.secret_key)),
        "no grant": ((), _key_env(tf_stack, outsider_key, outsider.secret_key)),
    }
    said = {}
    for case, (flags, env) in cases.items():
        run = zipjobs(
            "submit", "--api", gateway.url, "--keys", "docs/client-keys/0.txt", *flags,
            env=env, cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 1, (case, run.stderr)
        assert "the API refused the job: HTTP 403" in run.stderr, (case, run.stderr)
        said[case] = run.stderr
    assert "HTTP 403: Forbidden" in said["unsigned"]
    assert "signature we calculated does not match" in said["wrong secret"]
    assert "security token included in the request is invalid" in said["unknown key"]
    assert (
        f"{outsider.user_arn} is not authorized to perform: execute-api:Invoke" in said["no grant"]
    )
    assert gateway.invocations == before  # API Gateway refused them: no function ran
    assert not list(tmp_path.glob("*.zip"))


def _signed_post(gateway: HttpApiGateway, access_key: str, caller: Caller, body: bytes) -> Any:
    """A raw signed POST /zip-jobs, to send bodies of a chosen size."""
    url = gateway.url + "/zip-jobs"
    signer = SigV4(Credentials(access_key, caller.secret_key), gateway.region)
    headers = signer.headers("POST", url, body, {"Content-Type": "application/json"})
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, resp.headers.get("content-type"), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type"), json.loads(err.read())


def test_body_limits_the_function_s_and_api_gateway_s(
    gateway: HttpApiGateway, callers: dict[str, tuple[str, Caller]]
) -> None:
    """Over 5 MiB the function answers 413 problem+json; over Lambda's 6 MB event API
    Gateway answers 413 itself (docs/aws.md, rule A1)."""
    access_key, caller = callers["invoker"]
    keys = json.dumps({"keys": ["docs/" + "k" * 1000 + f"{i}" for i in range(5600)]}).encode()
    assert 5 * 1024 * 1024 < len(keys) < 6 * 1024 * 1024 - 100_000
    status, ctype, doc = _signed_post(gateway, access_key, caller, keys)
    assert (status, ctype) == (413, "application/problem+json"), doc
    huge = json.dumps({"keys": ["docs/" + "k" * 1000 + f"{i}" for i in range(6500)]}).encode()
    status, ctype, doc = _signed_post(gateway, access_key, caller, huge)
    assert (status, doc) == (413, {"message": "Request Entity Too Large"})


def test_an_unknown_route_is_api_gateway_s_404(gateway: HttpApiGateway) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(gateway.url + "/zip-jobs/a/b", timeout=10)
    assert info.value.code == 404
    assert json.loads(info.value.read()) == {"message": "Not Found"}
