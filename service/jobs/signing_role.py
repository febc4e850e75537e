"""Sign download URLs with a dedicated role's session, whose expiry is known.

In Lambda the function's own credentials come without an expiry (the runtime
passes them as environment variables), so a URL signed with them may stop
working before the ``expiresAt`` we state. With ``ZIPJOBS_SIGNING_ROLE_ARN``
the status function assumes that role (STS returns ``Expiration``) and signs
with the session, so ``expiresAt`` is exact. The session is kept and renewed
once less than half the TTL is left, so a URL is valid for at least half the
TTL and an STS call is made about twice per session, not per request.

A role session lasts at most 12 hours, and 1 hour when assumed from another
role's credentials (role chaining, as from a Lambda): this makes URL
lifetimes honest, it cannot make them longer. docs/aws.md, "Download URLs".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import botocore.session

from ..aws import INTERACTIVE, aws_client, client_config
from ..settings import Settings


@dataclass(frozen=True, slots=True)
class Session:
    """One assumed-role session: a presigning S3 client and when it stops working."""

    s3: Any  # a botocore S3 client; presigning needs no I/O, so no async client
    expires_at: dt.datetime


def needs_renewal(session: Session | None, now: dt.datetime, ttl_seconds: int) -> bool:
    """Renew when less than half the TTL is left (a URL then lasts >= TTL / 2)."""
    if session is None:
        return True
    return (session.expires_at - now).total_seconds() < ttl_seconds / 2


class RoleSigner:
    """Assumes ``settings.signing_role_arn`` when needed; one per process."""

    def __init__(self, settings: Settings) -> None:
        if not settings.signing_role_arn:
            raise ValueError("RoleSigner needs ZIPJOBS_SIGNING_ROLE_ARN")
        self._settings = settings
        self._role_arn = settings.signing_role_arn
        self._session: Session | None = None
        self._lock = asyncio.Lock()

    async def session(self, now: dt.datetime) -> Session:
        async with self._lock:
            if needs_renewal(self._session, now, self._settings.presign_ttl_seconds):
                self._session = await self._assume()
            assert self._session is not None
            return self._session

    async def _assume(self) -> Session:
        settings = self._settings
        async with aws_client("sts", settings.aws, limits=INTERACTIVE) as sts:
            resp = await sts.assume_role(
                RoleArn=self._role_arn,
                RoleSessionName=f"zipjobs-sign-{uuid.uuid4().hex[:12]}",
                DurationSeconds=settings.signing_session_seconds,
            )
        creds = resp["Credentials"]
        s3 = botocore.session.get_session().create_client(
            "s3",
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            config=client_config(path_style=settings.endpoint_url is not None),
        )
        expiration = creds["Expiration"]
        if not isinstance(expiration, dt.datetime):
            expiration = dt.datetime.fromisoformat(str(expiration))
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=dt.UTC)
        return Session(s3=s3, expires_at=expiration)
