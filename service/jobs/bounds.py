"""Size bounds that keep every job record under DynamoDB's 400 KB item limit.

DynamoDB rejects a whole write whose resulting item is over 400 KB
(attribute names and values counted). A job record holds up to
``manifest.INLINE_KEYS_LIMIT`` (256 KB) of requested keys; what a finished
job reports on top of that (missing or skipped keys, error messages) is
capped here in bytes, not in count: 1,000 keys of 1 KB would be 1 MB. What
does not fit is counted, so the client still knows how many there were.
See docs/lifecycle.md ("Records bounded in bytes").
"""

from __future__ import annotations

from collections.abc import Iterable

# Budget for one reported key list (a READY job's skipped keys or a FAILED
# job's missing keys; never both). 256 KB inline keys + 64 KB + the rest of
# the record (< 8 KB) stays well under 400 KB.
REPORTED_KEYS_BYTES = 64 * 1024
# DynamoDB counts a list element's value plus a little overhead per element.
_ELEMENT_OVERHEAD = 3
# An error message (often the text of an AWS exception) is cut at this size.
MESSAGE_BYTES = 2048


def cap_keys(keys: Iterable[str], limit: int = REPORTED_KEYS_BYTES) -> tuple[tuple[str, ...], int]:
    """The leading keys that fit in ``limit`` bytes, and how many were left out."""
    kept: list[str] = []
    used = 0
    omitted = 0
    for key in keys:
        size = len(key.encode("utf-8")) + _ELEMENT_OVERHEAD
        if omitted or used + size > limit:
            omitted += 1
            continue
        kept.append(key)
        used += size
    return tuple(kept), omitted


def cap_message(message: str, limit: int = MESSAGE_BYTES) -> str:
    """``message`` cut to at most ``limit`` UTF-8 bytes, marked when cut."""
    raw = message.encode("utf-8")
    if len(raw) <= limit:
        return message
    marker = " [...]"
    return raw[: limit - len(marker)].decode("utf-8", "ignore") + marker
