"""Check a presigned S3 URL's SigV4 signature with our own HMAC code, not botocore's.

moto accepts any presigned URL (tampered, expired, wrongly signed), so a test
that downloads through one proves nothing about its signature. This module
recomputes the signature from the URL and the secret key exactly as AWS
documents it, independently of the code that signed it:
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
(canonical request -> string to sign -> HMAC-SHA256 chain of date, region,
service, "aws4_request"). Only GET with ``SignedHeaders=host`` is handled:
what our download URLs are.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    k_date = _hmac(("AWS4" + secret_key).encode("utf-8"), date)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


def _uri_encode(value: str) -> str:
    """RFC 3986: everything but A-Z a-z 0-9 - _ . ~ percent-encoded (also '/')."""
    return quote(value, safe="-_.~")


@dataclass(frozen=True)
class PresignedUrl:
    """What a presigned URL claims: who signed, when, for how long, and the signature."""

    access_key: str
    scope_date: str
    region: str
    service: str
    signed_at: dt.datetime
    expires_in: int
    signed_headers: str
    signature: str

    @property
    def expires_at(self) -> dt.datetime:
        return self.signed_at + dt.timedelta(seconds=self.expires_in)


def parse(url: str) -> PresignedUrl:
    params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise ValueError(f"not a SigV4 presigned URL: {params.get('X-Amz-Algorithm')!r}")
    access_key, date, region, service, terminator = params["X-Amz-Credential"].split("/")
    if terminator != "aws4_request":
        raise ValueError("bad credential scope")
    signed_at = dt.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    return PresignedUrl(
        access_key=access_key,
        scope_date=date,
        region=region,
        service=service,
        signed_at=signed_at,
        expires_in=int(params["X-Amz-Expires"]),
        signed_headers=params["X-Amz-SignedHeaders"],
        signature=params["X-Amz-Signature"],
    )


def expected_signature(url: str, secret_key: str, method: str = "GET") -> str:
    """The signature AWS would compute for ``url`` (its own X-Amz-Signature left out)."""
    parts = urlsplit(url)
    claims = parse(url)
    if claims.signed_headers != "host":
        raise NotImplementedError(f"only SignedHeaders=host, got {claims.signed_headers!r}")
    pairs = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "X-Amz-Signature"
    ]
    canonical_query = "&".join(
        f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted((k, v) for k, v in pairs)
    )
    # The path is sent already URI-encoded once; S3 signs it as sent.
    canonical_request = "\n".join(
        [
            method,
            parts.path or "/",
            canonical_query,
            f"host:{parts.netloc}\n",
            "host",
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = f"{claims.scope_date}/{claims.region}/{claims.service}/aws4_request"
    string_to_sign = "\n".join(
        [
            ALGORITHM,
            claims.signed_at.strftime("%Y%m%dT%H%M%SZ"),
            scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        ]
    )
    key = signing_key(secret_key, claims.scope_date, claims.region, claims.service)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def signature_is_valid(url: str, secret_key: str) -> bool:
    return hmac.compare_digest(expected_signature(url, secret_key), parse(url).signature)
