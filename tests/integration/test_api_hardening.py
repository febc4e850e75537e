"""The API's own edges: aiohttp's parser errors, an open bind, a blank token.

These are answers the service gives before any job logic runs, so they are
tested against the real server (``run_server``/``zipjobs serve``), not the
request router.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.api import open_api_warning, run_server
from service.jobs import JobService
from service.settings import Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRET = "hunter2-do-not-echo"
ENV = {
    "ZIPJOBS_TABLE": "jobs",
    "ZIPJOBS_QUEUE_URL": "http://127.0.0.1:9/000000000000/jobs",
    "ZIPJOBS_SRC_BUCKETS": "src-bucket",
    "ZIPJOBS_DST_BUCKET": "dst-bucket",
    # Nothing listens there: these tests must not need AWS at all.
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
}


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    settings = Settings.from_env(ENV)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with JobService.open(settings) as svc:
        task = asyncio.create_task(
            run_server(svc, "127.0.0.1", 0, stop=stop, on_ready=ready.set_result)
        )
        url = await asyncio.wait_for(ready, 30)
        try:
            yield url
        finally:
            stop.set()
            await task


async def raw_exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)  # the server closes after an error
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        # A header over aiohttp's 8,190-byte limit, holding a secret at its start.
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + SECRET.encode()
        + b"x" * 9000
        + b"\r\n\r\n",
        # A request line over the limit.
        b"GET /" + SECRET.encode() + b"y" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["long-header", "long-request-line"],
)
async def test_aiohttp_s_own_errors_are_problem_json_and_echo_nothing(
    server_url: str, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, headers, body = await raw_exchange(server_url, request_bytes)
    assert status == 400
    assert headers["content-type"].startswith("application/problem+json"), body[:200]
    doc = json.loads(body)
    assert doc["status"] == 400 and doc["type"].startswith("https://") and doc["detail"]
    assert SECRET.encode() not in body and b"xxxx" not in body and b"yyyy" not in body
    assert SECRET not in caplog.text  # nor in the logs: it may be a token


async def test_a_healthy_request_still_works(server_url: str) -> None:
    status, _headers, body = await raw_exchange(
        server_url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert (status, json.loads(body)) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    ("host", "token", "warns"),
    [
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("192.168.1.20", None, True),
        ("api.internal", None, True),
        ("127.0.0.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
        ("0.0.0.0", "t0ken", False),
    ],
)
def test_open_api_warning(host: str, token: str | None, warns: bool) -> None:
    warning = open_api_warning(host, token)
    assert (warning is not None) == warns
    if warning:
        assert "WITHOUT AUTHENTICATION" in warning and "ZIPJOBS_API_TOKEN" in warning


def serve(host: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", host, "--port", "0"],
        cwd=REPO,
        env={**os.environ, **ENV, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stderr_until_listening(proc: subprocess.Popen[str]) -> str:
    """Everything it logged up to "listening on" (then it is stopped)."""
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, line
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return err


def test_serve_warns_loudly_when_open_beyond_loopback() -> None:
    err = stderr_until_listening(serve("0.0.0.0"))
    assert "WARNING" in err and "WITHOUT AUTHENTICATION" in err


def test_serve_on_loopback_or_with_a_token_does_not_warn() -> None:
    assert "WITHOUT AUTHENTICATION" not in stderr_until_listening(serve("127.0.0.1"))
    assert "WITHOUT AUTHENTICATION" not in stderr_until_listening(
        serve("0.0.0.0", ZIPJOBS_API_TOKEN="t0ken")
    )


def test_serve_refuses_a_blank_token_at_start() -> None:
    proc = serve("127.0.0.1", ZIPJOBS_API_TOKEN="   ")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert "ZIPJOBS_API_TOKEN is set but blank" in err
