"""The API token on the applied stack: read from Secrets Manager with the grant Terraform gives.

``api_token_secret_arn`` needs ``api_authorization = NONE`` (docs/aws.md, A5),
so this module re-applies the session's stack that way (``make tf-apply``
with both variables) and runs the functions in new containers, as Lambda
does after a configuration change. The API Gateway double now lets requests
through (NONE); the functions refuse a missing or wrong bearer token
themselves. The stack stays so until the session destroys it: the
directory's conftest runs this module after every other test (re-applying
the original configuration would cost another apply, ~30 s).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.archive_check import verify_archive
from tests.support.dev_process import clean_env
from tests.support.iam_policy import Request, allows
from tests.terraform.conftest import TfStack
from tests.terraform.http_api import HttpApiGateway
from tests.terraform.stack_functions import (
    EventSourceMapping,
    Functions,
    Recorder,
    granted_actions,
    iam_actions_called,
    role_policies,
)
from tests.terraform.test_client_on_stack import zipjobs

# A second apply: `tox -e terraform-slow`, not `make test` (whose `terraform` env
# keeps the first apply and the handlers on it).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

TOKEN = f"t0ken-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def token_stack(tf_stack: TfStack) -> TfStack:
    secret = tf_stack.client("secretsmanager").create_secret(
        Name=f"{tf_stack.variables['project_name']}-api-token", SecretString=TOKEN
    )["ARN"]
    tf = tf_stack.runner
    assert tf is not None
    with_token = f"-var=api_authorization=NONE -var=api_token_secret_arn={secret}"
    tf.make(
        "tf-apply",
        BUILD_ARGS=tf_stack.build_args,
        TF_ARGS=f"-auto-approve -input=false {with_token}",
    )
    return dataclasses.replace(tf_stack, outputs=tf.outputs())


@pytest.fixture(scope="module")
def token_api(token_stack: TfStack) -> Iterator[tuple[HttpApiGateway, Recorder]]:
    recorder = Recorder()
    fns = Functions(token_stack, recorder)
    api = HttpApiGateway(token_stack, fns, {})
    api.start()
    try:
        with EventSourceMapping(fns) as esm:
            yield api, recorder
        assert esm.errors == [], "delivering to the zipper failed:\n" + "\n".join(esm.errors)
    finally:
        api.stop()
        fns.close()


def test_submit_with_the_token_and_without(
    token_stack: TfStack,
    src_bucket: str,
    token_api: tuple[HttpApiGateway, Recorder],
    tmp_path: Path,
) -> None:
    api, _ = token_api
    assert token_stack.outputs["function_environment"]["enqueue"][
        "ZIPJOBS_API_TOKEN_SECRET_ARN"
    ].startswith("arn:aws:secretsmanager:")
    s3 = token_stack.client("s3")
    docs = {f"docs/token/{i}.txt": f"token file {i}\n".encode() * (50 + i) for i in range(3)}
    for key, body in docs.items():
        s3.put_object(Bucket=src_bucket, Key=key, Body=body)
    run = zipjobs(
        "submit", "--api", api.url, "--keys", *docs, "--name", "token.zip", "-q",
        "--poll", "0.5", "--wait-timeout", "300",
        env=clean_env(ZIPJOBS_API_TOKEN=TOKEN), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    verify_archive(tmp_path / "token.zip", docs)
    for flags in (("--token", "wrong"), ("--auth", "none")):
        refused = zipjobs(
            "submit", "--api", api.url, "--keys", *docs, *flags, env=clean_env(), cwd=tmp_path
        )  # fmt: skip
        assert refused.returncode == 1, refused.stderr
        assert "the API refused the job: HTTP 401" in refused.stderr, refused.stderr
        assert TOKEN not in refused.stderr + refused.stdout


def test_the_token_is_read_with_the_grant_terraform_gave_and_only_there(
    token_stack: TfStack, token_api: tuple[HttpApiGateway, Recorder]
) -> None:
    """Runs after the submit above: enqueue and status started and read the secret."""
    _, recorder = token_api
    granted = granted_actions(token_stack)
    secret = token_stack.outputs["function_environment"]["enqueue"]["ZIPJOBS_API_TOKEN_SECRET_ARN"]
    for fn in ("enqueue", "status"):
        assert ("secretsmanager", "GetSecretValue") in recorder.calls[fn], recorder.calls[fn]
        called = iam_actions_called(recorder.calls[fn])
        assert called <= granted[fn], f"{fn} calls but is not granted: {called - granted[fn]}"
        policies = role_policies(token_stack, token_stack.outputs["role_names"][fn])
        read = Request("secretsmanager:GetSecretValue", secret, {})
        assert allows(policies, read), f"{fn} may not read {secret}"
        other = Request("secretsmanager:GetSecretValue", secret.replace("-api-token", "-x"), {})
        assert not allows(policies, other), f"{fn} may read other secrets"
    for fn in ("zipper", "sweeper"):
        assert not any(a.startswith(("secretsmanager:", "ssm:")) for a in granted[fn]), fn
