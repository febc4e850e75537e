"""Our SigV4 header signer (service/sigv4_header.py) against AWS's example, botocore and an
independent verifier; and how the fast GET path reads botocore's endpoint decision.

The signer is ours for speed (per-request CPU); these tests are what make it
safe: the known answer from AWS's documentation, the very same Authorization
header as botocore's ``S3SigV4Auth`` for the same request and time, and the
independent recomputation in tests/support/sigv4.py.
"""

from __future__ import annotations

import calendar
import datetime as dt
import socket
import ssl
import time
from typing import Any
from unittest import mock
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
    SSLError,
)
from hypothesis import given
from hypothesis import strategies as st

from service.aws import client_config
from service.http1_get import (
    BodyCut,
    ClosedBeforeAnswer,
    ConnectTimeout,
    MalformedAnswer,
    ReadTimeout,
)
from service.s3_ranged_get import PROBE_KEY, botocore_error, host_header, target_from_request
from service.sigv4_header import UNSIGNED_PAYLOAD, HeaderSigner, amz_date
from tests.support.sigv4 import header_signature_problems

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHEN = dt.datetime(2026, 11, 30, 23, 59, 58, tzinfo=dt.UTC)
STAMP = amz_date(calendar.timegm(WHEN.timetuple()))


def test_the_documented_get_object_example() -> None:
    """https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html,
    "Example: GET Object": bytes 0-9 of examplebucket/test.txt on 2013-05-24."""
    headers = {
        "host": "examplebucket.s3.amazonaws.com",
        "range": "bytes=0-9",
        "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "x-amz-date": "20130524T000000Z",
    }
    auth = HeaderSigner("us-east-1").authorization("GET", "/test.txt", "", headers, AKID, SECRET)
    assert auth == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert (
        header_signature_problems("GET", "/test.txt", {**headers, "authorization": auth}, SECRET)
        == []
    )


def ours(url: str, region: str, token: str | None, extra: dict[str, str]) -> dict[str, str]:
    parts = urlsplit(url)
    signed = {
        "host": host_header(url),
        **extra,
        "x-amz-content-sha256": UNSIGNED_PAYLOAD,
        "x-amz-date": STAMP,
    }
    if token:
        signed["x-amz-security-token"] = token
    signed["authorization"] = HeaderSigner(region).authorization(
        "GET", parts.path, "", signed, AKID, SECRET
    )
    return signed


def botocores(url: str, region: str, token: str | None, extra: dict[str, str]) -> dict[str, str]:
    """botocore's S3 signer on the same request at the same time, payload unsigned."""
    request = AWSRequest(method="GET", url=url, headers={k.title(): v for k, v in extra.items()})
    request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN.replace(tzinfo=None)):
        S3SigV4Auth(Credentials(AKID, SECRET, token), "s3", region).add_auth(request)
    return {k.lower(): str(v) for k, v in request.headers.items()}


KEYS = [
    "plain.pdf",
    "dir/sub dir/file name (1).pdf",
    "ünïcødé/日本語.txt",
    "a+b=c&d?e#f%g~h!i'j*k.bin",
    "  leading and trailing  ",
    "//double//slashes/./and/../dots",
]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(
    ("origin", "prefix", "region"),
    [
        ("http://127.0.0.1:5000", "/bucket/", "us-east-1"),
        ("https://bucket.s3.eu-west-1.amazonaws.com", "/", "eu-west-1"),
        ("https://s3.ap-southeast-2.amazonaws.com:443", "/my.dotted.bucket/", "ap-southeast-2"),
    ],
)
@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEXAMPLE//token+/="])
def test_same_authorization_as_botocore(
    key: str, origin: str, prefix: str, region: str, token: str | None
) -> None:
    url = origin + prefix + quote(key, safe="/~")
    extra = {"range": "bytes=1048576-2097151", "if-match": '"9b2cf535f27731c974343645a3985328"'}
    mine, theirs = ours(url, region, token, extra), botocores(url, region, token, extra)
    assert mine["authorization"] == theirs["authorization"]
    assert {k: mine[k] for k in theirs} == theirs  # the same headers, the same values
    target = urlsplit(url).path
    assert header_signature_problems("GET", target, mine, SECRET) == []


@given(key=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40))
def test_any_key_signs_as_botocore_signs_it(key: str) -> None:
    url = "https://bucket.s3.us-west-2.amazonaws.com/" + quote(key, safe="/~")
    extra = {"range": "bytes=0-0", "if-match": '"e"'}
    mine = ours(url, "us-west-2", None, extra)
    assert mine["authorization"] == botocores(url, "us-west-2", None, extra)["authorization"]
    assert header_signature_problems("GET", urlsplit(url).path, mine, SECRET) == []


def test_the_verifier_catches_what_aws_would_refuse() -> None:
    """Each of these is a request S3 refuses; the verifier must say so (it can fail)."""
    url = "http://127.0.0.1:5000/bucket/a%20b.pdf"
    good = ours(url, "us-east-1", "tok", {"range": "bytes=0-9", "if-match": '"e"'})
    path = urlsplit(url).path
    assert header_signature_problems("GET", path, good, SECRET) == []
    assert header_signature_problems("GET", path, good, SECRET[:-1] + "X")
    assert header_signature_problems("GET", path, {**good, "range": "bytes=0-10"}, SECRET)
    assert header_signature_problems("GET", "/bucket/a+b.pdf", good, SECRET)
    assert header_signature_problems("HEAD", path, good, SECRET)
    unsigned_extra = {**good, "x-amz-request-payer": "requester"}
    assert any(
        "not signed" in p for p in header_signature_problems("GET", path, unsigned_extra, SECRET)
    )


def test_signing_key_is_per_day_and_scope() -> None:
    signer = HeaderSigner("eu-west-1")
    k1 = signer.signing_key(SECRET, "20261130")
    assert signer.signing_key(SECRET, "20261130") is k1  # kept
    assert signer.signing_key(SECRET, "20261201") != k1  # midnight: a new key
    assert signer.signing_key(SECRET + "x", "20261130") != k1  # rotated secret
    assert HeaderSigner("eu-west-2").signing_key(SECRET, "20261130") != k1


# -- where botocore sends a bucket's GETs -------------------------------------------------


class _Stop(Exception):
    pass


def prepared(
    bucket: str, config: Config | None = None, **client_kwargs: Any
) -> tuple[str, dict[str, str]]:
    """The GetObject of PROBE_KEY that botocore would send (URL, headers); nothing is sent."""
    s3 = boto3.client(
        "s3",
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
        config=config or client_config(),
        **client_kwargs,
    )
    seen: dict[str, Any] = {}

    def capture(request: Any, **_: Any) -> None:
        seen["url"], seen["headers"] = request.url, dict(request.headers)
        raise _Stop

    s3.meta.events.register_first("before-send.s3.GetObject", capture)
    with pytest.raises(_Stop):
        s3.get_object(Bucket=bucket, Key=PROBE_KEY)
    return seen["url"], seen["headers"]


def test_path_style_custom_endpoint() -> None:
    url, headers = prepared(
        "src",
        endpoint_url="http://127.0.0.1:5123",
        region_name="us-east-1",
        config=client_config(path_style=True),
    )
    target = target_from_request(url, headers)
    assert target is not None
    assert (target.origin, target.path_prefix, target.host) == (
        "http://127.0.0.1:5123",
        "/src/",
        "127.0.0.1:5123",
    )
    assert (target.signer.region, target.signer.service) == ("us-east-1", "s3")


def test_virtual_hosted_on_aws_and_dotted_buckets_path_style() -> None:
    target = target_from_request(*prepared("my-bucket", region_name="eu-west-1"))
    assert target is not None
    assert (target.origin, target.path_prefix, target.host, target.signer.region) == (
        "https://my-bucket.s3.eu-west-1.amazonaws.com",
        "/",
        "my-bucket.s3.eu-west-1.amazonaws.com",
        "eu-west-1",
    )
    dotted = target_from_request(*prepared("my.bucket", region_name="eu-west-1"))
    assert dotted is not None
    assert (dotted.origin, dotted.path_prefix) == (
        "https://s3.eu-west-1.amazonaws.com",
        "/my.bucket/",
    )


def test_requests_the_fast_path_does_not_reproduce_go_to_botocore() -> None:
    url, headers = prepared("b", region_name="eu-west-1")
    assert target_from_request(url, headers) is not None
    sigv4a = {
        **headers,
        "Authorization": "AWS4-ECDSA-P256-SHA256 Credential=A/20261130/s3/aws4_request",
    }
    assert target_from_request(url, sigv4a) is None
    assert target_from_request(url, {**headers, "x-amz-checksum-mode": "ENABLED"}) is None
    assert target_from_request(url, {**headers, "x-amz-expected-bucket-owner": "1"}) is None
    assert target_from_request(url + "&versionId=3", headers) is None
    assert target_from_request(url.replace("probe/", "probe/x/"), headers) is None
    # What botocore itself prepares when a checksum is to be validated:
    checked = Config(signature_version="s3v4", response_checksum_validation="when_supported")
    assert target_from_request(*prepared("b", checked, region_name="eu-west-1")) is None


def test_host_header_as_sigv4_signs_it() -> None:
    assert host_header("https://Bucket.S3.amazonaws.com:443/k") == "bucket.s3.amazonaws.com"
    assert host_header("http://127.0.0.1:80/k") == "127.0.0.1"
    assert host_header("http://127.0.0.1:8080/k") == "127.0.0.1:8080"
    assert host_header("http://[::1]:9000/k") == "[::1]:9000"


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (ClosedBeforeAnswer("closed"), ConnectionClosedError),
        (BodyCut("cut"), ConnectionClosedError),
        (MalformedAnswer("garbage"), ConnectionClosedError),
        (ConnectTimeout("connect"), ConnectTimeoutError),
        (ReadTimeout("read"), ReadTimeoutError),
        (TimeoutError(), ReadTimeoutError),
        (ConnectionRefusedError("refused"), EndpointConnectionError),
        (socket.gaierror("no such host"), EndpointConnectionError),
        (ssl.SSLCertVerificationError("bad cert"), SSLError),
        (ValueError("odd"), HTTPClientError),
    ],
)
def test_transport_errors_become_the_botocore_errors_aiobotocore_raises(
    err: BaseException, expected: type[Exception]
) -> None:
    assert type(botocore_error(err, "http://x/b/k")) is expected


def test_amz_date_is_the_utc_second_whatever_order_the_times_come_in() -> None:
    """The stamp is cached per second: crossing a second (forwards or back) must
    give that second's stamp, never the one before."""
    base = calendar.timegm(WHEN.timetuple())
    for now in (base, base + 0.999, base + 1, base + 1.5, base - 1, base + 86_400, base):
        assert amz_date(now) == time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(now)))
