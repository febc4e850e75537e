"""The GET answer checks that stand in for If-Match on servers that ignore it.

AWS documents that a ranged GET answers 206 with ``Content-Range: bytes
first-last/total`` and the object's ETag
(https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html), and
that a range starting past the end is 416 InvalidRange
(https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
Anything else means the bytes are not the planned ones.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service.engine.models import (
    PlannedEntry,
    RangeNotHonouredError,
    SourceChangedError,
    SourceObject,
)
from service.engine.response_check import (
    changed_reason,
    check_get_response,
    normalize_etag,
    parse_content_range,
)

ENTRY = PlannedEntry(
    SourceObject("b", "k.pdf"), "k.pdf", 1000, '"abc"', dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
)


def answer(**overrides: Any) -> dict[str, Any]:
    resp: dict[str, Any] = {"ETag": '"abc"', "ContentRange": "bytes 100-199/1000"}
    resp["ContentLength"] = 100
    resp.update(overrides)
    return {k: v for k, v in resp.items() if v is not None}


def test_the_planned_range_of_the_planned_object_passes() -> None:
    check_get_response(ENTRY, 100, 199, answer())
    check_get_response(ENTRY, 100, 199, answer(ETag="abc"))  # unquoted on one side only
    # A whole-object answer without Content-Range is the asked bytes when all were asked.
    check_get_response(ENTRY, 0, 999, answer(ContentRange=None, ContentLength=1000))


@pytest.mark.parametrize(
    "overrides",
    [
        {"ETag": '"def"'},  # overwritten, same size
        {"ETag": None},  # no ETag at all: nothing proves it is the planned object
        {"ContentRange": "bytes 100-199/1200"},  # grown
        {"ContentRange": "bytes 100-149/150", "ContentLength": 50},  # shrunk mid-range
        {"ContentRange": "bytes 0-99/1000"},  # another range than asked
        {"ContentRange": "garbage"},
        {"ContentLength": 99},
    ],
)
def test_any_difference_is_source_changed(overrides: dict[str, Any]) -> None:
    with pytest.raises(SourceChangedError) as caught:
        check_get_response(ENTRY, 100, 199, answer(**overrides))
    assert caught.value.permanent and caught.value.key == "k.pdf" and caught.value.why
    assert "k.pdf changed while the archive was being built (" in str(caught.value)


def test_a_server_that_ignores_range_is_refused() -> None:
    with pytest.raises(RangeNotHonouredError) as caught:
        check_get_response(ENTRY, 100, 199, answer(ContentRange=None, ContentLength=1000))
    assert caught.value.permanent and "ignores Range" in str(caught.value)


def test_parsers() -> None:
    assert parse_content_range("bytes 0-9/10") == (0, 9, 10)
    assert parse_content_range("bytes 0-9/*") == (0, 9, None)
    assert parse_content_range("bytes=0-9") is None
    assert normalize_etag('W/"x-3"') == normalize_etag("x-3") == "x-3"


@pytest.mark.parametrize(
    ("code", "changed"),
    [
        ("PreconditionFailed", True),
        ("NoSuchKey", True),
        ("InvalidRange", True),
        ("AccessDenied", False),
        ("SlowDown", False),
    ],
)
def test_which_get_errors_mean_the_source_changed(code: str, changed: bool) -> None:
    assert (changed_reason(code) is not None) is changed
