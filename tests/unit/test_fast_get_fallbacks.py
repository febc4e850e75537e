"""What the fast GET path leaves to botocore: a bucket in another region, a proxied client.

A bucket that lives in another region goes to botocore, whose redirector follows it.

S3 answers a request signed for the wrong region with 301 PermanentRedirect
(or 400 AuthorizationHeaderMalformed naming the right region, with
``x-amz-bucket-region``); botocore's S3 region redirector re-signs and
remembers the region, the fast path does not. So on such an answer the fast
path hands the bucket to botocore for good. Checked against a small real
HTTP server that answers the fast path's first GET with the redirect.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from service.aws import AwsSettings, aws_client
from service.s3_ranged_get import (
    USER_AGENT,
    BotocoreRangedGet,
    FastRangedGet,
    RangedAnswer,
    ranged_get_for,
)

REDIRECT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PermanentRedirect</Code>'
    b"<Message>The bucket you are attempting to access must be addressed using the specified"
    b" endpoint.</Message><Bucket>far</Bucket><Endpoint>far.s3.eu-west-2.amazonaws.com"
    b"</Endpoint></Error>"
)


class Fallback:
    """Stands in for botocore's path: records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, int, str]] = []

    async def get(
        self, bucket: str, key: str, first: int, last: int, if_match: str
    ) -> RangedAnswer:
        self.calls.append((bucket, key, first, last, if_match))
        return RangedAnswer({"ETag": if_match}, body=None)  # type: ignore[arg-type]


async def fallback_calls(
    url: str, gets: list[tuple[str, str, int, int, str]], monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, str, int, int, str]]:
    """Send ``gets`` on the fast path of a client of ``url``; what reached the fallback."""
    settings = AwsSettings(
        region="us-east-1", endpoint_url=url, access_key_id="a", secret_access_key="s"
    )
    async with aws_client("s3", settings) as s3:
        fast: Any = ranged_get_for(s3)
        assert isinstance(fast, FastRangedGet)
        fallback = Fallback()
        monkeypatch.setattr(fast, "fallback", fallback)
        for get in gets:
            await fast.get(*get)
    return fallback.calls


@contextlib.asynccontextmanager
async def serving(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 answering every GET with ``handle``; its URL."""
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(
            status=301,
            body=REDIRECT,
            headers={"Content-Type": "application/xml", "x-amz-bucket-region": "eu-west-2"},
        )

    async with serving(handle) as url:
        yield url, seen


async def test_a_redirect_hands_the_bucket_to_botocore(
    server: tuple[str, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = server
    gets = [("far", "a.pdf", 0, 9, '"e1"'), ("far", "b.pdf", 10, 19, '"e2"')]
    assert await fallback_calls(url, gets, monkeypatch) == gets
    assert len(seen) == 1 and seen[0]["User-Agent"] == USER_AGENT  # tried once, fast


async def test_a_client_behind_a_proxy_keeps_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore sends through HTTP(S)_PROXY; the fast path does not, so it is not used."""
    settings = AwsSettings(
        region="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        access_key_id="a",
        secret_access_key="s",
    )
    async with aws_client("s3", settings) as s3:
        assert isinstance(ranged_get_for(s3), FastRangedGet)  # the same settings, no proxy
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with aws_client("s3", settings) as s3:
        assert isinstance(ranged_get_for(s3), BotocoreRangedGet)


@pytest_asyncio.fixture
async def chunked_server() -> AsyncIterator[tuple[str, list[str]]]:
    """Answers every GET with a 206 whose body is chunked (no Content-Length)."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("User-Agent", ""))
        resp = web.StreamResponse(
            status=206, headers={"ETag": '"e1"', "Content-Range": "bytes 0-9/10"}
        )
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"0123456789")
        await resp.write_eof()
        return resp

    async with serving(handle) as url:
        yield url, seen


async def test_an_answer_without_length_hands_the_bucket_to_botocore(
    chunked_server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path reads bodies of a known length into the reader's buffer; a
    server that streams a chunked 2xx is botocore's to read, for good."""
    url, seen = chunked_server
    gets = [("b", "a.pdf", 0, 9, '"e1"'), ("b", "b.pdf", 0, 9, '"e1"')]
    assert await fallback_calls(url, gets, monkeypatch) == gets
    assert seen == [USER_AGENT]  # tried once on the fast path
