"""RFC 9457 problem details: the one shape every API error has.

Built here, without any web framework, so the aiohttp service and the Lambda
handlers answer errors byte for byte the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_BASE = "https://zipjobs.dev/problems/"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem document. ``slug`` becomes the ``type`` URI; ``extra`` adds members."""

    status: int
    slug: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return _TITLES.get(self.status, "Error")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": _TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }

    def body(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False).encode()


class ApiError(Exception):
    """Raised anywhere below the HTTP layer; the layer turns it into a problem response."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.problem = Problem(status, slug, detail, extra)
        self.headers = headers or {}


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "job-not-found", f"no job with id {job_id!r}")
