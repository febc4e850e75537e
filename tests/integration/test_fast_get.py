"""The fast ranged-GET path (service/s3_ranged_get.py) against a real S3 server over HTTP.

What the reader must not be able to tell apart: the same bytes and fields as
botocore's get_object, the same exception class and Code for every error
(412, 404, 403, a 503 that keeps coming), the same retries (a 503 retried
until it succeeds), and a body cut mid-stream resumed from the byte where it
broke. Every request the fast path sent is checked on the wire: it carries
our user agent (so it did take the fast path) and its signature is
recomputed by the independent verifier (tests/support/sigv4.py). A moto
server that checks signatures (IAM auth on) accepts it and refuses a wrong
one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import pytest
import pytest_asyncio
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from service.aws import BACKGROUND, AwsSettings, aws_client
from service.engine import (
    Destination,
    MiB,
    SourceChangedError,
    SourceObject,
    ZipOptions,
    build_zip,
)
from service.s3_ranged_get import (
    USER_AGENT,
    BotocoreRangedGet,
    FastRangedGet,
    RangedAnswer,
    RangedGet,
    enable_fast_get,
    ranged_get_for,
)
from tests.support.archive_check import verify_archive
from tests.support.aws_backend import FAKE_SECRET_KEY, AwsEndpoint
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.s3_objects import body, download, open_uploads
from tests.support.sigv4 import header_signature_problems

pytestmark = pytest.mark.integration

KEY = "dir/ünï cødé+(1)~.pdf"
DATA = body(300_000, 7)


@pytest_asyncio.fixture(loop_scope="session")
async def botocore_proxied_s3(proxy: FaultProxy, aws_settings: AwsSettings) -> AsyncIterator[Any]:
    """The same client as ``proxied_s3`` with the fast path turned off."""
    settings = dataclasses.replace(aws_settings, endpoint_url=proxy.url, fast_get=False)
    async with aws_client("s3", settings) as client:
        yield client


def transports(proxied_s3: Any, botocore_proxied_s3: Any) -> dict[str, RangedGet]:
    fast = ranged_get_for(proxied_s3)
    assert isinstance(fast, FastRangedGet)
    slow = ranged_get_for(botocore_proxied_s3)
    assert isinstance(slow, BotocoreRangedGet)
    return {"fast": fast, "botocore": slow}


@pytest_asyncio.fixture(loop_scope="session")
async def both(proxied_s3: Any, botocore_proxied_s3: Any) -> dict[str, RangedGet]:
    """The fast path and botocore's, on clients that differ only in ``fast_get``."""
    return transports(proxied_s3, botocore_proxied_s3)


async def read_all(answer: RangedAnswer, length: int) -> bytes:
    buf = bytearray(length)
    view = memoryview(buf)
    filled = 0
    while filled < length:
        n = await answer.body.readinto(view[filled:])
        assert n > 0
        filled += n
    answer.body.release()
    return bytes(buf)


def fast_requests_signed(proxy: FaultProxy, secret: str = FAKE_SECRET_KEY) -> int:
    """Check every GET the fast path sent with the independent verifier; how many there were."""
    fast = [r for r in proxy.seen("GET") if r.headers.get("user-agent") == USER_AGENT]
    for r in fast:
        assert header_signature_problems("GET", r.target, r.headers, secret) == [], r.target
        assert r.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    return len(fast)


async def error_of(transport: RangedGet, *args: Any) -> ClientError:
    with pytest.raises(ClientError) as info:
        await transport.get(*args)
    return info.value


@pytest_asyncio.fixture(loop_scope="session")
async def etag(s3: Any, bucket: str, put_objects: Any) -> str:
    """KEY put into the test's bucket; its ETag."""
    await put_objects({KEY: DATA})
    return str((await s3.head_object(Bucket=bucket, Key=KEY))["ETag"])


def same_error(fast: ClientError, slow: ClientError) -> None:
    # Each client has its own exception classes (client.exceptions): the same name and base.
    assert type(fast).__name__ == type(slow).__name__
    assert type(fast).__mro__[1:] == type(slow).__mro__[1:]
    assert fast.response["Error"]["Code"] == slow.response["Error"]["Code"]
    meta_f, meta_s = fast.response["ResponseMetadata"], slow.response["ResponseMetadata"]
    assert meta_f["HTTPStatusCode"] == meta_s["HTTPStatusCode"]
    assert meta_f.get("RetryAttempts") == meta_s.get("RetryAttempts")


# -- which path a client takes ------------------------------------------------------------


async def test_service_clients_take_the_fast_path_unless_turned_off(
    s3: Any, aws_settings: AwsSettings, aws_endpoint: AwsEndpoint
) -> None:
    assert isinstance(ranged_get_for(s3), FastRangedGet)
    off = dataclasses.replace(aws_settings, fast_get=False)
    async with aws_client("s3", off) as client:
        assert isinstance(ranged_get_for(client), BotocoreRangedGet)
    async with aws_client("s3", aws_settings) as client:
        kept = ranged_get_for(client)
        assert isinstance(kept, FastRangedGet)
    assert isinstance(ranged_get_for(client), BotocoreRangedGet)  # forgotten when closed
    anonymous = aioboto3.Session(region_name=aws_endpoint.region).client(
        "s3", endpoint_url=aws_endpoint.endpoint_url, config=Config(signature_version=UNSIGNED)
    )
    async with anonymous as client:
        assert await enable_fast_get(client) is None


# -- the same answers ---------------------------------------------------------------------


async def test_same_bytes_and_fields_as_botocore(
    bucket: str, etag: str, proxy: FaultProxy, both: dict[str, RangedGet]
) -> None:
    got = {}
    for name, transport in both.items():
        answer = await transport.get(bucket, KEY, 1000, 250_999, etag)
        fields = {k: answer.fields.get(k) for k in ("ETag", "ContentRange", "ContentLength")}
        got[name] = (fields, await read_all(answer, 250_000))
    assert got["fast"] == got["botocore"]
    assert got["fast"][1] == DATA[1000:251_000]
    assert fast_requests_signed(proxy) == 1


async def test_many_gets_share_one_kept_alive_connection(
    bucket: str, etag: str, proxy: FaultProxy, proxied_s3: Any
) -> None:
    """Sequential GETs reuse one pooled connection (the request, not a TCP and
    TLS set-up, is the per-object cost), and every one reads its own bytes."""
    fast = ranged_get_for(proxied_s3)
    assert isinstance(fast, FastRangedGet)
    opened = fast.connections_opened
    for i in range(20):
        first = i * 7919
        answer = await fast.get(bucket, KEY, first, first + 999, etag)
        assert await read_all(answer, 1000) == DATA[first : first + 1000]
    assert fast.connections_opened - opened <= 1
    assert fast_requests_signed(proxy) == 20


@pytest.mark.parametrize(
    "key",
    ["a b+c=d&e?f#g%h~i!j'k(l)m*n,o;p:q@r$s.pdf", "/leading/slash.pdf", "dots/./and/../x.pdf"],
)
async def test_odd_keys_reach_the_same_object_on_the_same_path(
    key: str, s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, both: dict[str, RangedGet]
) -> None:
    """The fast path's request target (sent as is, never normalised) is the one botocore
    sends, byte for byte."""
    await put_objects({key: DATA})
    etag = (await s3.head_object(Bucket=bucket, Key=key))["ETag"]
    got = {}
    for name, transport in both.items():
        got[name] = await read_all(await transport.get(bucket, key, 0, 999, etag), 1000)
    assert got["fast"] == got["botocore"] == DATA[:1000]
    fast, slow = proxy.seen("GET")
    assert fast.target.partition("?")[0] == slow.target.partition("?")[0]
    assert fast_requests_signed(proxy) == 1


async def test_if_match_412_is_the_same_client_error(
    bucket: str, etag: str, proxy: FaultProxy, both: dict[str, RangedGet]
) -> None:
    assert etag != '"0123456789abcdef0123456789abcdef"'
    args = (bucket, KEY, 0, 99, '"0123456789abcdef0123456789abcdef"')
    fast, slow = await error_of(both["fast"], *args), await error_of(both["botocore"], *args)
    same_error(fast, slow)
    assert fast.response["Error"]["Code"] == "PreconditionFailed"
    assert fast_requests_signed(proxy) == 1


async def test_missing_key_is_the_same_no_such_key(
    bucket: str, proxy: FaultProxy, both: dict[str, RangedGet]
) -> None:
    args = (bucket, "no/such key.pdf", 0, 9, '"e"')
    fast, slow = await error_of(both["fast"], *args), await error_of(both["botocore"], *args)
    same_error(fast, slow)
    assert type(fast).__name__ == "NoSuchKey"  # the modeled class, as botocore raises it
    assert fast_requests_signed(proxy) == 1


async def test_access_denied_is_the_same_and_not_retried(
    bucket: str, etag: str, proxy: FaultProxy, both: dict[str, RangedGet]
) -> None:
    fault = proxy.add(
        Fault("GET", path_contains=f"/{KEY}", status=403, code="AccessDenied", times=2)
    )
    args = (bucket, KEY, 0, 99, etag)
    fast, slow = await error_of(both["fast"], *args), await error_of(both["botocore"], *args)
    same_error(fast, slow)
    assert fast.response["Error"]["Code"] == "AccessDenied"
    assert fault.hits == 2  # one request each: 403 is not retried
    assert fast_requests_signed(proxy) == 1


@pytest.mark.usefixtures("no_backoff")
async def test_slow_down_is_retried_then_succeeds(
    bucket: str, etag: str, proxy: FaultProxy, both: dict[str, RangedGet]
) -> None:
    for name, transport in both.items():
        proxy.requests.clear()
        fault = proxy.add(
            Fault("GET", path_contains=f"/{KEY}", status=503, code="SlowDown", times=2)
        )
        answer = await transport.get(bucket, KEY, 10, 109, etag)
        assert await read_all(answer, 100) == DATA[10:110], name
        assert fault.hits == 2
        assert len(proxy.seen("GET", f"/{KEY}")) == 3, name
        assert fast_requests_signed(proxy) == (3 if name == "fast" else 0)


@pytest.mark.usefixtures("no_backoff")
async def test_endless_503_gives_up_after_the_same_attempts(
    bucket: str, etag: str, proxy: FaultProxy, both: dict[str, RangedGet]
) -> None:
    proxy.add(Fault("GET", path_contains=f"/{KEY}", status=503, code="SlowDown", times=1000))
    errors, sent = {}, {}
    for name, transport in both.items():
        proxy.requests.clear()
        errors[name] = await error_of(transport, bucket, KEY, 0, 9, etag)
        sent[name] = len(proxy.seen("GET", f"/{KEY}"))
    same_error(errors["fast"], errors["botocore"])
    assert sent["fast"] == sent["botocore"] == BACKGROUND.max_attempts + 1  # botocore's count


# -- through the engine -------------------------------------------------------------------


async def test_overwritten_source_fails_as_source_changed(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any
) -> None:
    objects = {"a.pdf": body(200_000, 1), KEY: DATA}
    await put_objects(objects)

    async def overwrite() -> None:
        await s3.put_object(Bucket=bucket, Key=KEY, Body=b"a newer version")

    proxy.add(Fault("GET", path_contains=f"/{KEY}", before=overwrite))
    with pytest.raises(SourceChangedError) as info:
        await build_zip(
            [SourceObject(bucket, k) for k in objects],
            Destination(bucket, "out/changed.zip"),
            s3=proxied_s3,
        )
    assert info.value.key == KEY
    statuses = [r.status for r in proxy.seen("GET", f"/{KEY}")]
    assert statuses == [412]
    assert fast_requests_signed(proxy) >= 2
    assert await open_uploads(s3, bucket) == []


async def test_cut_body_resumes_from_the_byte_where_it_broke(
    s3: Any, bucket: str, put_objects: Any, proxy: FaultProxy, proxied_s3: Any, tmp_path: Path
) -> None:
    objects = {"first.pdf": body(400_000, 2), KEY: body(3 * MiB + 11, 3)}
    await put_objects(objects)
    fault = proxy.add(Fault("GET", path_contains=f"/{KEY}", cut_after=123_457))
    await build_zip(
        [SourceObject(bucket, k) for k in objects],
        Destination(bucket, "out/cut.zip"),
        s3=proxied_s3,
        options=ZipOptions(range_size=4 * MiB, budget_bytes=16 * MiB, min_part_size=5 * MiB),
    )
    assert fault.hits == 1
    gets = proxy.seen("GET", f"/{KEY}")
    assert [g.range for g in gets] == [(0, 3 * MiB + 10), (123_457, 3 * MiB + 10)]
    assert gets[0].body_bytes_sent == 123_457
    assert fast_requests_signed(proxy) == 3
    path = tmp_path / "cut.zip"
    await download(s3, bucket, "out/cut.zip", path)
    verify_archive(path, objects)


# -- a server that checks signatures ------------------------------------------------------


async def test_a_signature_checking_moto_accepts_it_and_refuses_a_wrong_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """moto with IAM auth on (INITIAL_NO_AUTH_ACTION_COUNT reached) recomputes every
    signature with botocore's signer and answers SignatureDoesNotMatch otherwise."""
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        setup = AwsSettings(
            region="us-east-1", endpoint_url=url, access_key_id="setup", secret_access_key="setup"
        )
        async with aws_client("s3", setup) as admin:
            await admin.create_bucket(Bucket="sigcheck")
            await admin.put_object(Bucket="sigcheck", Key=KEY, Body=DATA)
            etag = (await admin.head_object(Bucket="sigcheck", Key=KEY))["ETag"]
        iam_client = aioboto3.Session(
            aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1"
        ).client("iam", endpoint_url=url)
        async with iam_client as iam:
            await iam.create_user(UserName="reader")
            await iam.put_user_policy(
                UserName="reader",
                PolicyName="read",
                PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
                '"Action":["s3:GetObject"],"Resource":"*"}]}',
            )
            key = (await iam.create_access_key(UserName="reader"))["AccessKey"]
        monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
        monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", 0)
        good = dataclasses.replace(
            setup, access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"]
        )
        async with aws_client("s3", good) as reader:
            fast = ranged_get_for(reader)
            assert isinstance(fast, FastRangedGet)
            answer = await fast.get("sigcheck", KEY, 5, 2004, etag)
            assert await read_all(answer, 2000) == DATA[5:2005]
        secret = key["SecretAccessKey"]
        wrong = secret[:-1] + ("x" if secret[-1] != "x" else "y")  # always a different secret
        bad = dataclasses.replace(good, secret_access_key=wrong)
        async with aws_client("s3", bad) as forger:
            fast = ranged_get_for(forger)
            assert isinstance(fast, FastRangedGet)
            err = await error_of(fast, "sigcheck", KEY, 5, 2004, etag)
            assert err.response["Error"]["Code"] == "SignatureDoesNotMatch"
    finally:
        monkeypatch.undo()
        server.stop()
