"""The independent check of signed requests (Authorization header), as AWS_IAM routes do it.

AWS's worked example: https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
(GET iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08, 2015-08-30T12:36:00Z,
secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY), then requests botocore signs
the way ``zipjobs submit`` does (service/client/auth.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.sigv4 import SignatureRejected, check_signed_request

EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
EXAMPLE_HEADERS = [
    ("Host", "iam.amazonaws.com"),
    ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
    ("X-Amz-Date", "20150830T123600Z"),
    (
        "Authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
    ),
]


def _example(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "method": "GET",
        "raw_path": "/",
        "raw_query": "Action=ListUsers&Version=2010-05-08",
        "headers": EXAMPLE_HEADERS,
        "body": b"",
        "secret_for": {"AKIDEXAMPLE": EXAMPLE_SECRET},
        "region": "us-east-1",
        "service": "iam",
    }
    return {**request, **changes}


def test_the_documented_example_verifies() -> None:
    claims = check_signed_request(**_example())
    assert claims.access_key == "AKIDEXAMPLE"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"raw_query": "Action=ListUsers&Version=2010-05-09"}, "does not match"),
        ({"method": "POST"}, "does not match"),
        ({"body": b"x"}, "does not match"),
        ({"secret_for": {"AKIDEXAMPLE": EXAMPLE_SECRET[:-1] + "X"}}, "does not match"),
        ({"secret_for": {}}, "security token"),
        ({"region": "eu-west-1"}, "credential scope"),
        ({"headers": EXAMPLE_HEADERS[:3]}, "Missing Authentication Token"),
        ({"headers": [("Host", "other.example.com"), *EXAMPLE_HEADERS[1:]]}, "does not match"),
        ({"now": dt.datetime(2015, 8, 30, 12, 52, tzinfo=dt.UTC)}, "expired"),
    ],
)
def test_a_changed_request_or_wrong_key_is_refused(change: dict[str, Any], why: str) -> None:
    with pytest.raises(SignatureRejected, match=why):
        check_signed_request(**_example(**change))


def _botocore_signed(body: bytes, url: str) -> tuple[list[tuple[str, str]], str, str]:
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": "x/y", "X-Note": " runs   of  spaces "},
    )
    SigV4Auth(Credentials("AKIDCLIENT", "s3cret/+key"), "execute-api", "eu-west-1").add_auth(
        request
    )
    headers = [("Host", "127.0.0.1:8080"), *((k, str(v)) for k, v in request.headers.items())]
    path, _, query = url.split("127.0.0.1:8080", 1)[1].partition("?")
    return headers, path, query


def test_requests_botocore_signs_for_execute_api_verify() -> None:
    body = b'{"keys": ["a b/\xc3\xbc.pdf"]}'
    headers, path, query = _botocore_signed(body, "http://127.0.0.1:8080/zip-jobs?x=1&a=b%20c")
    request = {
        "method": "POST",
        "raw_path": path,
        "raw_query": query,
        "headers": headers,
        "body": body,
        "secret_for": {"AKIDCLIENT": "s3cret/+key"},
        "region": "eu-west-1",
        "now": dt.datetime.now(dt.UTC),
    }
    assert check_signed_request(**request).access_key == "AKIDCLIENT"
    with pytest.raises(SignatureRejected):
        check_signed_request(**{**request, "body": body + b" "})
    with pytest.raises(SignatureRejected):
        check_signed_request(**{**request, "raw_path": "/zip-jobs/"})
