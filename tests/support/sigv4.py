"""Check SigV4 signatures (presigned S3 URLs, signed API requests) with our own HMAC code.

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


# ---- signed requests (the Authorization header), as API Gateway's AWS_IAM checks them ----
#
# https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
# Canonical request = method, canonical URI (each path segment URI-encoded again:
# "twice", except for S3), canonical query, canonical headers (lower-case names,
# trimmed values with inner runs of spaces collapsed, sorted), signed header
# names, hex SHA-256 of the body. The signature covers only the headers listed
# in SignedHeaders, which must include host.

MAX_CLOCK_SKEW = dt.timedelta(minutes=15)  # the request date's allowed distance from AWS's clock


class SignatureRejected(Exception):
    """The request is not validly signed; ``str()`` is what AWS answers, roughly."""


@dataclass(frozen=True)
class AuthorizationHeader:
    """What ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
    Signature=...`` claims."""

    access_key: str
    scope_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.scope_date}/{self.region}/{self.service}/aws4_request"


def parse_authorization(value: str) -> AuthorizationHeader:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureRejected(f"not a SigV4 Authorization header ({algorithm or 'empty'})")
    fields = {}
    for part in rest.split(","):
        name, sep, val = part.strip().partition("=")
        if not sep:
            raise SignatureRejected(f"malformed Authorization component {part.strip()!r}")
        fields[name] = val
    try:
        access_key, date, region, service, terminator = fields["Credential"].split("/")
        signed = tuple(fields["SignedHeaders"].split(";"))
        signature = fields["Signature"]
    except (KeyError, ValueError) as err:
        raise SignatureRejected(f"incomplete Authorization header: {err}") from None
    if terminator != "aws4_request":
        raise SignatureRejected("credential scope does not end in aws4_request")
    return AuthorizationHeader(access_key, date, region, service, signed, signature)


def _canonical_uri(raw_path: str) -> str:
    """The path as sent (encoded once), each segment encoded again (non-S3 services)."""
    return "/".join(_uri_encode(segment) for segment in (raw_path or "/").split("/"))


def _canonical_query(raw_query: str) -> str:
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    return "&".join(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(pairs))


def _canonical_headers(headers: list[tuple[str, str]], names: tuple[str, ...]) -> str:
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(" ".join(value.split()))
    missing = [n for n in names if n not in values]
    if missing:
        raise SignatureRejected(f"signed headers not in the request: {', '.join(missing)}")
    return "".join(f"{n}:{','.join(values[n])}\n" for n in names)


def request_signature(
    claims: AuthorizationHeader,
    secret_key: str,
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> str:
    """The signature AWS computes for this request with ``secret_key`` (hex)."""
    amz_date = _header(headers, "x-amz-date")
    if amz_date is None:
        raise SignatureRejected("no X-Amz-Date header")
    canonical_request = "\n".join(
        [
            method.upper(),
            _canonical_uri(raw_path),
            _canonical_query(raw_query),
            _canonical_headers(headers, claims.signed_headers),
            ";".join(claims.signed_headers),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    string_to_sign = "\n".join(
        [
            ALGORITHM,
            amz_date,
            claims.scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        ]
    )
    key = signing_key(secret_key, claims.scope_date, claims.region, claims.service)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def check_signed_request(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    secret_for: dict[str, str],
    region: str,
    service: str = "execute-api",
    now: dt.datetime | None = None,
) -> AuthorizationHeader:
    """The request's verified claims; ``SignatureRejected`` saying why when it is not valid.

    ``secret_for`` maps the access keys AWS knows to their secret keys. The
    body's hash is computed here: a signature over another body fails.
    """
    authorization = _header(headers, "authorization")
    if not authorization:
        raise SignatureRejected("Missing Authentication Token")
    claims = parse_authorization(authorization)
    if "host" not in claims.signed_headers:
        raise SignatureRejected("the host header is not signed")
    if (claims.region, claims.service) != (region, service):
        raise SignatureRejected(
            f"credential scope {claims.region}/{claims.service}, expected {region}/{service}"
        )
    secret = secret_for.get(claims.access_key)
    if secret is None:
        raise SignatureRejected("The security token included in the request is invalid.")
    amz_date = _header(headers, "x-amz-date") or ""
    try:
        signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise SignatureRejected(f"bad X-Amz-Date {amz_date!r}") from None
    if amz_date[:8] != claims.scope_date:
        raise SignatureRejected("X-Amz-Date and the credential scope name different days")
    if now is not None and abs(now - signed_at) > MAX_CLOCK_SKEW:
        raise SignatureRejected(f"Signature expired: {amz_date} is more than 15 minutes away")
    expected = request_signature(
        claims,
        secret,
        method=method,
        raw_path=raw_path,
        raw_query=raw_query,
        headers=headers,
        body=body,
    )
    if not hmac.compare_digest(expected, claims.signature):
        raise SignatureRejected(
            "The request signature we calculated does not match the signature you provided."
        )
    return claims
