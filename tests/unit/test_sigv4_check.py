"""The independent SigV4 checker, against AWS's own worked example and botocore.

https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
("An example"): GET examplebucket/test.txt, 2013-05-24, 86400 s.
"""

from __future__ import annotations

import datetime as dt

import boto3
from botocore.config import Config

from tests.support.sigv4 import parse, signature_is_valid

AWS_EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_EXAMPLE_URL = (
    "https://examplebucket.s3.amazonaws.com/test.txt"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
)


def test_the_documented_example_verifies() -> None:
    assert signature_is_valid(AWS_EXAMPLE_URL, AWS_EXAMPLE_SECRET)
    claims = parse(AWS_EXAMPLE_URL)
    assert claims.expires_at == dt.datetime(2013, 5, 25, tzinfo=dt.UTC)


def test_tampering_or_a_wrong_key_is_caught() -> None:
    assert not signature_is_valid(
        AWS_EXAMPLE_URL.replace("test.txt", "test.tx"), AWS_EXAMPLE_SECRET
    )
    assert not signature_is_valid(AWS_EXAMPLE_URL.replace("86400", "86401"), AWS_EXAMPLE_SECRET)
    assert not signature_is_valid(AWS_EXAMPLE_URL, AWS_EXAMPLE_SECRET[:-1] + "X")


def test_botocore_urls_with_query_and_unicode_verify() -> None:
    s3 = boto3.client(
        "s3",
        region_name="eu-west-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret/with+chars",
        aws_session_token="token/with=chars",
        config=Config(signature_version="s3v4"),
    )
    url = s3.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": "b",
            "Key": "archives/ü ber/a+b.zip",
            "ResponseContentDisposition": "attachment; filename*=UTF-8''%C3%BC.zip",
        },
        ExpiresIn=900,
    )
    assert signature_is_valid(url, "secret/with+chars")
    assert not signature_is_valid(url, "secret/with+chars ")
    assert parse(url).expires_in == 900
