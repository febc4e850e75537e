"""`terraform fmt -check` and `terraform validate`, offline through the provider mirror."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.terraform.tfrun import TERRAFORM_DIR, Terraform


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


def test_plan_rejects_a_budget_the_memory_cannot_hold(
    initialised: Terraform, tmp_path: Path
) -> None:
    """The cross-variable precondition fires at plan time, before anything is created."""
    package = tmp_path / "lambda.zip"
    package.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    initialised.env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    args = [
        "plan", "-input=false", "-refresh=false", "-lock=false",
        "-var=src_bucket_name=src-bucket", "-var=dst_bucket_name=dst-bucket",
        f"-var=lambda_package_path={package}",
        # An unroutable emulator: plan makes no AWS calls for new resources.
        '-var=aws_endpoint_overrides={"s3":"http://127.0.0.1:9","sts":"http://127.0.0.1:9"}',
    ]  # fmt: skip
    initialised.run(*args)  # the defaults plan cleanly
    with pytest.raises(AssertionError, match="zipper_memory_mb must be at least"):
        initialised.run(*args, "-var=zipper_memory_mb=1024", "-var=zipper_budget_mb=1024")
