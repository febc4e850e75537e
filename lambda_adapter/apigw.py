"""API Gateway HTTP API (payload 2.0) events <-> the framework-free HTTP API.

Pure translation, no logic: routing, auth, validation and problem documents
all live in ``service.jobs.http``, which the aiohttp service uses too, so
both front ends answer with the same JSON and the same errors.
"""

from __future__ import annotations

import base64
from typing import Any

from service.jobs import HttpRequest, HttpResponse


def to_request(event: dict[str, Any]) -> HttpRequest:
    """A 2.0 event as an ``HttpRequest``.

    On a named stage ``rawPath`` starts with ``/{stage}``; that part becomes
    ``base_path`` so the URLs we hand out (``statusUrl``, ``Location``) work.
    """
    http = event.get("requestContext", {}).get("http", {})
    stage = event.get("requestContext", {}).get("stage", "$default")
    path = event.get("rawPath") or http.get("path") or "/"
    base_path = ""
    if stage and stage != "$default" and path.startswith(f"/{stage}/"):
        base_path = f"/{stage}"
        path = path[len(base_path) :]
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
