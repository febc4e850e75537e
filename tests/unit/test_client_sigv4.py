"""The client's SigV4 headers, checked by recomputing the signature independently.

The check (``tests/support/sigv4.py``, verified on AWS's worked example in
``test_sigv4_request_check.py``) follows AWS's documented algorithm step by
step (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html):
canonical request, string to sign, derived signing key, HMAC-SHA256. It uses
only hashlib/hmac, never botocore, so a signer that signs the wrong thing
(wrong service, region, payload or headers) fails here.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.credentials import ReadOnlyCredentials

from service.client.auth import (
    AuthError,
    BearerAuth,
    SigV4,
    region_from_url,
    sigv4_from_chain,
)
from tests.support.sigv4 import SignatureRejected, check_signed_request

URL = "https://abc123defg.execute-api.eu-west-1.amazonaws.com/zip-jobs"
KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
BODY = b'{"prefix": "docs/"}'
AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<scope>[^,]+), "
    r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<sig>[0-9a-f]{64})$"
)


def check(headers: dict[str, str], **change: Any) -> None:
    """Verify as API Gateway would, with ``change`` applied to the request or the key."""
    request: dict[str, Any] = {
        "method": "POST",
        "raw_path": urlsplit(URL).path,
        "raw_query": "",
        "headers": [*headers.items(), ("host", urlsplit(URL).netloc)],
        "body": BODY,
        "secret_for": {KEY_ID: SECRET},
        "region": "eu-west-1",
        "service": "execute-api",
        "now": dt.datetime.now(dt.UTC),
    }
    check_signed_request(**{**request, **change})


def _signed(token: str | None = None, body: bytes = BODY) -> dict[str, str]:
    signer = SigV4(ReadOnlyCredentials(KEY_ID, SECRET, token), "eu-west-1")
    return signer.headers("POST", URL, body, {"Content-Type": "application/json"})


def _parts(headers: dict[str, str]) -> re.Match[str]:
    match = AUTH_RE.match(headers["Authorization"])
    assert match, headers["Authorization"]
    return match


def test_signature_matches_the_documented_algorithm() -> None:
    headers = _signed()
    auth = _parts(headers)
    # What must be covered for API Gateway to bind the signature to this request.
    assert {"host", "x-amz-date", "content-type"} <= set(auth["signed"].split(";"))
    amz_date = headers["X-Amz-Date"]
    assert auth["key"] == KEY_ID
    assert auth["scope"] == f"{amz_date[:8]}/eu-west-1/execute-api/aws4_request"
    check(headers)


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"prefix": "other/"}'},
        {"region": "us-east-1"},
        {"service": "s3"},
        {"secret_for": {KEY_ID: SECRET[:-1] + "Z"}},
        {"now": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=16)},
    ],
)
def test_the_independent_check_rejects_a_signature_for_anything_else(
    change: dict[str, Any],
) -> None:
    """The recomputation is sensitive: the same signature does not fit another request."""
    with pytest.raises(SignatureRejected):
        check(_signed(), **change)


def test_temporary_credentials_send_and_sign_their_session_token() -> None:
    headers = _signed(token="FQoGZXIvYXdzEXAMPLETOKEN")
    assert headers["X-Amz-Security-Token"] == "FQoGZXIvYXdzEXAMPLETOKEN"
    assert "x-amz-security-token" in _parts(headers)["signed"].split(";")
    check(headers)


def test_credentials_and_region_come_from_the_normal_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "tok")
    signer = sigv4_from_chain(URL)
    assert signer.region == "eu-west-1" and signer.service == "execute-api"
    assert (signer.credentials.access_key, signer.credentials.token) == (KEY_ID, "tok")
    # A custom domain does not name a region: the flag, then the config decide.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert sigv4_from_chain("https://zip.example.com/zip-jobs").region == "ap-south-1"
    assert sigv4_from_chain("https://zip.example.com/", region="us-west-2").region == "us-west-2"


def test_no_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(AuthError, match="no AWS credentials"):
        sigv4_from_chain(URL)


def test_region_from_url_and_bearer() -> None:
    assert region_from_url(URL) == "eu-west-1"
    assert region_from_url("https://zip.example.com/") is None
    bearer = BearerAuth("s3cr3t")
    assert bearer.headers("GET", URL, b"", {}) == {"Authorization": "Bearer s3cr3t"}
    assert "s3cr3t" not in repr(bearer)
