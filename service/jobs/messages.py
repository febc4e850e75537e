"""Job queue messages and what a worker does with one: the vocabulary runner and fan-out share.

A message names a job (``{"jobId": ...}``) and, for one range of a
fanned-out job, the range (``{"jobId": ..., "range": k}``); the job record is
the single source of truth for everything else (docs/resume.md,
"Job-level fan-out").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    DELETE = "delete"  # done with this message (finished, duplicate, poison)
    RETRY = "retry"  # make it visible again after ``delay`` seconds
    LEAVE = "leave"  # another worker owns the job now; do not touch the message


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    reason: str
    delay: int = 0


@dataclass(frozen=True, slots=True)
class JobMessage:
    job_id: str
    message_id: str
    receive_count: int
    range: int | None = None  # a fanned-out job's range index


def job_message(job_id: str, k: int | None = None) -> str:
    """The SQS message body: the job id, and the range index for a range message."""
    doc: dict[str, object] = {"jobId": job_id}
    if k is not None:
        doc["range"] = k
    return json.dumps(doc)


def parse_message(body: str, message_id: str, receive_count: int) -> JobMessage | None:
    """The job id (and range) from a message body; None for a body no job can come from."""
    try:
        doc = json.loads(body)
        job_id = doc["jobId"]
        k = doc.get("range")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(job_id, str):
        return None
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 0):
        return None
    return JobMessage(job_id, message_id, receive_count, k)
