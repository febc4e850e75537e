"""`terraform fmt -check` and `terraform validate`, offline through the provider mirror."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.terraform.tfrun import TERRAFORM_DIR, Terraform, load_build_tool


def test_fmt_is_clean(terraform_available: None) -> None:
    # In place: with -check, fmt only reads.
    tf = Terraform(workdir=TERRAFORM_DIR, env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull})
    proc = tf.run("fmt", "-check", "-recursive", "-list=true")
    assert proc.stdout.strip() == "", f"unformatted: {proc.stdout}"


@pytest.fixture(scope="module")
def initialised(terraform_available: None, tmp_path_factory: pytest.TempPathFactory) -> Terraform:
    tf = Terraform.copy_of_config(Path(tmp_path_factory.mktemp("tf-validate")))
    tf.init()
    return tf


def test_validate(initialised: Terraform) -> None:
    proc = initialised.run("validate", "-json")
    assert '"valid": true' in proc.stdout, proc.stdout


def _package(directory: Path, arch: str = "arm64", python_version: str = "3.13") -> Path:
    """An empty zip and the manifest tools/build_lambda.py would write beside it."""
    package = directory / "lambda.zip"
    package.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    tool = load_build_tool()
    tool.write_sidecar_manifest(package, tool.manifest(arch, python_version, {}, False))
    return package


def _plan_args(initialised: Terraform, package: Path) -> list[str]:
    initialised.env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return [
        "plan", "-input=false", "-refresh=false", "-lock=false",
        "-var=src_bucket_name=src-bucket", "-var=dst_bucket_name=dst-bucket",
        f"-var=lambda_package_path={package}",
        # An unroutable emulator: plan makes no AWS calls for new resources.
        '-var=aws_endpoint_overrides={"s3":"http://127.0.0.1:9","sts":"http://127.0.0.1:9"}',
    ]  # fmt: skip


def _plan_error(initialised: Terraform, args: list[str]) -> str:
    """The failed plan's output, whitespace-normalised (terraform wraps its messages)."""
    with pytest.raises(AssertionError) as failed:
        initialised.run(*args)
    return " ".join(str(failed.value).split())


def test_plan_rejects_a_budget_the_memory_cannot_hold(
    initialised: Terraform, tmp_path: Path
) -> None:
    """The cross-variable precondition fires at plan time, before anything is created."""
    args = _plan_args(initialised, _package(tmp_path))
    initialised.run(*args)  # the defaults plan cleanly
    with pytest.raises(AssertionError, match="zipper_memory_mb must be at least"):
        initialised.run(*args, "-var=zipper_memory_mb=1024", "-var=zipper_budget_mb=1024")


@pytest.mark.parametrize(
    ("built", "variables", "message"),
    [
        (("arm64", "3.12"), [], "built for python3.12/arm64"),
        (("x86_64", "3.13"), [], "built for python3.13/x86_64"),
        (("arm64", "3.13"), ["-var=lambda_runtime=python3.12"], "are python3.12/arm64"),
    ],
)
def test_plan_refuses_a_package_built_for_another_runtime(
    initialised: Terraform,
    tmp_path: Path,
    built: tuple[str, str],
    variables: list[str],
    message: str,
) -> None:
    """A cp312 or x86_64 package on the python3.13/arm64 runtime would run without its C
    extensions (docs/packaging.md); the manifest check stops it at plan time."""
    args = _plan_args(initialised, _package(tmp_path, *built))
    assert message in _plan_error(initialised, [*args, *variables])


def test_plan_refuses_a_missing_or_stale_manifest(initialised: Terraform, tmp_path: Path) -> None:
    package = _package(tmp_path)
    args = _plan_args(initialised, package)
    package.write_bytes(b"PK\x05\x06" + b"\0" * 17 + b"\1")  # another build, same manifest
    assert "the manifest is from another build" in _plan_error(initialised, args)
    package.with_name("lambda.manifest.json").unlink()
    assert "built for ?/? " in _plan_error(initialised, args)


TOKEN = "-var=api_token_secret_arn=arn:aws:secretsmanager:us-east-1:123456789012:secret:t-AbC"


def _planned(initialised: Terraform, args: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Resource type -> the ``after`` values of each planned resource (terraform show -json)."""
    plan = initialised.workdir / "operator.tfplan"
    initialised.run(*args, f"-out={plan}")
    shown = json.loads(initialised.run("show", "-json", str(plan)).stdout)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for change in shown["resource_changes"]:
        by_type.setdefault(change["type"], []).append(change["change"]["after"])
    return by_type


def test_without_a_topic_or_origins_the_alarms_stay_silent_and_cors_is_off(
    initialised: Terraform, tmp_path: Path
) -> None:
    """The applied stack sets both (test_apply_local.py); the defaults set neither.

    The plan also carries an API token with ``api_authorization = NONE``, the
    combination that is allowed (test_plan_refuses_an_api_token_behind_iam_or_jwt).
    """
    args = [*_plan_args(initialised, _package(tmp_path)), TOKEN, "-var=api_authorization=NONE"]
    planned = _planned(initialised, args)
    alarms = planned["aws_cloudwatch_metric_alarm"]
    assert len(alarms) == 4
    # An empty set of actions is planned as null.
    assert all(not a["alarm_actions"] and not a["ok_actions"] for a in alarms), alarms
    (api,) = planned["aws_apigatewayv2_api"]
    assert not api["cors_configuration"], api


def test_plan_refuses_an_api_token_behind_iam_or_jwt(
    initialised: Terraform, tmp_path: Path
) -> None:
    """The token is sent as ``Authorization: Bearer``, the header that carries the SigV4
    signature (AWS_IAM) or the JWT, so with either no request could carry both.
    https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-access-control-iam.html
    https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-jwt-authorizer.html
    """
    args = _plan_args(initialised, _package(tmp_path))
    assert "api_token_secret_arn needs api_authorization = NONE" in _plan_error(
        initialised, [*args, TOKEN]
    )
