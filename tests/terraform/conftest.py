"""Fixtures for the Terraform stack: one ``terraform apply`` per session, against moto.

``tf_stack`` applies terraform/ to an in-process moto server (127.0.0.1, a
port the OS picks) once per session through the Makefile's ``tf-init``,
``tf-plan``, ``tf-apply`` and ``tf-destroy`` (on a copy of the configuration),
yields a ``TfStack`` with the stack's outputs, and destroys it afterwards
(checking the destroy removed the table).
Other tests use it to reach the deployed names, e.g. to run the handlers
in-process with ``stack.handler_env("zipper")``.

Note: moto keeps its state per process, so this server shares state with the
session's ``aws_endpoint`` fixture when both are moto; the stack's names carry
a random suffix so they never collide with a test's buckets, and no test may
reset moto while a ``tf_stack`` test runs.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from tests.support.aws_backend import AwsEndpoint, moto_endpoint
from tests.terraform.stack_functions import Functions, Recorder
from tests.terraform.tfrun import Terraform, endpoint_overrides, missing_tooling

# boto3's default session is not thread-safe while it creates clients; the API
# Gateway double and the event source mapping thread both create them.
_CLIENT_CREATION = threading.Lock()


def emulator_client(endpoint: AwsEndpoint, service: str) -> Any:
    """A boto3 client on the emulator."""
    with _CLIENT_CREATION:
        return boto3.client(
            service,
            endpoint_url=endpoint.endpoint_url,
            region_name=endpoint.region,
            aws_access_key_id=endpoint.access_key_id,
            aws_secret_access_key=endpoint.secret_access_key,
        )


@dataclass(frozen=True)
class TfStack:
    """What a test needs of the applied stack."""

    outputs: dict[str, Any]
    endpoint: AwsEndpoint
    variables: dict[str, Any]
    timings: dict[str, float]

    @property
    def table_name(self) -> str:
        return str(self.outputs["table_name"])

    @property
    def queue_url(self) -> str:
        return str(self.outputs["queue_url"])

    @property
    def dst_bucket(self) -> str:
        return str(self.outputs["dst_bucket"])

    @property
    def src_bucket(self) -> str:
        return str(self.outputs["src_buckets"][0])

    def client(self, service: str) -> Any:
        """A boto3 client on the emulator (sync: these are checks, not the service)."""
        return emulator_client(self.endpoint, service)

    def handler_env(self, function: str) -> dict[str, str]:
        """The function's Terraform environment plus what a local run needs to reach moto."""
        env = dict(self.outputs["function_environment"][function])
        env.update(
            AWS_ENDPOINT_URL=self.endpoint.endpoint_url,
            AWS_REGION=self.endpoint.region,
            AWS_DEFAULT_REGION=self.endpoint.region,
            AWS_ACCESS_KEY_ID=self.endpoint.access_key_id,
            AWS_SECRET_ACCESS_KEY=self.endpoint.secret_access_key,
        )
        return env


@pytest.fixture(scope="session")
def terraform_available() -> None:
    reason = missing_tooling()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def tf_stack(
    terraform_available: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TfStack]:
    """Apply terraform/ to moto once per session; destroy it at the end."""
    workdir = tmp_path_factory.mktemp("tf-stack")
    package = workdir / "lambda.zip"
    build_args = f"--no-deps -o {package}"
    suffix = uuid.uuid4().hex[:8]
    with moto_endpoint() as endpoint:
        # SSE-KMS on both sides (moto has KMS; the keys are the customer's, not the stack's).
        kms = emulator_client(endpoint, "kms")
        dst_key = kms.create_key(Description=f"zj-{suffix} archives")["KeyMetadata"]["Arn"]
        src_key = kms.create_key(Description=f"zj-{suffix} sources")["KeyMetadata"]["Arn"]
        tf = Terraform.copy_of_config(
            workdir / "config",
            {
                "AWS_ACCESS_KEY_ID": endpoint.access_key_id,
                "AWS_SECRET_ACCESS_KEY": endpoint.secret_access_key,
                "AWS_REGION": endpoint.region,
            },
        )
        variables = {
            "project_name": f"zj-{suffix}",
            "aws_region": endpoint.region,
            "src_bucket_name": f"zj-{suffix}-src",
            "src_prefixes": ["docs/", "invoices/"],
            "dst_bucket_name": f"zj-{suffix}-dst",
            "dst_bucket_force_destroy": True,
            # moto speaks plain HTTP and enforces the TLS-only bucket policy;
            # the default (true) is checked by the structure tests.
            "dst_bucket_require_tls": False,
            # `make tf-plan`/`tf-apply` build it (our code only: moto never runs it).
            "lambda_package_path": str(package),
            "aws_endpoint_overrides": endpoint_overrides(endpoint.endpoint_url),
            "dst_kms_key_arn": dst_key,
            "src_kms_key_arns": [src_key],
            # The operator options, so the apply exercises them too.
            "cors_allowed_origins": ["https://app.example.com"],
            "extra_environment": {"ZIPJOBS_LEASE_SECONDS": "30"},
            "alarm_sns_topic_arn": f"arn:aws:sns:{endpoint.region}:123456789012:zj-{suffix}-ops",
            # The sweeper test waits this long for a lost send to count as lost.
            "resend_after_seconds": 1,
        }
        tf.write_vars(variables)
        # The Makefile's targets, as an operator runs them (README, "Deploying").
        tf.make("tf-init")
        tf.make("tf-plan", BUILD_ARGS=build_args, TF_ARGS="-input=false")
        try:
            tf.make("tf-apply", BUILD_ARGS=build_args, TF_ARGS="-auto-approve -input=false")
            stack = TfStack(tf.outputs(), endpoint, variables, tf.timings)
            yield stack
        finally:
            tf.make("tf-destroy", TF_ARGS="-auto-approve -input=false")
        # The destroy really removed things (moto answers 400 for a missing table).
        tables = emulator_client(endpoint, "dynamodb").list_tables()["TableNames"]
        assert f"zj-{suffix}-jobs" not in tables, "terraform destroy left the jobs table"
        print(f"\nterraform timings (s): {tf.timings}")


@pytest.fixture(scope="session")
def src_bucket(tf_stack: TfStack) -> str:
    """The stack's first source bucket: the user's own; Terraform only grants access to it."""
    tf_stack.client("s3").create_bucket(Bucket=tf_stack.src_bucket)
    return tf_stack.src_bucket


@pytest.fixture(scope="session")
def recorder() -> Recorder:
    """Every AWS call each function made this session (for the IAM == calls test)."""
    return Recorder()


@pytest.fixture(scope="session")
def fns(tf_stack: TfStack, recorder: Recorder) -> Iterator[Functions]:
    """The stack's functions in-process, shared by every module that drives them."""
    functions = Functions(tf_stack, recorder)
    yield functions
    functions.close()
