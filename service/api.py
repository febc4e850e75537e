"""The standalone HTTP service: a thin aiohttp layer over service.jobs.http.

All behaviour lives in ``service.jobs``; here we only read the body under
the size limit (aiohttp's own limit answers text/plain, we want problem+json)
and copy requests and responses across.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .jobs import (
    PROBLEM_CONTENT_TYPE,
    ApiError,
    HttpRequest,
    JobService,
    Problem,
    handle,
    problem_response,
)
from .jobs.validation import check_body_size
from .worker import Worker

log = logging.getLogger(__name__)

SERVICE_KEY: web.AppKey[JobService] = web.AppKey("job_service", JobService)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, refusing early from Content-Length and again while reading."""
    if request.content_length is not None:
        check_body_size(request.content_length, request.app[SERVICE_KEY].settings)
    body = bytearray()
    while len(body) <= limit:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    check_body_size(len(body), request.app[SERVICE_KEY].settings)
    return bytes(body)


async def dispatch(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICE_KEY]
    try:
        body = b""
        if request.method in ("POST", "PUT", "PATCH"):
            body = await _read_body(request, svc.settings.max_body_bytes)
    except ApiError as err:
        resp = problem_response(err.problem, err.headers)
    else:
        resp = await handle(
            svc,
            HttpRequest(
                method=request.method,
                path=request.path,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            ),
        )
    content_type = resp.headers.pop("Content-Type", "application/json")
    return web.Response(
        status=resp.status, body=resp.body, headers=resp.headers, content_type=content_type
    )


@web.middleware
async def problems_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Errors aiohttp raises itself (before our handler) become problem+json too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = problem_response(Problem(exc.status, "http-error", exc.reason))
        return web.Response(status=resp.status, body=resp.body, content_type=PROBLEM_CONTENT_TYPE)


def open_api_warning(host: str, token: str | None) -> str | None:
    """The warning for an API without a token that other machines can reach, else None.

    Loopback-only is a developer's laptop; anything else (0.0.0.0, ::, a LAN
    address, a name) lets anyone who reaches the port zip and download from
    the allowed buckets.
    """
    if token is not None:
        return None
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (
        f"WARNING: the API listens on {host} WITHOUT AUTHENTICATION: anyone who can reach "
        "this port can read the allowed buckets through it. Set ZIPJOBS_API_TOKEN, "
        "or bind to 127.0.0.1 behind an authenticating proxy."
    )


class _ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors as problem+json.

    Requests aiohttp refuses while parsing (a header over 8,190 bytes, a bad
    request line) never reach the app or its middlewares: aiohttp answers
    them with a text/plain body and logs the parser's message, which quotes
    the start of the offending header (an Authorization header, say). Here
    the answer is a problem document, and neither it nor the log holds any
    of the request's bytes.
    """

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.warning(
            "refused a request aiohttp could not handle: %d %s",
            status,
            type(exc).__name__ if exc is not None else "error",
        )
        if request.writer.output_size > 0:  # as aiohttp: too late to answer
            raise ConnectionError("response already started; cannot send an error")
        if status == 400:
            problem = Problem(
                400,
                "malformed-http",
                "the HTTP request could not be parsed (for example a header over "
                "8,190 bytes, or a malformed request line)",
            )
        else:
            problem = Problem(
                status, "http-error", "the service failed; the request can be retried"
            )
        resp = web.Response(status=status, body=problem.body(), content_type=PROBLEM_CONTENT_TYPE)
        resp.force_close()
        return resp


class _ProblemServer(web.Server):
    """A ``web.Server`` whose connections use ``_ProblemRequestHandler``."""

    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ProblemAppRunner(web.AppRunner):
    """``web.AppRunner`` whose server answers even aiohttp's own errors as problem+json.

    aiohttp has no public hook for these answers (they bypass middlewares);
    the server class is swapped after aiohttp built it, so every setting it
    chose stays. ``tests/integration/test_api_hardening.py`` pins the result.
    """

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ProblemServer
        return server


def make_app(svc: JobService) -> web.Application:
    """The aiohttp app. The body limit is enforced in ``dispatch`` (problem+json)."""
    app = web.Application(
        client_max_size=svc.settings.max_body_bytes + 1024 * 1024, middlewares=[problems_only]
    )
    app[SERVICE_KEY] = svc
    # [\s\S]: a path may hold any character after percent-decoding, newlines too.
    app.router.add_route("*", r"/{tail:[\s\S]*}", dispatch)
    return app


async def run_server(
    svc: JobService,
    host: str,
    port: int,
    *,
    stop: asyncio.Event,
    worker: Worker | None = None,
    on_ready: Callable[[str], None] | None = None,
    access_log: bool = True,
) -> None:
    """Serve the API (and optionally a worker) until ``stop`` is set, then drain."""
    runner = ProblemAppRunner(make_app(svc), access_log=log if access_log else None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    url = f"http://{host}:{bound}"
    worker_task = asyncio.create_task(worker.run()) if worker is not None else None
    if on_ready is not None:
        on_ready(url)
    try:
        await stop.wait()
    finally:
        if worker is not None and worker_task is not None:
            worker.stop()
            await worker_task
        await runner.cleanup()
