"""The standalone HTTP service: a thin aiohttp layer over service.jobs.http.

All behaviour lives in ``service.jobs``; here we only read the body under
the size limit (aiohttp's own limit answers text/plain, we want problem+json)
and copy requests and responses across.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

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
    runner = web.AppRunner(make_app(svc), access_log=log if access_log else None)
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
