"""The local AWS endpoint behaves like S3 where the engine depends on it.

If one of these fails, every engine test above it is suspect: the engine
relies on ranged GETs (206 + exact bytes), HEAD sizes and ETags, multipart
uploads with S3's 5 MiB minimum, and SigV4 presigned URLs.
"""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from service.aws import AwsSettings, aws_client
from service.units import MiB
from tests.support.aws_backend import AwsEndpoint
from tests.support.s3_objects import get_bytes

pytestmark = pytest.mark.integration

BODY = bytes(range(256)) * 4096  # 1 MiB, every byte value, position-dependent


def _http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_endpoint_is_local_http(aws_endpoint: AwsEndpoint) -> None:
    url = urllib.parse.urlparse(aws_endpoint.endpoint_url)
    assert url.scheme == "http"
    assert url.hostname in {"127.0.0.1", "localhost"} or aws_endpoint.backend == "localstack-docker"
    assert os.environ["AWS_ENDPOINT_URL"] == aws_endpoint.endpoint_url
    assert os.environ["AWS_ACCESS_KEY_ID"] == aws_endpoint.access_key_id


async def test_ranged_get_returns_206_and_exact_bytes(
    s3: Any, bucket: str, put_objects: Any
) -> None:
    await put_objects({"doc.pdf": BODY})
    resp = await s3.get_object(Bucket=bucket, Key="doc.pdf", Range="bytes=1000-4999")
    async with resp["Body"] as body:
        data = await body.read()
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert resp["ContentRange"] == f"bytes 1000-4999/{len(BODY)}"
    assert data == BODY[1000:5000]


async def test_ranged_get_with_if_match(s3: Any, bucket: str, put_objects: Any) -> None:
    """The engine pins each source's ETag; a changed object must answer 412."""
    await put_objects({"doc.pdf": BODY})
    head = await s3.head_object(Bucket=bucket, Key="doc.pdf")
    ok = await s3.get_object(Bucket=bucket, Key="doc.pdf", Range="bytes=0-9", IfMatch=head["ETag"])
    async with ok["Body"] as body:
        assert await body.read() == BODY[:10]
    await put_objects({"doc.pdf": BODY[::-1]})
    with pytest.raises(ClientError) as err:
        await s3.get_object(Bucket=bucket, Key="doc.pdf", Range="bytes=0-9", IfMatch=head["ETag"])
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


async def test_head_reports_size_and_etag(s3: Any, bucket: str, put_objects: Any) -> None:
    await put_objects({"a/b c.pdf": BODY, "empty.pdf": b""})
    head = await s3.head_object(Bucket=bucket, Key="a/b c.pdf")
    assert head["ContentLength"] == len(BODY)
    assert head["ETag"].startswith('"') and len(head["ETag"]) == 34  # quoted MD5
    empty = await s3.head_object(Bucket=bucket, Key="empty.pdf")
    assert empty["ContentLength"] == 0
    with pytest.raises(ClientError) as err:
        await s3.head_object(Bucket=bucket, Key="absent.pdf")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


async def test_multipart_enforces_5_mib_minimum(s3: Any, bucket: str) -> None:
    """A non-last part under 5 MiB is rejected at Complete, as S3 does (EntityTooSmall)."""
    up = await s3.create_multipart_upload(Bucket=bucket, Key="small.zip")
    parts = []
    for n in (1, 2):
        r = await s3.upload_part(
            Bucket=bucket, Key="small.zip", UploadId=up["UploadId"], PartNumber=n, Body=b"x" * MiB
        )
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    with pytest.raises(ClientError) as err:
        await s3.complete_multipart_upload(
            Bucket=bucket,
            Key="small.zip",
            UploadId=up["UploadId"],
            MultipartUpload={"Parts": parts},
        )
    assert err.value.response["Error"]["Code"] == "EntityTooSmall"
    await s3.abort_multipart_upload(Bucket=bucket, Key="small.zip", UploadId=up["UploadId"])


async def test_multipart_roundtrip_and_listing(s3: Any, bucket: str) -> None:
    first = os.urandom(5 * MiB)
    last = os.urandom(123)  # the last part may be small
    up = await s3.create_multipart_upload(Bucket=bucket, Key="big.zip")
    listed = await s3.list_multipart_uploads(Bucket=bucket)
    assert [(u["Key"], u["UploadId"]) for u in listed.get("Uploads", [])] == [
        ("big.zip", up["UploadId"])
    ]
    parts = []
    for n, body in enumerate((first, last), start=1):
        r = await s3.upload_part(
            Bucket=bucket, Key="big.zip", UploadId=up["UploadId"], PartNumber=n, Body=body
        )
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    done = await s3.complete_multipart_upload(
        Bucket=bucket, Key="big.zip", UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert done["ETag"].endswith('-2"')  # multipart ETags carry the part count
    assert await get_bytes(s3, bucket, "big.zip") == first + last
    listed = await s3.list_multipart_uploads(Bucket=bucket)
    assert listed.get("Uploads", []) == []


async def test_aborted_upload_leaves_nothing(s3: Any, bucket: str) -> None:
    up = await s3.create_multipart_upload(Bucket=bucket, Key="gone.zip")
    await s3.upload_part(
        Bucket=bucket, Key="gone.zip", UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 100
    )
    await s3.abort_multipart_upload(Bucket=bucket, Key="gone.zip", UploadId=up["UploadId"])
    listed = await s3.list_multipart_uploads(Bucket=bucket)
    assert listed.get("Uploads", []) == []
    with pytest.raises(ClientError):
        await s3.head_object(Bucket=bucket, Key="gone.zip")


async def test_presigned_get_is_sigv4_and_works_over_plain_http(
    s3: Any, bucket: str, put_objects: Any, aws_endpoint: AwsEndpoint
) -> None:
    await put_objects({"dir/report 1.pdf": BODY})
    url = await s3.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": bucket,
            "Key": "dir/report 1.pdf",
            "ResponseContentDisposition": 'attachment; filename="report 1.pdf"',
        },
        ExpiresIn=300,
    )
    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["300"]
    assert "Signature" not in query  # no SigV2 fallback
    status, data = await asyncio.to_thread(_http_get, url, {"Range": "bytes=0-99"})
    assert status == 206
    assert data == BODY[:100]
    if aws_endpoint.validates_presigned_urls:
        tampered = url.replace("X-Amz-Expires=300", "X-Amz-Expires=301")
        status, _ = await asyncio.to_thread(_http_get, tampered)
        assert status == 403


async def test_sqs_and_dynamodb_answer(aws_settings: AwsSettings) -> None:
    """On moto the same endpoint; with host-mode LocalStack DynamoDB is moto's, per service."""
    async with aws_client("sqs", aws_settings) as sqs:
        q = await sqs.create_queue(QueueName=f"harness-{os.getpid()}")
        await sqs.send_message(QueueUrl=q["QueueUrl"], MessageBody="hello")
        got = await sqs.receive_message(QueueUrl=q["QueueUrl"], WaitTimeSeconds=1)
        assert [m["Body"] for m in got["Messages"]] == ["hello"]
        await sqs.delete_queue(QueueUrl=q["QueueUrl"])
    async with aws_client("dynamodb", aws_settings) as ddb:
        table = f"harness-{os.getpid()}"
        await ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        await ddb.put_item(
            TableName=table,
            Item={"pk": {"S": "job"}},
            ConditionExpression="attribute_not_exists(pk)",
        )
        with pytest.raises(ClientError) as err:
            await ddb.put_item(
                TableName=table,
                Item={"pk": {"S": "job"}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        assert err.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
        await ddb.delete_table(TableName=table)
