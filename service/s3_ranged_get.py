"""The engine's ranged GETs: a fast signed-GET path, or botocore's get_object.

Why a second path at all: on many small objects the engine is CPU-bound and
about half of its CPU went to botocore's per-request machinery for GetObject
(parameter validation, serialisation, endpoint rules, a dozen event hooks,
signing through an ``AWSRequest``, user agent, response parsing), where a
ranged GET needs one signed request and three response headers
(docs/performance.md, "Where the CPU goes"). The fast path sends exactly that
request, on keep-alive connections of its own (``service/http1_get.py``, which
reads each body straight into the reader's buffer), and gives the reader
answers it cannot tell from botocore's:

- **the same request**: the endpoint URL, addressing style, key encoding,
  signing region and service come from botocore itself, once per bucket (a
  GetObject that botocore prepares and signs and that is stopped before it
  is sent), so custom endpoints, path vs virtual-hosted style and regions
  stay botocore's decision; SigV4 header auth with ``UNSIGNED-PAYLOAD`` (a GET has
  no body), Range, If-Match and ``x-amz-security-token`` signed
  (``service/sigv4_header.py``); credentials from the client's own provider,
  frozen per request as botocore's signer does, so refreshable credentials
  refresh as they would;
- **the same connection settings**: the TLS context of the client's own
  aiohttp connector (its CA bundle, or its ``verify=False``), its
  ``max_pool_connections``, connect and read timeouts; a pool of its own,
  because aiohttp's per-request work and body copies were what it cost;
- **the same errors**: a non-2xx answer is parsed by botocore's REST-XML
  parser and raised as the client's modeled exception (a ``ClientError``
  with the same Code), so If-Match 412, NoSuchKey and AccessDenied mean what
  they meant; transport errors become the botocore exceptions aiobotocore
  raises for them;
- **the same retries**: botocore's standard-mode retry handler (the same
  classes and attempt count the client was configured with: 5xx, SlowDown,
  throttling, connection errors, with its jittered exponential backoff and
  retry quota; the quota is this path's own).

Anything the fast path does not cover goes to botocore, decided once per
client (no credentials, a signature version other than SigV4, a proxy,
another retry mode, an HTTP session of another shape) or once per bucket (an
access point ARN, a directory bucket, an endpoint botocore signs any other
way, a redirect to another region, a 2xx answer without Content-Length).
``ZIPJOBS_FAST_GET=0`` turns it off.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import ssl
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import quote, urlsplit

import aiohttp
import botocore
from aiobotocore.retries.standard import (
    AioRetryHandler,
    AioRetryPolicy,
    AioStandardRetryConditions,
)
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)
from botocore.parsers import RestXMLParser
from botocore.retries import quota, standard

from .http1_get import (
    Answer,
    BodyCut,
    ClosedBeforeAnswer,
    ConnectTimeout,
    Http1Pool,
    MalformedAnswer,
    Origin,
    UnsupportedAnswer,
)
from .sigv4_header import ALGORITHM, UNSIGNED_PAYLOAD, HeaderSigner, amz_date

if TYPE_CHECKING:
    from botocore.exceptions import _ClientErrorResponseTypeDef
    from types_aiobotocore_s3 import S3Client

USER_AGENT = f"zipjobs-fast-get botocore/{botocore.__version__}"
_AUTH_SCOPE = re.compile(
    rf"^{ALGORITHM} Credential=[^/]+/\d{{8}}/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
)
# Answers that mean "this bucket lives elsewhere": botocore's S3 region
# redirector knows how to follow them, so such a bucket is handed to it.
_REDIRECT_STATUSES = frozenset({301, 302, 307, 308})
_REGION_ERRORS = frozenset(
    {"AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "PermanentRedirect"}
)


class GetBody(Protocol):
    """What the reader does with a GET's body."""

    async def readinto(self, b: memoryview) -> int: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RangedAnswer:
    """A 2xx GET answer: ``fields`` named as GetObject names them, and the unread body."""

    fields: Mapping[str, Any]
    body: GetBody


class RangedGet(Protocol):
    async def get(
        self, bucket: str, key: str, first: int, last: int, if_match: str
    ) -> RangedAnswer:
        """GET bytes ``first..last`` (inclusive) of ``bucket/key`` if its ETag is ``if_match``."""
        ...


# -- botocore: the fallback, and what the fast path must be indistinguishable from --------


class _BotocoreBody:
    __slots__ = ("_body",)

    def __init__(self, body: Any) -> None:
        self._body = body

    async def readinto(self, b: memoryview) -> int:
        # The stub says bytearray; aiobotocore only slice-assigns into it.
        return int(await self._body.readinto(cast("bytearray", b)))

    def release(self) -> None:
        self._body.release()

    def close(self) -> None:
        self._body.close()


class BotocoreRangedGet:
    """``get_object`` with Range and If-Match: every SDK feature, every SDK cost."""

    def __init__(self, s3: S3Client) -> None:
        self._s3 = s3

    async def get(
        self, bucket: str, key: str, first: int, last: int, if_match: str
    ) -> RangedAnswer:
        resp = await self._s3.get_object(
            Bucket=bucket, Key=key, Range=f"bytes={first}-{last}", IfMatch=if_match
        )
        return RangedAnswer(resp, _BotocoreBody(resp["Body"]))


# -- the fast path ------------------------------------------------------------------------


class _Http1Body:
    """The body of a 2xx answer, read straight into the reader's buffer; errors named
    as aiobotocore's StreamingBody names them."""

    __slots__ = ("_answer", "_url")

    def __init__(self, answer: Answer, url: str) -> None:
        self._answer = answer
        self._url = url

    async def readinto(self, b: memoryview) -> int:
        try:
            return await self._answer.readinto(b)
        except TimeoutError as err:
            raise ReadTimeoutError(endpoint_url=self._url, error=err) from err
        except (ConnectionError, OSError) as err:
            raise ResponseStreamingError(error=err) from err

    def release(self) -> None:
        self._answer.release()

    def close(self) -> None:
        self._answer.close()


def botocore_error(err: BaseException, url: str) -> Exception:
    """The botocore exception aiobotocore raises for this transport/socket error.

    The same classes as aiobotocore's ``AIOHTTPSession.send`` gives, so
    retries (botocore retries ``ConnectionError``/``HTTPClientError``) and the
    reader's own resume logic see the classes they always saw.
    """
    if isinstance(err, ssl.SSLError):
        return SSLError(endpoint_url=url, error=err)
    if isinstance(err, ConnectTimeout):
        return ConnectTimeoutError(endpoint_url=url, error=err)
    if isinstance(err, TimeoutError):
        return ReadTimeoutError(endpoint_url=url, error=err)
    if isinstance(err, ClosedBeforeAnswer | BodyCut | MalformedAnswer):
        return ConnectionClosedError(error=err, endpoint_url=url)
    if isinstance(err, OSError):  # refused, unreachable, name not resolved
        return EndpointConnectionError(endpoint_url=url, error=err)
    return HTTPClientError(error=err)


@dataclass(frozen=True, slots=True)
class BucketTarget:
    """Where GETs of one bucket go and how they are signed, as botocore decided."""

    origin: str  # scheme://netloc
    path_prefix: str  # the encoded path before the key ("/bucket/" or "/")
    host: str  # the Host header botocore signs
    signer: HeaderSigner


def host_header(url: str) -> str:
    """Host as SigV4 signs it: lower-case, without userinfo or a default port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{port}"
    return host


# A key whose GET botocore prepares, signs and then never sends: where it
# lands in the URL shows where every key of the bucket goes. Its characters
# need encoding, so the URL also shows that our encoding is botocore's.
PROBE_KEY = "zipjobs endpoint probe/ü+~(k)"
# Headers of a prepared GetObject the fast path reproduces (or may leave out:
# user agent and SDK invocation ids). Any other header, e.g. a checksum mode,
# an expected bucket owner or an S3 Express session token, means botocore
# would send something we do not, so that bucket stays with botocore.
_KNOWN_HEADERS = frozenset(
    {
        "host",
        "user-agent",
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
        "authorization",
        "amz-sdk-invocation-id",
        "amz-sdk-request",
        "accept-encoding",
    }
)


def target_from_request(url: str, headers: Mapping[str, str | bytes]) -> BucketTarget | None:
    """Where GETs of a bucket go, read off botocore's prepared GetObject of ``PROBE_KEY``.

    None when botocore would address or sign GETs of this bucket in a way the
    fast path does not reproduce: another algorithm (SigV4a, S3 Express),
    headers or query parameters we would not send, or the key not where our
    encoding puts it.
    """
    lower = {
        k.lower(): v.decode("latin-1") if isinstance(v, bytes) else str(v)
        for k, v in headers.items()
    }
    if not lower.keys() <= _KNOWN_HEADERS:
        return None
    scope = _AUTH_SCOPE.match(lower.get("authorization", ""))
    if scope is None:
        return None
    parts = urlsplit(url)
    if parts.query not in ("", "x-id=GetObject"):
        return None
    encoded_key = quote(PROBE_KEY, safe="/~")
    if not parts.path.endswith("/" + encoded_key):
        return None
    return BucketTarget(
        origin=f"{parts.scheme}://{parts.netloc}",
        path_prefix=parts.path[: -len(encoded_key)],
        host=lower.get("host") or host_header(url),
        signer=HeaderSigner(region=scope["region"], service=scope["service"]),
    )


def _bucket_needs_botocore(bucket: str) -> bool:
    """Access point / Outposts ARNs and S3 Express directory buckets: botocore's job."""
    return ":" in bucket or bucket.endswith(("--x-s3", "--xa-s3"))


class _Probed(Exception):
    """Raised from ``before-send`` to stop the probe request (never leaves this module)."""


_UNKNOWN = object()


class _Status:
    """What botocore's retry quota reads of a successful answer."""

    __slots__ = ("status_code",)

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class FastRangedGet:
    """Signed ranged GETs on the client's aiohttp session; botocore for what it does not cover."""

    def __init__(
        self,
        s3: S3Client,
        pool: Http1Pool,
        credentials: Any,
        max_attempts: int,
        proxy_for: Callable[[str], str | None] = lambda url: None,
    ) -> None:
        self._s3 = s3
        self._proxy_for = proxy_for
        self._pool = pool
        self._origins: dict[str, Origin] = {}
        self._credentials = credentials
        self.fallback = BotocoreRangedGet(s3)
        self._targets: dict[str, BucketTarget | None] = {}
        self._probe_lock = asyncio.Lock()
        self._operation = s3.meta.service_model.operation_model("GetObject")
        self._parser = RestXMLParser()
        output_shape = self._operation.output_shape
        assert output_shape is not None  # GetObject has one
        self._output_shape = output_shape
        self._quota = standard.RetryQuotaChecker(quota.RetryQuota())
        # Standard mode exactly as aiobotocore's ``register_retry_handler`` builds it.
        self._retry = AioRetryHandler(
            retry_policy=AioRetryPolicy(
                retry_checker=AioStandardRetryConditions(max_attempts=max_attempts),
                retry_backoff=standard.ExponentialBackoff(),
            ),
            retry_event_adapter=standard.RetryEventAdapter(),
            # What botocore passes here too; the stub says RetryQuota.
            retry_quota=self._quota,  # type: ignore[arg-type]
        )
        self.sent = 0  # requests this path sent (tests and diagnostics)

    def close(self) -> None:
        """Close the pooled connections (the client is closing)."""
        self._pool.close()

    @property
    def connections_opened(self) -> int:
        """Connections this path has opened so far (tests: keep-alive reuse)."""
        return self._pool.opened

    async def _target(self, bucket: str) -> BucketTarget | None:
        target = self._targets.get(bucket, _UNKNOWN)
        if target is not _UNKNOWN:
            return cast("BucketTarget | None", target)
        async with self._probe_lock:  # one probe per bucket, however many GETs wait for it
            if bucket not in self._targets:
                self._targets[bucket] = await self._probe(bucket)
        return self._targets[bucket]

    async def _probe(self, bucket: str) -> BucketTarget | None:
        """Let botocore prepare and sign a GetObject in this bucket, and stop it before it is sent.

        ``before-send`` is botocore's documented hook for answering a request
        without sending it; here it raises instead, having seen the request.
        """
        if _bucket_needs_botocore(bucket):
            return None
        seen: dict[str, Any] = {}

        def capture(request: Any, **_: Any) -> None:
            if quote(PROBE_KEY, safe="/~") in str(request.url):
                seen["url"], seen["headers"] = str(request.url), dict(request.headers)
                raise _Probed

        events = self._s3.meta.events
        event = "before-send.s3.GetObject"
        events.register_first(event, capture)
        try:
            await self._s3.get_object(Bucket=bucket, Key=PROBE_KEY)
        except _Probed:
            pass
        except Exception:  # botocore could not even prepare it: its path reports why
            return None
        finally:
            events.unregister(event, capture)
        if "url" not in seen:
            return None
        target = target_from_request(seen["url"], seen["headers"])
        if target is not None and self._proxy_for(target.origin + target.path_prefix):
            return None  # proxies: botocore's
        return target

    async def _frozen_credentials(self) -> Any:
        frozen = self._credentials.get_frozen_credentials()
        if inspect.isawaitable(frozen):
            frozen = await frozen
        return frozen

    async def _signed_headers(
        self, target: BucketTarget, path: str, first: int, last: int, if_match: str
    ) -> dict[str, str]:
        creds = await self._frozen_credentials()
        signed = {
            "host": target.host,
            "if-match": if_match,
            "range": f"bytes={first}-{last}",
            "x-amz-content-sha256": UNSIGNED_PAYLOAD,
            "x-amz-date": amz_date(),
        }
        if creds.token:
            signed["x-amz-security-token"] = creds.token
        auth = target.signer.authorization(
            "GET", path, "", signed, creds.access_key, creds.secret_key
        )
        return {
            **signed,
            "authorization": auth,
            "user-agent": USER_AGENT,
            "accept-encoding": "identity",
        }

    async def get(
        self, bucket: str, key: str, first: int, last: int, if_match: str
    ) -> RangedAnswer:
        target = await self._target(bucket)
        if target is None:
            return await self.fallback.get(bucket, key, first, last, if_match)
        path = target.path_prefix + quote(key, safe="/~")
        url = target.origin + path
        origin = self._origin(target.origin)
        request_context: dict[str, Any] = {}
        attempt = 0
        while True:
            attempt += 1
            headers = await self._signed_headers(target, path, first, last, if_match)
            try:
                resp, body, caught = await self._exchange(origin, path, url, headers)
            except UnsupportedAnswer:
                self._targets[bucket] = None  # an answer we do not read: botocore's from now on
                return await self.fallback.get(bucket, key, first, last, if_match)
            if resp is not None and 200 <= resp.status < 300:
                # As botocore's after-call hook does, with the request context
                # dict (the stub says RetryContext).
                self._quota.release_retry_quota(
                    request_context,  # type: ignore[arg-type]
                    _Status(resp.status),
                )
                h = resp.headers
                length = h.get("content-length")
                fields = {
                    "ETag": h.get("etag"),
                    "ContentRange": h.get("content-range"),
                    "ContentLength": None if length is None else int(length),
                }
                return RangedAnswer(fields, _Http1Body(resp, url))
            http_response, parsed = None, None
            if resp is not None:
                http_response, parsed = self._error_answer(url, resp, body)
                code = str(parsed.get("Error", {}).get("Code", ""))
                if self._elsewhere(target, resp.status, code, http_response.headers):
                    # botocore's region redirector follows it and remembers the region.
                    self._targets[bucket] = None
                    return await self.fallback.get(bucket, key, first, last, if_match)
            delay = await self._needs_retry(attempt, http_response, parsed, caught, request_context)
            if delay is not None:
                await asyncio.sleep(delay)
                continue
            if caught is not None:
                raise caught
            assert parsed is not None
            # As botocore's endpoint reports it: retries, not attempts.
            parsed.setdefault("ResponseMetadata", {})["RetryAttempts"] = attempt - 1
            code = str(parsed.get("Error", {}).get("Code", ""))
            error_class = cast("type[ClientError]", self._s3.exceptions.from_code(code))
            raise error_class(cast("_ClientErrorResponseTypeDef", parsed), "GetObject")

    def _origin(self, origin: str) -> Origin:
        found = self._origins.get(origin)
        if found is None:
            parts = urlsplit(origin)
            scheme = parts.scheme.lower()
            port = parts.port or {"http": 80, "https": 443}[scheme]
            found = self._origins[origin] = Origin(scheme, parts.hostname or "", port)
        return found

    async def _exchange(
        self, origin: Origin, path: str, url: str, headers: dict[str, str]
    ) -> tuple[Answer | None, bytes, Exception | None]:
        """One request: a 2xx answer (body unread), an error answer and its body, or the
        botocore exception for what went wrong on the way (mapped as aiobotocore maps it).
        A 2xx answer this client cannot read raises ``UnsupportedAnswer``."""
        self.sent += 1
        try:
            resp = await self._pool.get(origin, path, headers)
            if 200 <= resp.status < 300:
                try:
                    resp.check_readable()
                except UnsupportedAnswer:
                    resp.close()
                    raise
                return resp, b"", None
            try:
                return resp, await resp.read(), None
            finally:
                resp.release()
        except (asyncio.CancelledError, UnsupportedAnswer):
            raise
        except Exception as err:
            caught = botocore_error(err, url)
            caught.__cause__ = err
            return None, b"", caught

    def _error_answer(
        self, url: str, resp: Answer, body: bytes
    ) -> tuple[AWSResponse, dict[str, Any]]:
        """An error answer as botocore sees it: the response and its parsed S3 XML error."""
        headers = HTTPHeaders.from_dict(dict(resp.headers))
        http_response = AWSResponse(url, resp.status, headers, None)
        parsed = self._parser.parse(
            {"status_code": resp.status, "headers": headers, "body": body}, self._output_shape
        )
        return http_response, dict(parsed)

    @staticmethod
    def _elsewhere(
        target: BucketTarget, status: int, code: str, headers: Mapping[str, str]
    ) -> bool:
        if status in _REDIRECT_STATUSES or code in _REGION_ERRORS:
            return True
        region = headers.get("x-amz-bucket-region")
        return status == 400 and region is not None and region != target.signer.region

    async def _needs_retry(
        self,
        attempt: int,
        http_response: AWSResponse | None,
        parsed: dict[str, Any] | None,
        caught: Exception | None,
        request_context: dict[str, Any],
    ) -> float | None:
        """botocore's standard-mode decision: a delay in seconds, or None (give up)."""
        response = None if http_response is None else (http_response, parsed)
        delay = await self._retry.needs_retry(
            response=response,
            attempts=attempt,
            caught_exception=caught,
            operation=self._operation,
            request_dict={"context": request_context},
        )
        return None if delay is None else float(delay)


# -- one transport per client, chosen once ------------------------------------------------

_FAST: weakref.WeakKeyDictionary[Any, FastRangedGet] = weakref.WeakKeyDictionary()


async def enable_fast_get(s3: S3Client) -> FastRangedGet | None:
    """Give ``s3``'s ranged GETs the fast path if this client allows it; None if it does not.

    Called once, where the client is created (``service/aws.py``), which also
    calls ``disable_fast_get`` when the client closes.
    """
    fast = await _build(s3)
    if fast is not None:
        _FAST[s3] = fast
    return fast


def disable_fast_get(s3: S3Client) -> None:
    fast = _FAST.pop(s3, None)
    if fast is not None:
        fast.close()


def ranged_get_for(s3: S3Client) -> RangedGet:
    """The transport chosen for this client: the fast path if enabled, else botocore."""
    fast = _FAST.get(s3)
    return fast if fast is not None else BotocoreRangedGet(s3)


async def _build(s3: S3Client) -> FastRangedGet | None:
    signer = getattr(s3, "_request_signer", None)
    credentials = getattr(signer, "_credentials", None)
    if credentials is None or getattr(signer, "signature_version", None) not in ("s3v4", "v4"):
        return None  # anonymous or not SigV4: botocore decides how to sign
    retries = getattr(s3.meta.config, "retries", None) or {}
    if retries.get("mode") != "standard":
        return None
    max_attempts = int(retries.get("total_max_attempts", standard.DEFAULT_MAX_ATTEMPTS))
    http_session = getattr(getattr(s3, "_endpoint", None), "http_session", None)
    get_session = getattr(http_session, "_get_session", None)
    proxy_config = getattr(http_session, "_proxy_config", None)
    if get_session is None or proxy_config is None:
        return None  # an HTTP layer of another shape
    endpoint = str(s3.meta.endpoint_url)
    if proxy_config.proxy_url_for(endpoint):
        return None  # proxies: botocore's
    http = await get_session(None)
    if not isinstance(http, aiohttp.ClientSession):
        return None
    tls = _ssl_context(http.connector)
    if tls is None and endpoint.lower().startswith("https:"):
        return None  # TLS set up some other way (a fingerprint): aiohttp's
    config = s3.meta.config
    pool = Http1Pool(
        tls,
        limit=int(getattr(config, "max_pool_connections", None) or 10),
        connect_timeout=float(getattr(config, "connect_timeout", None) or 60),
        read_timeout=float(getattr(config, "read_timeout", None) or 60),
    )
    return FastRangedGet(s3, pool, credentials, max_attempts, proxy_config.proxy_url_for)


def _ssl_context(connector: Any) -> ssl.SSLContext | None:
    """The TLS settings the client's own connector verifies with (its CA bundle, or
    none when the client was made with ``verify=False``), as aiohttp applies them."""
    setting = getattr(connector, "_ssl", None)
    if isinstance(setting, ssl.SSLContext):
        return setting
    if setting is True:
        return ssl.create_default_context()
    if setting is False:  # verify=False: what aiohttp does then
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        return unverified
    return None
