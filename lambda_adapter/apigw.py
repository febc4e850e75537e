"""API Gateway HTTP API (payload 2.0) events <-> the framework-free HTTP API.

Pure translation, no logic: routing, auth, validation and problem documents
all live in ``service.jobs.http``, which the aiohttp service uses too, so
both front ends answer with the same JSON and the same errors.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from service.jobs import HttpRequest, HttpResponse

_PARAM = re.compile(r"\{([^}]+)\}")


def route_path(event: dict[str, Any]) -> str | None:
    """The path the matched route describes, e.g. ``/zip-jobs/{id}`` with ``id`` filled in.

    Built from ``routeKey`` and ``pathParameters``, which API Gateway sets
    the same way whatever the URL was: ``rawPath`` also carries a named
    stage or a custom domain's API mapping path (``/v1/zip-jobs/...``).
    None for the ``$default`` catch-all route, which has no template.
    """
    route_key = event.get("routeKey") or event.get("requestContext", {}).get("routeKey")
    if not isinstance(route_key, str) or " " not in route_key:
        return None
    template = route_key.split(" ", 1)[1]
    params = event.get("pathParameters") or {}

    def fill(m: re.Match[str]) -> str:
        return str(params.get(m.group(1).rstrip("+"), m.group(0)))

    return _PARAM.sub(fill, template)


def to_request(event: dict[str, Any]) -> HttpRequest:
    """A 2.0 event as an ``HttpRequest``.

    The path comes from the route (``route_path``); whatever ``rawPath`` has
    in front of it (a named stage, a custom domain's mapping path) becomes
    ``base_path`` so the URLs we hand out (``statusUrl``, ``Location``) work.
    """
    http = event.get("requestContext", {}).get("http", {})
    stage = event.get("requestContext", {}).get("stage", "$default")
    raw = event.get("rawPath") or http.get("path") or "/"
    routed = route_path(event)
    path, base_path = raw, ""
    if routed is not None:
        path = routed
        if raw.endswith(routed):
            base_path = raw[: len(raw) - len(routed)]
    elif stage and stage != "$default" and raw.startswith(f"/{stage}/"):
        base_path = f"/{stage}"
        path = raw[len(base_path) :]
    raw_body = event.get("body") or ""
    body = base64.b64decode(raw_body) if event.get("isBase64Encoded") else raw_body.encode("utf-8")
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    return HttpRequest(
        method=str(http.get("method", "GET")).upper(),
        path=path,
        headers=headers,
        body=body,
        base_path=base_path,
    )


def to_result(response: HttpResponse) -> dict[str, Any]:
    """An ``HttpResponse`` as the 2.0 result shape (bodies are JSON text)."""
    return {
        "statusCode": response.status,
        "headers": dict(response.headers),
        "body": response.body.decode("utf-8"),
        "isBase64Encoded": False,
    }
