"""An embedded local AWS: a moto server on 127.0.0.1 and the resources the service uses.

``provision`` creates what Terraform creates in AWS (buckets, a table with a
TTL attribute, a queue with a dead-letter queue), against any endpoint: the
embedded moto server here, or the test suite's fixture endpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from ..aws import AwsSettings, aws_client
from ..jobs.codec import HASH_KEY, TTL_ATTRIBUTE
from ..settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sqs import SQSClient


log = logging.getLogger(__name__)

# moto accepts any credentials, LocalStack checks presigned URLs against the
# secret "test"; never real ones.
FAKE_KEY = "test"
REGION = "us-east-1"


def local_aws(endpoint_url: str, region: str = REGION) -> AwsSettings:
    return AwsSettings(
        region=region,
        endpoint_url=endpoint_url,
        access_key_id=FAKE_KEY,
        secret_access_key=FAKE_KEY,
    )


@dataclass(frozen=True, slots=True)
class StackNames:
    """Resource names; tests pass a unique ``suffix`` so runs never share state."""

    suffix: str = "local"
    max_receives: int = 3
    visibility_seconds: int = 30

    @property
    def src_bucket(self) -> str:
        return f"zipjobs-src-{self.suffix}"

    @property
    def dst_bucket(self) -> str:
        return f"zipjobs-dst-{self.suffix}"

    @property
    def table(self) -> str:
        return f"zipjobs-jobs-{self.suffix}"

    @property
    def queue(self) -> str:
        return f"zipjobs-jobs-{self.suffix}"

    @property
    def dlq(self) -> str:
        return f"zipjobs-jobs-dlq-{self.suffix}"


@dataclass(frozen=True, slots=True)
class Provisioned:
    names: StackNames
    endpoint_url: str
    queue_url: str
    dlq_url: str
    # e.g. (("dynamodb", url),) when DynamoDB lives on another endpoint
    service_endpoints: tuple[tuple[str, str], ...] = ()

    def env(self, **overrides: str) -> dict[str, str]:
        """The ZIPJOBS_* environment a service process needs for this stack."""
        env = {
            **{f"AWS_ENDPOINT_URL_{svc.upper()}": url for svc, url in self.service_endpoints},
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": FAKE_KEY,
            "AWS_SECRET_ACCESS_KEY": FAKE_KEY,
            "ZIPJOBS_TABLE": self.names.table,
            "ZIPJOBS_QUEUE_URL": self.queue_url,
            "ZIPJOBS_SRC_BUCKETS": self.names.src_bucket,
            "ZIPJOBS_DST_BUCKET": self.names.dst_bucket,
            "ZIPJOBS_DST_PREFIX": "archives/",
            "ZIPJOBS_MANIFEST_PREFIX": "manifests/",
        }
        env.update(overrides)
        return env

    def settings(self, **overrides: str) -> Settings:
        """Settings read through the same env path a deployment uses."""
        env = self.env(**overrides)
        settings = Settings.from_env(env)
        return dataclasses.replace(settings, access_key_id=FAKE_KEY, secret_access_key=FAKE_KEY)


async def _create_bucket(s3: S3Client, bucket: str) -> None:
    try:
        await s3.create_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


async def _create_table(db: DynamoDBClient, table: str) -> None:
    try:
        await db.create_table(
            TableName=table,
            AttributeDefinitions=[{"AttributeName": HASH_KEY, "AttributeType": "S"}],
            KeySchema=[{"AttributeName": HASH_KEY, "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as err:
        if err.response["Error"]["Code"] != "ResourceInUseException":
            raise
        return
    waiter = db.get_waiter("table_exists")
    await waiter.wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    await db.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )


async def _create_queues(sqs: SQSClient, names: StackNames) -> tuple[str, str]:
    dlq_url = (await sqs.create_queue(QueueName=names.dlq))["QueueUrl"]
    attrs = await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    policy = {
        "deadLetterTargetArn": attrs["Attributes"]["QueueArn"],
        "maxReceiveCount": str(names.max_receives),
    }
    queue_url = (
        await sqs.create_queue(
            QueueName=names.queue,
            Attributes={
                "VisibilityTimeout": str(names.visibility_seconds),
                "RedrivePolicy": json.dumps(policy),
            },
        )
    )["QueueUrl"]
    return queue_url, dlq_url


async def provision(endpoint: str | AwsSettings, names: StackNames | None = None) -> Provisioned:
    """Create the buckets, the job table and the queues (idempotent).

    ``endpoint`` is one URL for every service, or settings that may send a
    service elsewhere (``service_endpoints``).
    """
    names = names or StackNames()
    aws = local_aws(endpoint) if isinstance(endpoint, str) else endpoint
    endpoint_url = aws.endpoint_url or ""
    async with aws_client("s3", aws) as s3:
        for bucket in (names.src_bucket, names.dst_bucket):
            await _create_bucket(s3, bucket)
    async with aws_client("dynamodb", aws) as db:
        await _create_table(db, names.table)
    async with aws_client("sqs", aws) as sqs:
        queue_url, dlq_url = await _create_queues(sqs, names)
    return Provisioned(names, endpoint_url, queue_url, dlq_url, aws.service_endpoints)


class EmbeddedAws:
    """A moto server in a thread of this process, on 127.0.0.1 and a free port."""

    def __init__(self, port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        from .moto_atomic import serialize_dynamodb_writes

        serialize_dynamodb_writes()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint_url = ""

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self.endpoint_url

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> EmbeddedAws:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe(
    stack: Provisioned, api_url: str | None, extra: Mapping[str, str] | None = None
) -> str:
    """The lines ``zipjobs dev``/``demo`` print so a person knows where everything is."""
    lines = [
        f"local AWS (moto)  {stack.endpoint_url}",
        f"source bucket     s3://{stack.names.src_bucket}",
        f"archive bucket    s3://{stack.names.dst_bucket}/archives/",
        f"job table         {stack.names.table}",
        f"job queue         {stack.queue_url}",
        f"dead-letter queue {stack.dlq_url}",
    ]
    if api_url:
        lines.insert(0, f"API               {api_url}   (OpenAPI: {api_url}/openapi.json)")
    for k, v in (extra or {}).items():
        lines.append(f"{k:<17} {v}")
    return "\n".join(lines)
