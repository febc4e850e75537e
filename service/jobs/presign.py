"""Download URLs whose stated expiry is true.

A presigned URL is checked with the signer's credentials when it is used, so
a URL signed with temporary credentials (a Lambda or ECS role, an assumed
role) stops working when those credentials expire, whatever ``ExpiresIn``
asked for. So the URL's lifetime, and the ``expiresAt`` a client sees, is
the earlier of the configured TTL and the credentials' expiry. The URL is
signed afresh at every status read (never stored), so a client that needs a
working link reads the job again. Facts and limits (why no role session can
give a 24-hour link): docs/aws.md, "Download URLs".
"""

from __future__ import annotations

import datetime as dt
import inspect
from typing import TYPE_CHECKING, Any

from ..engine import content_disposition
from .signing_role import RoleSigner

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


def url_lifetime(ttl_seconds: int, now: dt.datetime, credentials_expiry: dt.datetime | None) -> int:
    """Seconds the URL is valid: the TTL, cut at the credentials' expiry (at least 1).

    One second is kept back because the signature is dated when it is made,
    a moment after ``now`` (whole seconds).
    """
    if credentials_expiry is None:
        return ttl_seconds
    left = int((credentials_expiry - now).total_seconds()) - 1
    return max(1, min(ttl_seconds, left))


async def credentials_expiry(s3: S3Client) -> dt.datetime | None:
    """When the credentials this client signs with expire; None = long-term or unknown.

    botocore keeps the expiry of refreshable (temporary) credentials only in
    ``RefreshableCredentials._expiry_time``; there is no public accessor. The
    credentials are refreshed first (``get_frozen_credentials``), as signing
    would, so the expiry read is the one the signature will carry.
    """
    signer = getattr(s3, "_request_signer", None)
    creds: Any = getattr(signer, "_credentials", None)
    if creds is None:
        return None
    freeze = getattr(creds, "get_frozen_credentials", None)
    if freeze is not None:
        frozen = freeze()
        if inspect.isawaitable(frozen):
            await frozen
    expiry = getattr(creds, "_expiry_time", None)
    if not isinstance(expiry, dt.datetime):
        return None
    return expiry if expiry.tzinfo else expiry.replace(tzinfo=dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


async def presign_download(
    s3: S3Client,
    bucket: str,
    key: str,
    filename: str,
    *,
    ttl_seconds: int,
    signer: RoleSigner | None = None,
) -> tuple[str, dt.datetime]:
    """A GET URL for the archive and the moment it really stops working.

    With a ``signer`` (ZIPJOBS_SIGNING_ROLE_ARN) the URL is signed with that
    role's session, whose expiry STS states; else with ``s3``'s credentials.
    """
    params = {
        "Bucket": bucket,
        "Key": key,
        "ResponseContentDisposition": content_disposition(filename),
    }
    if signer is not None:
        session = await signer.session(_now())
        now = _now()  # after a possible AssumeRole: the signature is dated from here
        lifetime = url_lifetime(ttl_seconds, now, session.expires_at)
        url = session.s3.generate_presigned_url("get_object", Params=params, ExpiresIn=lifetime)
    else:
        expiry = await credentials_expiry(s3)
        now = _now()
        lifetime = url_lifetime(ttl_seconds, now, expiry)
        url = await s3.generate_presigned_url("get_object", Params=params, ExpiresIn=lifetime)
    return str(url), now + dt.timedelta(seconds=lifetime)
