"""Is this GET answer the bytes the plan asked for? Pure checks, no I/O.

The reader pins every ranged GET with If-Match, but a server that ignores
If-Match (s3rver does; docs/s3-compatibility.md) would hand back a newer
version's bytes, and the archive would hold an entry that matches neither
version. So the answer itself is checked as well: its ETag must be the
planned one and its Content-Range exactly the range asked for, out of the
planned size. Any difference fails the job as SourceChangedError, whatever
the server did with If-Match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .models import PlannedEntry, RangeNotHonouredError, SourceChangedError

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

# Error codes of a GET that mean "the planned object is no longer there as planned".
_CHANGED_CODES = {
    "PreconditionFailed": "its ETag no longer matches the plan",
    "412": "its ETag no longer matches the plan",
    "NoSuchKey": "it was deleted",
    "404": "it was deleted",
    "InvalidRange": "it is now shorter than planned",
    "416": "it is now shorter than planned",
}


def normalize_etag(etag: str) -> str:
    """Compare ETags without their quotes (and a weak ``W/`` marker).

    AWS quotes ETags in HEAD, GET and listings alike; some S3-compatible
    servers leave the quotes off in one of them, which is no change of object.
    """
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def parse_content_range(value: str) -> tuple[int, int, int | None] | None:
    """``bytes first-last/total`` -> (first, last, total or None for ``*``)."""
    match = _CONTENT_RANGE.match(value.strip())
    if match is None:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


def changed_reason(error_code: str) -> str | None:
    """Why a GET error means the source changed, or None when it means something else."""
    return _CHANGED_CODES.get(error_code)


def check_get_response(entry: PlannedEntry, first: int, last: int, resp: Mapping[str, Any]) -> None:
    """Raise unless ``resp`` (a GetObject answer) holds bytes ``first..last`` of the planned object.

    ``first``/``last`` are inclusive, as in the Range header that was sent.
    """
    src = entry.source
    etag = resp.get("ETag")
    if etag is None or normalize_etag(str(etag)) != normalize_etag(entry.etag):
        raise SourceChangedError(
            src.bucket, src.key, f"ETag {etag!s} at read, {entry.etag} at plan"
        )
    content_range = resp.get("ContentRange")
    if content_range is None:
        if first != 0 or last != entry.size - 1:
            raise RangeNotHonouredError(
                f"s3://{src.bucket}/{src.key}: the server answered bytes={first}-{last} "
                "without a Content-Range (it ignores Range); this server cannot be used"
            )
    else:
        parsed = parse_content_range(str(content_range))
        if parsed is None or parsed != (first, last, entry.size):
            raise SourceChangedError(
                src.bucket,
                src.key,
                f"Content-Range {content_range!s} for bytes {first}-{last} of {entry.size}",
            )
    length = resp.get("ContentLength")
    if length is not None and int(length) != last - first + 1:
        raise SourceChangedError(
            src.bucket, src.key, f"{length} bytes sent for bytes {first}-{last} of {entry.size}"
        )
