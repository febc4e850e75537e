"""How a client proves who it is to the deployed API: SigV4, a bearer token, or nothing.

The stack's default authorizer is IAM (API Gateway checks a SigV4 signature
for the service ``execute-api``); a JWT authorizer or ``zipjobs dev``/``serve``
with ``ZIPJOBS_API_TOKEN`` take ``Authorization: Bearer <token>``. Signing is
botocore's own ``SigV4Auth`` with credentials from the normal chain
(environment, profile, SSO, instance/role), so nothing here re-implements
the algorithm (docs/packaging.md, "Client").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.session import Session

EXECUTE_API = "execute-api"
# https://{api-id}.execute-api.{region}.amazonaws.com
_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


class AuthError(Exception):
    """No credentials or region to sign with: a configuration problem, not retried."""


class Auth(Protocol):
    def headers(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> dict[str, str]:
        """The headers to send, including the ones given (which may be signed)."""
        ...


@dataclass(frozen=True)
class NoAuth:
    def headers(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> dict[str, str]:
        return dict(headers)


@dataclass(frozen=True)
class BearerAuth:
    """A JWT or an API token; both travel as ``Authorization: Bearer``."""

    token: str

    def __repr__(self) -> str:  # never print the token
        return "BearerAuth(token=***)"

    def headers(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> dict[str, str]:
        return {**headers, "Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class SigV4:
    """Signs each request for ``execute-api`` in ``region`` with botocore's signer."""

    credentials: Credentials | ReadOnlyCredentials
    region: str
    service: str = EXECUTE_API

    def headers(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        SigV4Auth(self.credentials, self.service, self.region).add_auth(request)
        return {k: str(v) for k, v in request.headers.items()}


def region_from_url(url: str) -> str | None:
    """The region in an ``execute-api`` default endpoint's host name, if it is one."""
    match = _API_HOST.match(urlsplit(url).hostname or "")
    return match.group(1) if match else None


def sigv4_from_chain(url: str, region: str | None = None, profile: str | None = None) -> SigV4:
    """SigV4 with the normal credential chain; the region from the flag, the URL or the config."""
    session = Session(profile=profile)
    credentials = session.get_credentials()
    if credentials is None:
        raise AuthError(
            "no AWS credentials found (environment, ~/.aws, SSO or role); "
            "run `aws configure`/`aws sso login`, or use --token for a bearer token"
        )
    region = region or region_from_url(url) or session.get_config_variable("region")
    if not region:
        raise AuthError("no region: pass --region (a custom domain does not name it)")
    return SigV4(credentials.get_frozen_credentials(), region)
