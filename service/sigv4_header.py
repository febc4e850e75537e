"""SigV4 header authentication for the engine's ranged GETs: pure, no I/O.

Why our own signer rather than botocore's ``S3SigV4Auth``: it is called
once per ranged GET, and on many small objects the engine is CPU-bound on
per-request work (docs/performance.md, "Where the CPU goes"). botocore's
signer builds an ``AWSRequest``, re-parses the URL, re-derives the signing
key (four HMACs) and copies the headers twice for every request: about
105 us per ranged GET on the benchmark machine. This one takes the
already-encoded path, keeps the signing key per (secret, day, region,
service) and formats one canonical request: about 14 us
(docs/performance.md, "Where the CPU goes"). A test checks that it gives the
same Authorization header as botocore's signer for the same request and
time, and an independent verifier checks it again (tests/support/sigv4.py).

The rules encoded here are AWS's:
https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
(canonical request, string to sign, derived key, signature) and, for S3,
https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html
(the path is signed as sent, not normalised or encoded twice;
``x-amz-content-sha256`` is required and may be ``UNSIGNED-PAYLOAD``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_KEYS_KEPT = 16  # (secret, day, region, service) combinations; a day has few


# The last stamp made, by whole second: thousands of GETs a second share one,
# and formatting it (``strftime``) was about 1% of a small-object run's CPU.
_last_stamp: tuple[int, str] = (-1, "")


def amz_date(now: float | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ`` in UTC, the form ``x-amz-date`` takes."""
    global _last_stamp
    second = int(time.time() if now is None else now)
    seen, stamp = _last_stamp  # one tuple: a stamp always matches its second
    if seen != second:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        _last_stamp = (second, stamp)
    return stamp


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


class HeaderSigner:
    """Signs requests for one (region, service), keeping derived keys between them."""

    __slots__ = ("_keys", "region", "service")

    def __init__(self, region: str, service: str = "s3") -> None:
        self.region = region
        self.service = service
        self._keys: dict[tuple[str, str], bytes] = {}

    def signing_key(self, secret_key: str, day: str) -> bytes:
        """kSigning = HMAC chain of the day, region, service and ``aws4_request``."""
        cache_key = (secret_key, day)
        key = self._keys.get(cache_key)
        if key is None:
            k_date = _hmac(("AWS4" + secret_key).encode("utf-8"), day)
            key = _hmac(_hmac(_hmac(k_date, self.region), self.service), "aws4_request")
            if len(self._keys) >= _KEYS_KEPT:
                self._keys.clear()
            self._keys[cache_key] = key
        return key

    def authorization(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        access_key: str,
        secret_key: str,
    ) -> str:
        """The ``Authorization`` value for a request with exactly these signed ``headers``.

        ``headers`` are lower-case names, including ``host``, ``x-amz-date``
        and ``x-amz-content-sha256`` (whose value is the payload hash that is
        signed); every one given is signed. ``path`` is the path as sent (S3
        signs it as is); ``query`` is already canonical (sorted, encoded).
        """
        names = sorted(headers)
        canonical_headers = "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names)
        signed = ";".join(names)
        canonical_request = (
            f"{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n"
            f"{headers['x-amz-content-sha256']}"
        )
        stamp = headers["x-amz-date"]
        day = stamp[:8]
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        string_to_sign = (
            f"{ALGORITHM}\n{stamp}\n{scope}\n"
            f"{hashlib.sha256(canonical_request.encode('utf-8')).hexdigest()}"
        )
        signature = hmac.new(
            self.signing_key(secret_key, day), string_to_sign.encode("utf-8"), hashlib.sha256
        ).hexdigest()
        return (
            f"{ALGORITHM} Credential={access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
