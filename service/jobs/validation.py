"""Request validation: bad input is refused here and never reaches the engine.

Pure functions over bytes and Settings, so they are unit-tested without any
server, and the aiohttp service and the Lambda handler refuse exactly the same
requests with exactly the same problem documents. Every problem in a body is
reported at once (up to a cap), each with a JSON pointer to where it is.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from ..engine import Compression, MissingPolicy
from ..settings import Settings
from .models import JobRequest
from .problems import ApiError

MAX_KEY_BYTES = 1024  # S3's own limit on a key
MAX_NAME_CHARS = 200
MAX_REPORTED = 50
FIELDS = frozenset({"keys", "bucket", "prefix", "name", "missing", "compression"})
_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
_JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def is_job_id(value: str) -> bool:
    """Job ids are uuid4 hex; anything else cannot exist (and never hits DynamoDB)."""
    return bool(_JOB_ID_RE.fullmatch(value))


def check_idempotency_key(value: str) -> str:
    if not _IDEMPOTENCY_KEY_RE.fullmatch(value):
        raise ApiError(
            400,
            "invalid-idempotency-key",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )
    return value


def check_body_size(length: int, settings: Settings) -> None:
    if length > settings.max_body_bytes:
        raise ApiError(
            413,
            "body-too-large",
            f"request body is {length} bytes; the limit is {settings.max_body_bytes}",
            limit=settings.max_body_bytes,
        )


def check_content_type(content_type: str | None) -> None:
    """JSON or nothing (curl without -H); a form or text body is a client mistake."""
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(
            415, "unsupported-media-type", f"send application/json, not {media or 'nothing'}"
        )


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []
        # 403 only when every problem is a permission problem; any malformed
        # field makes it a 422, which the client must fix first.
        self.forbidden = True

    def add(self, pointer: str, detail: str, *, forbidden: bool = False) -> None:
        self.forbidden = self.forbidden and forbidden
        self.items.append({"pointer": pointer, "detail": detail})

    def raise_if_any(self) -> None:
        if not self.items:
            return
        first = self.items[0]["detail"]
        more = f" (and {len(self.items) - 1} more problem(s))" if len(self.items) > 1 else ""
        status, slug = (403, "not-allowed") if self.forbidden else (422, "invalid-request")
        raise ApiError(status, slug, first + more, errors=self.items[:MAX_REPORTED])


def _utf8_len(value: str) -> int | None:
    """Length in UTF-8, or None for strings that cannot be encoded (lone surrogates)."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def key_problem(key: object, settings: Settings) -> tuple[str, bool] | None:
    """Why ``key`` cannot be used (message, is-a-permission-problem), or None."""
    if not isinstance(key, str):
        return f"must be a string, got {_type_name(key)}", False
    size = _utf8_len(key)
    if size is None:
        return "is not valid Unicode (lone surrogate)", False
    if size == 0:
        return "must not be empty", False
    if size > MAX_KEY_BYTES:
        return f"is {size} bytes; S3 keys are at most {MAX_KEY_BYTES}", False
    if "\x00" in key:
        return "must not contain NUL", False
    if settings.src_prefixes and not key.startswith(settings.src_prefixes):
        return f"{key!r} is outside the allowed prefixes {list(settings.src_prefixes)}", True
    return None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def name_problem(name: str) -> str | None:
    """Archive names become an S3 key's last segment and a download's filename."""
    if _utf8_len(name) is None:
        return "is not valid Unicode (lone surrogate)"
    if not name.lower().endswith(".zip") or len(name) <= len(".zip"):
        return "must end with .zip and have a name before it"
    if len(name) > MAX_NAME_CHARS:
        return f"must be at most {MAX_NAME_CHARS} characters"
    if "/" in name or "\\" in name:
        return "must not contain slashes"
    if name.startswith("."):
        return "must not start with a dot"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name):
        return "must not contain control characters"
    return None


def parse_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:
        raise ApiError(400, "malformed-json", f"body is not valid JSON: {err}") from None


def _enum(doc: dict[str, Any], field: str, kind: Any, default: Any, errors: _Errors) -> Any:
    raw = doc.get(field, default.value)
    try:
        return kind(raw)
    except (ValueError, TypeError):
        allowed = " or ".join(repr(m.value) for m in kind)
        errors.add(f"/{field}", f"{field} must be {allowed}, got {raw!r}")
        return None


def _keys(doc: dict[str, Any], settings: Settings, errors: _Errors) -> tuple[str, ...] | None:
    raw = doc.get("keys")
    if raw is None:
        return None
    if not isinstance(raw, list):
        errors.add("/keys", f"keys must be an array of strings, got {_type_name(raw)}")
        return None
    if not raw:
        errors.add("/keys", "keys must not be empty")
        return None
    if len(raw) > settings.max_keys:
        errors.add("/keys", f"{len(raw)} keys given; the limit is {settings.max_keys}")
        return None
    for index, key in enumerate(raw):
        problem = key_problem(key, settings)
        if problem is not None:
            errors.add(f"/keys/{index}", f"key {index} {problem[0]}", forbidden=problem[1])
            if len(errors.items) >= MAX_REPORTED:
                break
    return tuple(raw)


def _prefix(doc: dict[str, Any], settings: Settings, errors: _Errors) -> str | None:
    raw = doc.get("prefix")
    if raw is None:
        return None
    if not isinstance(raw, str):
        errors.add("/prefix", f"prefix must be a string, got {_type_name(raw)}")
        return None
    if _utf8_len(raw) is None or "\x00" in raw or len(raw.encode("utf-8")) > MAX_KEY_BYTES:
        errors.add("/prefix", "prefix must be valid Unicode, without NUL, at most 1024 bytes")
        return None
    if settings.src_prefixes and not raw.startswith(settings.src_prefixes):
        errors.add(
            "/prefix",
            f"prefix {raw!r} is outside the allowed prefixes {list(settings.src_prefixes)}",
            forbidden=True,
        )
    return raw


def parse_job_request(body: bytes, settings: Settings) -> JobRequest:
    """Turn a POST /zip-jobs body into a JobRequest, or raise an ApiError saying what is wrong."""
    check_body_size(len(body), settings)
    doc = parse_body(body)
    if not isinstance(doc, dict):
        raise ApiError(422, "invalid-request", f"body must be a JSON object, got {_type_name(doc)}")
    errors = _Errors()
    for unknown in sorted(set(doc) - FIELDS):
        errors.add(f"/{unknown}", f"unknown field {unknown!r}; allowed: {sorted(FIELDS)}")

    bucket = doc.get("bucket", settings.default_bucket)
    if not isinstance(bucket, str):
        errors.add("/bucket", f"bucket must be a string, got {_type_name(bucket)}")
    elif bucket not in settings.src_buckets:
        errors.add(
            "/bucket",
            f"bucket {bucket!r} is not allowed; allowed: {list(settings.src_buckets)}",
            forbidden=True,
        )

    keys = _keys(doc, settings, errors)
    prefix = _prefix(doc, settings, errors)
    if "keys" in doc and "prefix" in doc:
        errors.add("", "give either keys or prefix, not both")
    elif "keys" not in doc and "prefix" not in doc:
        errors.add("/keys", "keys (a non-empty array of object keys) or prefix is required")
    elif doc.get("keys", 0) is None or ("prefix" in doc and doc["prefix"] is None):
        errors.add("", "keys and prefix must not be null")

    name = doc.get("name", "archive.zip")
    if not isinstance(name, str):
        errors.add("/name", f"name must be a string, got {_type_name(name)}")
    elif (problem := name_problem(name)) is not None:
        errors.add("/name", f"name {problem}")

    missing = _enum(doc, "missing", MissingPolicy, MissingPolicy.FAIL, errors)
    compression = _enum(doc, "compression", Compression, Compression.STORED, errors)
    errors.raise_if_any()
    return JobRequest(
        bucket=bucket,
        keys=keys,
        prefix=prefix,
        name=name,
        missing=missing,
        compression=compression,
    )
