"""The HTTP API as plain functions: a request in, a response out, no framework.

service/api.py (aiohttp) and the Lambda handler for API Gateway HTTP API
events both translate to ``HttpRequest`` and back from ``HttpResponse``, so
routing, auth, status codes and problem documents live in one place and the
checked-in OpenAPI spec describes both.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from .problems import PROBLEM_CONTENT_TYPE, ApiError, Problem
from .service import JobService
from .unavailable import is_unavailable, unavailable
from .views import accepted_view, status_path

log = logging.getLogger(__name__)

JSON = "application/json"
_JOB_PATH = re.compile(r"^/zip-jobs/([^/]+)$")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """``headers`` keys are lower-case; ``base_path`` prefixes URLs we hand out."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    base_path: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, doc: Any, headers: dict[str, str] | None = None) -> HttpResponse:
        return cls(status, json.dumps(doc).encode(), {"Content-Type": JSON, **(headers or {})})


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> HttpResponse:
    """The one way an error leaves the service."""
    return HttpResponse(
        problem.status,
        problem.body(),
        {"Content-Type": PROBLEM_CONTENT_TYPE, **(headers or {})},
    )


@cache
def openapi_spec() -> bytes:
    return resources.files("service").joinpath("openapi.json").read_bytes()


def check_auth(token: str | None, authorization: str | None) -> None:
    """Bearer token, compared in constant time; no token configured = open."""
    if token is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
    ):
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": 'Bearer realm="zipjobs"'},
        )


async def handle(svc: JobService, req: HttpRequest) -> HttpResponse:
    """Route one request; every ApiError becomes a problem+json response."""
    deadline = svc.settings.api_deadline_seconds
    try:
        async with asyncio.timeout(deadline):
            return await _route(svc, req)
    except ApiError as err:
        return problem_response(err.problem, err.headers)
    except Exception as err:
        if is_unavailable(err):
            # No traceback: a slow or failing dependency is not our bug.
            log.warning("%s %s: 503, AWS unavailable: %r", req.method, req.path, err)
            reason = (
                f"a backing AWS service did not answer within {deadline} s"
                if isinstance(err, TimeoutError)
                else "a backing AWS service failed"
            )
            problem = unavailable(reason)
            return problem_response(problem.problem, problem.headers)
        log.exception("unhandled error in %s %s", req.method, req.path)
        return problem_response(
            Problem(500, "internal-error", "the service failed; the request can be retried")
        )


def _method_not_allowed(allowed: str) -> ApiError:
    return ApiError(405, "method-not-allowed", f"use {allowed}", headers={"Allow": allowed})


async def _route(svc: JobService, req: HttpRequest) -> HttpResponse:
    path = req.path.rstrip("/") or "/"
    if path == "/healthz":
        if req.method not in ("GET", "HEAD"):
            raise _method_not_allowed("GET")
        return HttpResponse.json(200, {"status": "ok"})
    if path == "/openapi.json":
        if req.method not in ("GET", "HEAD"):
            raise _method_not_allowed("GET")
        return HttpResponse(200, openapi_spec(), {"Content-Type": JSON})
    if path == "/zip-jobs":
        if req.method != "POST":
            raise _method_not_allowed("POST")
        check_auth(svc.settings.api_token, req.header("authorization"))
        return await _create(svc, req)
    match = _JOB_PATH.fullmatch(path)
    if match is None:
        raise ApiError(404, "not-found", f"no resource at {req.path}")
    job_id = match.group(1)
    if req.method not in ("GET", "DELETE"):
        raise _method_not_allowed("GET, DELETE")
    check_auth(svc.settings.api_token, req.header("authorization"))
    if req.method == "GET":
        return HttpResponse.json(
            200,
            await svc.view_job(job_id, base_path=req.base_path),
            {"Cache-Control": "no-store"},
        )
    return HttpResponse.json(202, await svc.cancel_job(job_id, base_path=req.base_path))


async def _create(svc: JobService, req: HttpRequest) -> HttpResponse:
    submitted = await svc.create_job(
        req.body,
        content_type=req.header("content-type"),
        idempotency_key=req.header("idempotency-key"),
    )
    location = status_path(submitted.job_id, req.base_path)
    headers = {"Location": location}
    if not submitted.new:
        headers["Idempotent-Replayed"] = "true"
    doc = accepted_view(submitted.job_id, submitted.status, req.base_path)
    return HttpResponse.json(202, doc, headers)
