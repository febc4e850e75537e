"""Check a presigned S3 URL's SigV4 signature with our own HMAC code, not botocore's.

moto accepts any presigned URL (tampered, expired, wrongly signed), so a test
that downloads through one proves nothing about its signature. This module
recomputes the signature from the URL and the secret key exactly as AWS
documents it, independently of the code that signed it:
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
(canonical request -> string to sign -> HMAC-SHA256 chain of date, region,
service, "aws4_request"). Only GET with ``SignedHeaders=host`` is handled:
what our download URLs are. ``header_signature_problems`` does the same for
header-signed requests (the engine's ranged GETs), from the request as it
arrived at a server; ``check_signed_request`` for requests to other services
(API Gateway's AWS_IAM routes, where each path segment is encoded twice).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

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


# -- header authentication (the engine's ranged GETs) ----------------------------------

_AUTH_HEADER = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class HeaderAuth:
    """What an ``Authorization: AWS4-HMAC-SHA256 ...`` header claims."""

    access_key: str
    scope_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> HeaderAuth:
    match = _AUTH_HEADER.match(value)
    if match is None:
        raise ValueError(f"not a SigV4 Authorization header: {value[:40]!r}...")
    return HeaderAuth(
        access_key=match["key"],
        scope_date=match["day"],
        region=match["region"],
        service=match["service"],
        signed_headers=tuple(match["signed"].split(";")),
        signature=match["sig"],
    )


def expected_header_signature(
    method: str, target: str, headers: dict[str, str], secret_key: str
) -> str:
    """The signature AWS computes for a header-signed S3 request as it arrived.

    ``target`` is the request target as sent (path and query, percent-encoded);
    ``headers`` are the received headers, names in lower case. Follows
    https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html:
    the canonical URI is the decoded path URI-encoded once (each byte but
    A-Z a-z 0-9 - _ . ~ and '/'), so a client that encoded the key any other
    way (a '+' for a space, a literal '~' escaped) fails here too.
    """
    auth = parse_authorization(headers["authorization"])
    # Not urlsplit: a target starting with "//" (a key starting with "/") is a path here.
    path, _, query = target.partition("?")
    canonical_uri = quote(unquote(path or "/"), safe="/-_.~")
    pairs = parse_qsl(query, keep_blank_values=True)
    canonical_query = "&".join(
        f"{k}={v}" for k, v in sorted((_uri_encode(k), _uri_encode(v)) for k, v in pairs)
    )
    canonical_headers = "".join(
        f"{name}:{' '.join(headers[name].split())}\n" for name in auth.signed_headers
    )
    canonical_request = "\n".join(
        [
            method,
            canonical_uri,
            canonical_query,
            canonical_headers,
            ";".join(auth.signed_headers),
            headers["x-amz-content-sha256"],
        ]
    )
    scope = f"{auth.scope_date}/{auth.region}/{auth.service}/aws4_request"
    string_to_sign = "\n".join(
        [
            ALGORITHM,
            headers["x-amz-date"],
            scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        ]
    )
    key = signing_key(secret_key, auth.scope_date, auth.region, auth.service)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def header_signature_problems(
    method: str, target: str, headers: dict[str, str], secret_key: str
) -> list[str]:
    """Why AWS would refuse this header-signed request; empty if it would accept it.

    Besides the signature: the signed-header list must be sorted and cover
    ``host`` and every ``x-amz-*`` header sent, ``x-amz-content-sha256`` must
    be present, and the scope's day must be the day of ``x-amz-date``.
    """
    auth = parse_authorization(headers["authorization"])
    problems = []
    if list(auth.signed_headers) != sorted(auth.signed_headers):
        problems.append("SignedHeaders not sorted")
    must_sign = {"host"} | {h for h in headers if h.startswith("x-amz-")}
    if missing := must_sign - set(auth.signed_headers):
        problems.append(f"not signed: {sorted(missing)}")
    if "x-amz-content-sha256" not in headers:
        problems.append("no x-amz-content-sha256")
    if headers.get("x-amz-date", "")[:8] != auth.scope_date:
        problems.append("scope day is not the day of x-amz-date")
    if not problems and not hmac.compare_digest(
        expected_header_signature(method, target, headers, secret_key), auth.signature
    ):
        problems.append("signature does not match")
    return problems


# -- signed requests to other services (API Gateway's AWS_IAM routes) --------------------
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
    claims: HeaderAuth,
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
            f"{claims.scope_date}/{claims.region}/{claims.service}/aws4_request",
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
) -> HeaderAuth:
    """The request's verified claims; ``SignatureRejected`` saying why when it is not valid.

    ``secret_for`` maps the access keys AWS knows to their secret keys. The
    body's hash is computed here: a signature over another body fails.
    """
    authorization = _header(headers, "authorization")
    if not authorization:
        raise SignatureRejected("Missing Authentication Token")
    try:
        claims = parse_authorization(authorization)
    except ValueError as err:
        raise SignatureRejected(str(err)) from None
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
